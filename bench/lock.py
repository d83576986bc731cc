"""`lock` of many tags through a registry a round trip away (a proxy that delays every
response), vs bare HEAD requests at the same concurrency and all at once, and vs a loop of
`skopeo inspect` (Debian's skopeo), the tool people reach for to read a digest."""

from __future__ import annotations

import asyncio
import shutil
import statistics
import subprocess
import time

import aiohttp

from agent import wiring
from agent.core.images import manifest
from agent.core.lists import config as configs
from agent.preload import lock
from bench.passes import listing
from bench.report import Row
from tests.harness.images import push_single
from tests.harness.registry import Registry
from tests.harness.slowproxy import SlowProxy

TAGS = 200
# Loopback answers in microseconds; real registries are a round trip away.
RTT = 0.020
RUNS = 3
TARGET = 1.2
SKOPEO_TARGET = 0.1
"""lock / a skopeo loop: at most this (10x faster)."""


async def _lock(text: str, concurrency: int) -> float:
    config = configs.parse(text, "bench.yaml")
    async with wiring.registry_client(config.registry, None, concurrency=concurrency) as client:
        started = time.perf_counter()
        results = await lock.resolve_tags(client, config.images, concurrency)
        elapsed = time.perf_counter() - started
    assert all(isinstance(r, str) for r in results.values()), "a tag did not resolve"
    return elapsed


async def _bare_heads(urls: list[str], concurrency: int) -> float:
    """HEAD every manifest URL over one keep-alive session, `concurrency` at a time."""
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        slots = asyncio.Semaphore(concurrency)

        async def one(url: str) -> None:
            async with slots, session.head(url, headers={"Accept": manifest.ACCEPT}) as resp:
                assert resp.status == 200 and resp.headers["Docker-Content-Digest"]

        started = time.perf_counter()
        await asyncio.gather(*(one(u) for u in urls))
        return time.perf_counter() - started


def _skopeo_loop(references: list[str]) -> float:
    started = time.perf_counter()
    for reference in references:
        subprocess.run(
            [
                "skopeo",
                "inspect",
                "--tls-verify=false",
                "--no-tags",
                "--format",
                "{{.Digest}}",
                f"docker://{reference}",
            ],
            check=True,
            capture_output=True,
        )
    return time.perf_counter() - started


def run(registry: Registry, platform: str) -> list[Row]:
    for i in range(TAGS):
        push_single(registry, f"bench/lock{i}", "1", platform, layer_bytes=64)
    proxy = SlowProxy(registry.port, RTT).start()
    try:
        references = [f"{proxy.host}/bench/lock{i}:1" for i in range(TAGS)]
        text = listing(references, proxy.host)
        urls = [f"http://{proxy.host}/v2/bench/lock{i}/manifests/1" for i in range(TAGS)]
        default = lock.DEFAULT_CONCURRENCY
        times: dict[str, list[float]] = {k: [] for k in ("lock", "heads", "lock-all", "all")}
        for _ in range(RUNS):
            times["lock"].append(asyncio.run(_lock(text, default)))
            times["heads"].append(asyncio.run(_bare_heads(urls, default)))
            times["lock-all"].append(asyncio.run(_lock(text, TAGS)))
            times["all"].append(asyncio.run(_bare_heads(urls, TAGS)))
        median = {k: statistics.median(v) for k, v in times.items()}
        if not shutil.which("skopeo"):
            raise SystemExit("skopeo is missing: run `make deps` (it installs Debian's skopeo)")
        skopeo = _skopeo_loop(references)
    finally:
        proxy.stop()
    via = f"{TAGS} tags, registry {RTT * 1000:.0f} ms away"
    rows = [
        Row(
            f"lock {via}, {default} in flight (default)",
            f"{TAGS} bare HEADs x{default}",
            median["heads"],
            median["lock"],
            "s",
            TARGET,
        ),
        Row(
            f"lock --concurrency {TAGS}",
            f"{TAGS} bare HEADs at once",
            median["all"],
            median["lock-all"],
            "s",
            TARGET,
        ),
        Row(
            "lock (default) vs a `skopeo inspect` loop",
            f"skopeo x{TAGS}",
            skopeo,
            median["lock"],
            "s",
            SKOPEO_TARGET,
            note=f"the default lock vs {TAGS} bare HEADs at once: "
            f"{median['lock'] / median['all']:.2f}x (16 in flight is a politeness choice: "
            f"ceil({TAGS}/{default}) round trips instead of one)",
        ),
    ]
    return rows
