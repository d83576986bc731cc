"""The agent's own share of registry requests on a real containerd and registry: the documents
its platform check reads (manifests, a config) go into containerd's content store under a lease
before the pull, so a cold preload asks the registry for no more manifests than a plain pull of
the same content; the lease is gone afterwards and what the image uses survives containerd's
garbage collection."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.adapters.runtime.containerd import CRI_NAMESPACE
from bench.cold import raw_pulls
from tests.harness.agent import NODE, once, write_config
from tests.harness.containerd import Containerd
from tests.harness.images import PushedImage, push_image, push_single
from tests.harness.registry import Registry


@pytest.fixture
def counted(tmp_path: Path) -> Iterator[Registry]:
    registry = Registry(tmp_path / "counted", access_log=True).start()
    yield registry
    registry.stop()


def manifest_gets(registry: Registry, repo: str, since: int) -> int:
    return sum(
        1
        for method, path in registry.requests()[since:]
        if method == "GET" and path.startswith(f"/v2/{repo}/manifests/")
    )


def fresh_node(folder: Path, registry: Registry) -> Containerd:
    node = Containerd(folder)
    node.trust_http_registry(registry.host)
    return node.start()


@pytest.mark.parametrize("shape", ["single-platform", "index"])
def test_a_cold_preload_gets_no_more_manifests_than_a_plain_pull_and_leaves_no_lease(
    tmp_path: Path, counted: Registry, shape: str
) -> None:
    def push(repo: str) -> PushedImage:
        if shape == "index":
            return push_image(counted, repo, "1", (NODE, "linux/s390x"))
        return push_single(counted, repo, "1", NODE, 4096)

    plain, ours = push("seed/plain"), push("seed/ours")
    node = fresh_node(tmp_path / "plain", counted)
    try:
        since = len(counted.requests())
        asyncio.run(raw_pulls(node.endpoint, [plain.by_digest()], 1))
        plain_gets = manifest_gets(counted, plain.repo, since)
    finally:
        node.stop()

    node = fresh_node(tmp_path / "agent", counted)
    try:
        since = len(counted.requests())
        config = write_config(tmp_path / "preload.yaml", counted, [ours.pinned()])
        result = once(node, config)
        assert result.code == 0, result
        assert manifest_gets(counted, ours.repo, since) == plain_gets >= 1
        assert "prepull.io/purpose" not in node.ctr("leases", "ls")

        # Garbage collection (a synchronous delete of another image) keeps every blob the
        # preloaded image needs: the pull labelled what it found already in the store.
        other = push_single(counted, "seed/other", "1", NODE, 4096)
        node.ctr("images", "pull", "--plain-http", other.by_digest())
        node.ctr("images", "rm", "--sync", other.by_digest())
        checked = node.ctr("images", "check")
        line = next(row for row in checked.splitlines() if row.startswith(ours.by_digest()))
        assert "complete" in line and "incomplete" not in line, checked
    finally:
        node.stop()
    assert CRI_NAMESPACE == "k8s.io"  # where ctr looked (Containerd.ctr)
