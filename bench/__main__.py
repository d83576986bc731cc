"""Ratios that matter to an operator, measured in one run against a local registry and containerd.

- lock: resolving many tags with bounded concurrency over keep-alive vs one at a time.
- once: a converged node (one ListImages, no registry request for pinned entries) vs a cold one.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

from agent import config as configs
from agent import platform as platforms
from agent import wiring
from agent.lock import DEFAULT_CONCURRENCY, resolve_tags
from tests.harness.containerd import Containerd
from tests.harness.images import push_single
from tests.harness.registry import Registry
from tests.harness.slowproxy import SlowProxy

LOCK_TAGS = 200
# Loopback answers in microseconds; real registries are a round trip away. The lock bench goes
# through a proxy that delays every response by this much, like a registry in another region.
REGISTRY_RTT = 0.020
ONCE_IMAGES = 12
# Targets: what we promise operators, checked as ratios so the machine's speed cancels out.
LOCK_SPEEDUP_TARGET = 4.0
WARM_SPEEDUP_TARGET = 5.0


async def bench_lock(registry: Registry) -> tuple[float, float, int]:
    proxy = SlowProxy(registry.port, REGISTRY_RTT).start()
    text = "images:\n" + "".join(f"  - {proxy.host}/bench/lock{i}:1\n" for i in range(LOCK_TAGS))
    text += f"registries:\n  {proxy.host}:\n    insecure: true\n"
    config = configs.parse(text, "bench.yaml")
    timings = []
    requests = 0
    try:
        for concurrency in (1, DEFAULT_CONCURRENCY):
            async with wiring.registry_client(config.registry, None) as client:
                started = time.perf_counter()
                results = await resolve_tags(client, config.images, concurrency)
                timings.append(time.perf_counter() - started)
                assert all(isinstance(r, str) for r in results.values()), "a tag did not resolve"
                requests = client.requests
    finally:
        proxy.stop()
    return timings[0], timings[1], requests


async def converge_once(node: Containerd, config: configs.PreloadConfig) -> tuple[float, int]:
    async with (
        wiring.runtime(node.endpoint) as runtime,
        wiring.registry_client(config.registry, None) as registry,
    ):
        await runtime.meet()
        reconciler = runtime.reconciler(registry, await runtime.node(), lambda ref: ())
        started = time.perf_counter()
        outcomes = await reconciler.converge(config)
        elapsed = time.perf_counter() - started
    assert all(o.converged for o in outcomes), [o.detail for o in outcomes if not o.converged]
    return elapsed, registry.requests


def main() -> int:
    node_platform = str(platforms.detect())
    workdir = Path(tempfile.mkdtemp(prefix="prepull-bench-"))
    registry = Registry(workdir / "registry").start()
    node = Containerd(workdir / "node")
    try:
        for i in range(LOCK_TAGS):
            push_single(registry, f"bench/lock{i}", "1", node_platform, layer_bytes=64)
        sequential, concurrent, requests = asyncio.run(bench_lock(registry))
        lock_ratio = sequential / concurrent
        print(
            f"lock {LOCK_TAGS} tags via a registry {REGISTRY_RTT * 1000:.0f} ms away: "
            f"one at a time {sequential:.2f}s, "
            f"{DEFAULT_CONCURRENCY} at a time {concurrent:.2f}s -> {lock_ratio:.1f}x faster "
            f"({requests / LOCK_TAGS:.1f} requests per tag; target >= {LOCK_SPEEDUP_TARGET}x)"
        )

        node.trust_http_registry(registry.host)
        node.start()
        pinned = [
            push_single(
                registry, f"bench/once{i}", "1", node_platform, layer_bytes=1 << 20
            ).pinned()
            for i in range(ONCE_IMAGES)
        ]
        text = "images:\n" + "".join(f"  - {p}\n" for p in pinned)
        text += f"registries:\n  {registry.host}:\n    insecure: true\n"
        config = configs.parse(text, "bench.yaml")
        cold, _ = asyncio.run(converge_once(node, config))
        warm, warm_requests = asyncio.run(converge_once(node, config))
        warm_ratio = cold / warm
        print(
            f"once {ONCE_IMAGES} pinned 1 MiB images: cold {cold:.2f}s, converged {warm:.3f}s "
            f"-> {warm_ratio:.0f}x cheaper, {warm_requests} registry requests when converged "
            f"(target >= {WARM_SPEEDUP_TARGET}x and 0 requests)"
        )
        met = lock_ratio >= LOCK_SPEEDUP_TARGET and warm_ratio >= WARM_SPEEDUP_TARGET
        met = met and warm_requests == 0
        print("targets met" if met else "TARGETS MISSED")
        return 0 if met else 1
    finally:
        node.stop()
        registry.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
