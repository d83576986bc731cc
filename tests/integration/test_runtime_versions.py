"""What differs between containerd release lines, each checked on the line under test
(PREPULL_CONTAINERD: 1.6 bookworm, 1.7 trixie, 2 unstable), and the agent's answer to it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from google.protobuf import field_mask_pb2

from agent._proto.containerd.services.images.v1 import images_pb2, images_pb2_grpc
from agent.adapters.runtime import rpc
from agent.adapters.runtime.containerd import (
    NAMESPACE_HEADER,
    PINNED_LABEL,
    ContainerdImages,
    cri_platform,
)
from agent.core.images import platform as platforms
from tests.harness.agent import (
    image_status,
    once,
    once_with_hosts_dir,
    pull,
    with_cri,
    write_config,
)
from tests.harness.containerd import RUNNING, Containerd, crash_report
from tests.harness.images import push_image, push_single
from tests.harness.procs import free_port
from tests.harness.registry import Registry

NODE = str(platforms.detect())


def send_update_without_target(node: Containerd, name: str) -> None:
    """The request the agent sent before: labels and a mask, no target (containerd's own
    clients never send that)."""

    async def go() -> None:
        channel = rpc.open_channel(node.endpoint)
        try:
            key, value = PINNED_LABEL
            request = images_pb2.UpdateImageRequest(
                image=images_pb2.Image(name=name, labels={key: value}),
                update_mask=field_mask_pb2.FieldMask(paths=[f"labels.{key}"]),
            )
            stub = images_pb2_grpc.ImagesStub(channel)
            await stub.Update(request, metadata=((NAMESPACE_HEADER, "k8s.io"),), timeout=10)
        except Exception:  # a crashing server answers with a broken connection; that is the point
            pass
        finally:
            await channel.close()

    asyncio.run(go())


def wait_for_exit(node: Containerd, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while node.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    return not node.alive()


def test_the_old_pin_request_crashes_containerd_1_7_and_2(
    registry: Registry, fresh_containerd: Containerd, repo: str
) -> None:
    """The regression: only 1.6 survives an Update without target. The agent's own requests
    are checked by every other test: each fails if its containerd died."""
    image = push_single(registry, repo, "1", NODE)
    pull(fresh_containerd, image.tagged)

    send_update_without_target(fresh_containerd, image.tagged)

    if fresh_containerd.release.line == "1.6":
        assert not wait_for_exit(fresh_containerd, 2), "1.6.20 used to accept it"
        return
    assert wait_for_exit(fresh_containerd, 10), "containerd 1.7/2.x should panic on this request"
    RUNNING.discard(fresh_containerd)  # its death is this test's expectation
    report = crash_report(fresh_containerd.log)
    assert "panic:" in report and "imageFromProto" in report, report


def test_pinning_and_rebinding_send_whole_records_and_keep_containerd_running(
    tmp_path: Path, registry: Registry, fresh_containerd: Containerd, repo: str
) -> None:
    node = fresh_containerd
    first = push_single(registry, repo, "1", NODE)
    config = write_config(tmp_path / "a.yaml", registry, [first.pinned()])
    assert once(node, config).code == 0
    # The tag moves: the lock names new content, so the existing tag record is updated.
    second = push_single(registry, repo, "1", NODE)
    config = write_config(tmp_path / "b.yaml", registry, [second.pinned()])
    result = once(node, config)

    assert result.code == 0, result
    assert node.alive(), crash_report(node.log)
    seen = image_status(node, second.tagged)
    assert seen is not None and seen.id == second.configs[NODE]
    assert seen.pinned is node.release.honours_pins
    old = image_status(node, first.by_digest())
    assert old is not None and not old.pinned, "content the tag left must be free for image GC"


def test_a_tag_and_digest_pull_records_only_the_digest_and_a_bind_shows_at_once(
    registry: Registry, fresh_containerd: Containerd, repo: str
) -> None:
    """Same on every line: CRI drops the tag of `name:tag@digest` (so the agent binds it), and
    the bound tag is visible to CRI ImageStatus as soon as Images.Create returns."""
    node = fresh_containerd
    image = push_image(registry, repo, "1", (NODE, "linux/arm64"))
    pull(node, image.pinned())

    records = set(node.ctr("images", "ls", "-q").split())
    assert records == {image.by_digest(), image.configs[NODE]}, records
    assert image_status(node, image.tagged) is None

    async def bind_then_look(cri) -> object:
        channel = rpc.open_channel(node.endpoint)
        try:
            await ContainerdImages(channel, node.endpoint).bind_tag(image.tagged, image.by_digest())
        finally:
            await channel.close()
        return await cri.image_status(image.tagged)

    seen = with_cri(node, bind_then_look)
    assert seen is not None and seen.id == image.configs[NODE]  # type: ignore[attr-defined]


def test_containerd_reports_the_platform_it_pulls_for(containerd: Containerd) -> None:
    async def ask() -> platforms.Platform | None:
        channel = rpc.open_channel(containerd.endpoint)
        try:
            return await cri_platform(channel)
        finally:
            await channel.close()

    assert str(asyncio.run(ask())) == NODE


def test_containerd_and_the_agent_agree_on_a_hosts_toml_mirror(
    tmp_path: Path, registry: Registry, fresh_containerd: Containerd, repo: str
) -> None:
    """spegel-org/spegel#1272 reports 2.x CRI pulls ignoring hosts.toml mirrors. Here the
    upstream does not exist and only the mirror has the image: the agent resolves through the
    mirror, and containerd's pull succeeds only if it honours the mirror too."""
    node = fresh_containerd
    upstream = f"127.0.0.1:{free_port()}"  # nothing listens there
    image = push_single(registry, repo, "1", NODE)
    folder = node.certs_d / upstream
    folder.mkdir(parents=True)
    (folder / "hosts.toml").write_text(
        f'server = "http://{upstream}"\n\n'
        f'[host."http://{registry.host}"]\n'
        '  capabilities = ["pull", "resolve"]\n'
    )
    name = f"{upstream}/{repo}:1"
    config = tmp_path / "preload.yaml"
    config.write_text(f"images:\n  - {name}\n")

    result = once_with_hosts_dir(node, config)

    assert result.code == 0, result
    seen = image_status(node, name)
    assert seen is not None and seen.id == image.configs[NODE]
    assert unpacked_into(node, "overlayfs"), "the fixtures' nodes unpack with overlayfs"


