"""Image volumes (KEP-4639): a pod mounts an image's content at a path; kubelet pulls it as it
pulls a container's image and names it in the CRI Mount by the id PullImage returned. Preloaded
and pinned by the agent, such an image is there for the pod with no registry request, and
`suggest` lists it — on containerd 2.1+; the lines before have no image volumes."""

from __future__ import annotations

import uuid
from pathlib import Path

import grpc
import pytest

from agent._proto.runtime.v1 import api_pb2 as pb
from agent.core.lists import config as configs
from tests.harness.agent import NODE, image_status, once, pull, run_agent, write_config
from tests.harness.containerd import Containerd
from tests.harness.images import push_runnable, push_single
from tests.harness.pods import exec_sync, remove_pod, run_pod, sandbox_config, start_container
from tests.harness.registry import Registry


def test_an_image_volume_is_preloaded_pinned_and_mounted_without_a_pull(
    tmp_path: Path, registry: Registry, fresh_containerd: Containerd, repo: str
) -> None:
    node = fresh_containerd
    server = push_runnable(registry, f"{repo}-server", "1", ["/bin/busybox", "sleep", "600"])
    weights = push_single(registry, f"{repo}-weights", "8b", NODE, 64 << 10)
    config = write_config(tmp_path / "preload.yaml", registry, [weights.pinned()])
    assert once(node, config).code == 0
    pull(node, server.tagged)  # the container's own image, pulled as kubelet would
    preloaded = image_status(node, weights.tagged)
    assert preloaded is not None and preloaded.pinned is node.release.honours_pins, preloaded

    # As kubelet with pullPolicy IfNotPresent: ImageStatus finds the image, no pull; the mount
    # names it by its id.
    mount = pb.Mount(
        container_path="/weights", readonly=True, image=pb.ImageSpec(image=preloaded.id)
    )
    sandbox = sandbox_config(f"volume-{uuid.uuid4().hex[:6]}")
    pod = run_pod(node.endpoint, sandbox)  # its pause image comes from the registry too
    before = len(registry.requests())
    try:
        if not node.release.mounts_image_volumes:
            with pytest.raises(grpc.RpcError):
                start_container(node.endpoint, pod, sandbox, server.tagged, mounts=[mount])
            return
        container = start_container(node.endpoint, pod, sandbox, server.tagged, mounts=[mount])
        listed = exec_sync(node.endpoint, container, ["/bin/busybox", "find", "/weights"])
        out = tmp_path / "suggested.yaml"
        suggested = run_agent("suggest", "--cri-endpoint", node.endpoint, "--output-file", str(out))
    finally:
        remove_pod(node.endpoint, pod)

    assert listed.exit_code == 0, listed.stderr
    assert "/weights/prepull-test/" in listed.stdout.decode(), listed.stdout
    assert registry.requests()[before:] == [], "the volume's image was fetched again"
    assert suggested.code == 0, suggested
    entries = [entry.written for entry in configs.load(out).images]
    assert weights.pinned() in entries, entries
    assert f"{weights.pinned()}  # 1 image volume" in out.read_text()
