"""The list generators against a real node and registry: `suggest` from real CRI containers,
and the kubelet allowlist `lock` writes."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path

import yaml

from agent.core.doctor.kubelet import allowlist_problem
from agent.core.lists import config as configs
from tests.harness.agent import NODE, pull, run_agent, write_config
from tests.harness.containerd import Containerd
from tests.harness.images import push_image, push_runnable
from tests.harness.pods import remove_pod, run_pod, sandbox_config, start_container
from tests.harness.registry import Registry


def test_suggest_lists_what_runs_pinned_to_its_digest_most_used_first(
    tmp_path: Path, registry: Registry, containerd: Containerd, repo: str
) -> None:
    busy = push_runnable(registry, f"{repo}-busy", "1", ["/bin/busybox", "sleep", "600"])
    rare = push_runnable(registry, f"{repo}-rare", "2", ["/bin/busybox", "sleep", "600"])
    pods = []
    try:
        for image in (busy, busy, rare):
            pull(containerd, image.tagged)
            config = sandbox_config(f"suggest-{uuid.uuid4().hex[:6]}")
            pods.append(run_pod(containerd.endpoint, config))
            start_container(containerd.endpoint, pods[-1], config, image.tagged)
        out = tmp_path / "suggested.yaml"
        result = run_agent(
            "suggest", "--cri-endpoint", containerd.endpoint, "--output-file", str(out)
        )
    finally:
        for pod in pods:
            remove_pod(containerd.endpoint, pod)

    assert result.code == 0, result
    listed = [entry.written for entry in configs.load(out).images]
    mine = [written for written in listed if repo in written]
    assert mine == [busy.pinned(), rare.pinned()], listed
    assert f"{busy.pinned()}  # 2 containers" in out.read_text()


def test_lock_writes_the_kubelet_allowlist_of_the_locked_images(
    tmp_path: Path, registry: Registry, repo: str
) -> None:
    tagged = push_image(registry, repo, "1", (NODE,))
    config = write_config(tmp_path / "preload.yaml", registry, [tagged.tagged, "nginx:1.25.3"])
    lock, allowlist = tmp_path / "preload.lock.yaml", tmp_path / "kubelet-allowlist.yaml"
    # nginx is not in the test registry: lock it as already pinned so no Docker Hub is asked.
    config.write_text(config.read_text().replace("nginx:1.25.3", f"nginx:1.25.3@{tagged.digest}"))
    done = run_agent(
        "lock",
        "--config",
        str(config),
        "--output-file",
        str(lock),
        "--kubelet-allowlist",
        str(allowlist),
    )
    assert done.code == 0, done
    fragment = yaml.safe_load(allowlist.read_text())
    assert fragment["kind"] == "KubeletConfiguration"
    assert fragment["apiVersion"] == "kubelet.config.k8s.io/v1beta1"
    assert fragment["imagePullCredentialsVerificationPolicy"] == "NeverVerifyAllowlistedImages"
    # Names as kubelet validates them: normalized, no tag, no digest.
    assert fragment["preloadedImagesVerificationAllowlist"] == sorted(
        ["docker.io/library/nginx", tagged.name]
    )
    # The lock on stdout stays a lock: what is said of the allowlist goes to stderr.
    again = tmp_path / "again.yaml"
    printed = run_agent("lock", "--config", str(config), "--kubelet-allowlist", str(again))
    assert printed.code == 0 and "allowlisted" in printed.stderr, printed
    assert len(configs.parse(printed.stdout, "<stdout>").images) == 2
    # -o json writes it too.
    as_json = tmp_path / "json.yaml"
    document = run_agent(
        "lock", "--config", str(config), "-o", "json", "--kubelet-allowlist", str(as_json)
    )
    assert document.code == 0 and yaml.safe_load(as_json.read_text()) == fragment
    # Every entry as kubelet 1.36 accepts it (kubernetes PR #137629).
    assert [allowlist_problem(e) for e in fragment["preloadedImagesVerificationAllowlist"]] == [
        None,
        None,
    ]
    # An image the list has credentials for is private: left out, unless marked public.
    secret = {"auths": {"docker.io": {"auth": base64.b64encode(b"u:p").decode()}}}
    (tmp_path / "secret.json").write_text(json.dumps(secret))
    config.write_text(config.read_text() + "credentials:\n  - secret.json\n")
    private = tmp_path / "private.yaml"
    kept = run_agent("lock", "--config", str(config), "--kubelet-allowlist", str(private))
    assert kept.code == 0 and "left out 1 private images" in kept.stderr, kept
    assert yaml.safe_load(private.read_text())["preloadedImagesVerificationAllowlist"] == [
        tagged.name
    ]
    assert "# Left out, private" in private.read_text()
    marked = run_agent(
        "lock", "--config", str(config), "--kubelet-allowlist", str(private), "--public", "nginx"
    )
    assert marked.code == 0 and "left out" not in marked.stderr, marked
    assert yaml.safe_load(private.read_text()) == fragment