def test_parallel_preloads_leave_containerd_running(
    tmp_path: Path, registry: Registry, pause_image: str, repo: str
) -> None:
    """Registry headers configured, as some node images do: the setup in which containerd
    before 1.6.22/1.7.3 shares one headers map between pulls (containerd#8742). The agent pulls
    one at a time there, says so once, and keeps its concurrency on fixed releases."""
    node = Containerd(tmp_path / "node", sandbox_image=pause_image, registry_headers=True)
    node.trust_http_registry(registry.host)
    node.start()
    try:
        images = [push_single(registry, f"{repo}/{i}", "1", NODE).pinned() for i in range(24)]
        config = write_config(tmp_path / "many.yaml", registry, images, "concurrency: 8\n")
        for _ in range(2):
            result = once(node, config)
            assert result.code == 0, result
            assert node.alive(), crash_report(node.log)
            node.ctr("images", "rm", *node.ctr("images", "ls", "-q").split())
    finally:
        node.stop()
    serialized = "pulls run one at a time" in result.stderr
    assert serialized is node.release.races_on_parallel_pulls, result.stderr


def test_a_node_on_the_native_snapshotter_preloads_too(
    tmp_path: Path, registry: Registry, pause_image: str, repo: str
) -> None:
    """Real nodes use overlayfs (every other test); some use native. 2.x needs the transfer
    service told which snapshotter unpacks (tests/harness/containerd.py, UNPACK)."""
    node = Containerd(tmp_path / "node", sandbox_image=pause_image, snapshotter="native")
    node.trust_http_registry(registry.host)
    node.start()
    try:
        image = push_image(registry, repo, "1", (NODE, "linux/arm64"))
        config = write_config(tmp_path / "preload.yaml", registry, [image.pinned()])
        result = once(node, config)
        assert result.code == 0, result
        seen = image_status(node, image.tagged)
        assert seen is not None and seen.id == image.configs[NODE]
        assert unpacked_into(node, "native"), "the layers should be unpacked by native"
        assert not unpacked_into(node, "overlayfs")
    finally:
        node.stop()


def unpacked_into(node: Containerd, snapshotter: str) -> list[str]:
    listing = node.ctr("snapshots", "--snapshotter", snapshotter, "ls")
    return listing.splitlines()[1:]  # below the header line
