"""A fleet of two architectures: the node under test (amd64) and a real arm64 node — Debian's
arm64 containerd under qemu-aarch64-static. The agent itself runs as amd64 on both, as an agent
image under binfmt emulation would: the node's platform must come from containerd, not uname."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.agent import image_status, once, run_agent, write_config
from tests.harness.containerd import Containerd, release_of
from tests.harness.images import push_image
from tests.harness.procs import HarnessError
from tests.harness.registry import Registry

AMD64, ARM64 = "linux/amd64", "linux/arm64"


@pytest.fixture
def arm64_node(tmp_path: Path, registry: Registry, pause_image: str) -> Iterator[Containerd]:
    node = Containerd(tmp_path / "arm64", sandbox_image=pause_image, release=release_of("arm64"))
    node.trust_http_registry(registry.host)
    try:
        node.start()
    except HarnessError as exc:
        pytest.fail(f"cannot start the arm64 containerd under qemu: {exc}", pytrace=False)
    yield node
    node.stop()


def test_one_lock_gives_each_node_its_own_platforms_content_under_the_same_tag(
    tmp_path: Path, registry: Registry, containerd: Containerd, arm64_node: Containerd, repo: str
) -> None:
    image = push_image(registry, repo, "1.0", (AMD64, ARM64))
    listing = write_config(tmp_path / "preload.yaml", registry, [image.tagged])
    lock = tmp_path / "preload.lock.yaml"
    assert run_agent("lock", "--config", str(listing), "--output-file", str(lock)).code == 0

    for node in (containerd, arm64_node):
        result = once(node, lock)
        assert result.code == 0, result

    on_amd64 = image_status(containerd, image.tagged)
    on_arm64 = image_status(arm64_node, image.tagged)
    assert on_amd64 is not None and on_amd64.id == image.configs[AMD64]
    assert on_arm64 is not None and on_arm64.id == image.configs[ARM64]
    assert f"converged on {ARM64}" in result.stdout, result.stdout


def test_the_arm64_node_refuses_a_digest_pinned_to_the_amd64_manifest_before_pulling(
    tmp_path: Path, registry: Registry, arm64_node: Containerd, repo: str
) -> None:
    image = push_image(registry, repo, "1.0", (AMD64, ARM64))
    amd64_only = image.by_digest(image.manifests[AMD64])
    listing = write_config(tmp_path / "preload.yaml", registry, [amd64_only])

    result = once(arm64_node, listing)

    assert result.code == 0, result  # refused for this platform: ready by the daemon's rule
    line = result.line_for(amd64_only)
    assert "refused before pulling" in line and ARM64 in line, line
    assert arm64_node.ctr("images", "ls", "-q").split() == [], "nothing may have been pulled"
