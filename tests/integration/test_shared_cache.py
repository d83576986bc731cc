"""A shared cache between a fleet and its registry, with an engine that exists (not ours):
docker-registry in pull-through proxy mode in front of an upstream docker-registry, and three
containerd "nodes" that reach the upstream through it by their hosts.toml — the way Spegel,
Dragonfly or a Harbor proxy cache are configured. The agent needs nothing of its own for it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.agent import NODE, image_status, once_with_hosts_dir, run_agent
from tests.harness.containerd import Containerd
from tests.harness.images import push_image
from tests.harness.registry import Registry


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Registry]:
    registry = Registry(tmp_path / "upstream", access_log=True).start()
    yield registry
    registry.stop()


@pytest.fixture
def cache(tmp_path: Path, upstream: Registry) -> Iterator[Registry]:
    registry = Registry(tmp_path / "cache", proxy_of=upstream.url, access_log=True).start()
    yield registry
    registry.stop()


def upstream_blobs(upstream: Registry) -> Counter[str]:
    return Counter(p for m, p in upstream.requests() if m == "GET" and "/blobs/" in p)


def through_cache(node: Containerd, upstream: Registry, cache: Registry) -> None:
    """containerd's hosts.toml for the upstream: ask the cache first (containerd docs/hosts.md)."""
    folder = node.certs_d / upstream.host
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hosts.toml").write_text(
        f'server = "http://{upstream.host}"\n\n'
        f'[host."http://{cache.host}"]\n'
        '  capabilities = ["pull", "resolve"]\n'
    )


def test_three_nodes_preload_through_a_pull_through_cache_and_upstream_serves_each_blob_once(
    tmp_path: Path, upstream: Registry, cache: Registry, pause_image: str
) -> None:
    images = [push_image(upstream, f"fleet/app{n}", "1", (NODE,), 1 << 20) for n in range(2)]
    nodes = []
    try:
        for n in range(3):
            node = Containerd(tmp_path / f"node{n}", sandbox_image=pause_image)
            through_cache(node, upstream, cache)
            node.start()
            nodes.append(node)
        preload = tmp_path / "preload.yaml"
        preload.write_text(
            "images:\n"
            + "".join(f"  - {image.tagged}\n" for image in images)
            + f"registries:\n  {upstream.host}:\n    insecure: true\n"
        )
        before_lock = len(upstream.requests())
        lock = tmp_path / "preload.lock.yaml"
        locked = run_agent(
            "lock",
            "--config",
            str(preload),
            "--output-file",
            str(lock),
            "--containerd-hosts-dir",
            str(nodes[0].certs_d),
        )
        assert locked.code == 0, locked
        # Tag resolution went through the cache (which asks upstream for the tag's digest).
        cache_heads = [p for m, p in cache.requests() if m == "HEAD" and "/manifests/1" in p]
        assert len(cache_heads) == len(images), cache.requests()
        assert len(upstream.requests()) > before_lock
        served_after: list[Counter[str]] = []
        for node in nodes:
            result = once_with_hosts_dir(node, lock)
            assert result.code == 0, result
            for image in images:
                assert image_status(node, image.tagged) is not None
            served_after.append(upstream_blobs(upstream))
    finally:
        for node in nodes:
            node.stop()

    first, *_, last = served_after
    assert last == first, "nodes 2 and 3 made the upstream serve blobs again"
    for image in images:
        for digest in (image.layers[NODE], image.configs[NODE]):
            path = f"/v2/{image.repo}/blobs/{digest}"
            # distribution 2.8's proxy streams a blob it lacks to its first client and fetches
            # it once more to store it; the first node's disk budget reads each layer's last
            # bytes (a Range GET) just before its pull, which may arrive while the proxy still
            # stores the blob and be streamed again: at most three upstream GETs per blob,
            # whatever the fleet's size.
            assert 1 <= last[path] <= 3, (path, last)
    # Every node's content came through the cache: it served the blobs three times each.
    # (containerd names the upstream to a mirror in a query: ?ns=<host>)
    cached = Counter(
        p.partition("?")[0] for m, p in cache.requests() if m == "GET" and "/blobs/" in p
    )
    # Each node asked twice per layer: the disk budget's Range GET of its last bytes, the pull.
    for image in images:
        assert cached[f"/v2/{image.repo}/blobs/{image.layers[NODE]}"] == 2 * len(nodes), cached
