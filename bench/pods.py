"""Pod start, the number the project exists for: a real CRI pod (sandbox, create, start) whose
image the agent preloaded, vs kubelet's path on a node without it (sandbox, pull, create,
start), vs a start whose image the test pulled itself with a bare PullImage (the physical
limit: a preloaded start can only match it). Fresh containerd per run; the pause image is
present on every node beforehand, as on any real one."""

from __future__ import annotations

import asyncio
import shutil
import statistics
import time
from pathlib import Path

from agent import wiring
from bench.passes import agent_pass, listing
from bench.report import Row
from tests.harness.containerd import Containerd
from tests.harness.images import push_runnable
from tests.harness.pods import remove_all_pods, run_pod, sandbox_config, start_container
from tests.harness.registry import Registry

IMAGE_BYTES = 200 << 20
RUNS = 3
EQUAL_TARGET = 1.10
"""preloaded by the agent / pulled by the test: the same start, within noise."""


def _pull(endpoint: str, reference: str) -> None:
    async def pull() -> None:
        async with wiring.containerd(endpoint) as runtime:
            await runtime.cri._pull(reference, None)

    asyncio.run(pull())


def _start(endpoint: str, image: str, name: str, pull_first: bool) -> float:
    """Seconds from RunPodSandbox to a started container, kubelet's order."""
    config = sandbox_config(name)
    started = time.perf_counter()
    sandbox = run_pod(endpoint, config)
    if pull_first:
        _pull(endpoint, image)
    start_container(endpoint, sandbox, config, image)
    return time.perf_counter() - started


def run(registry: Registry, workdir: Path) -> list[Row]:
    pause = push_runnable(registry, "bench/pause", "1", ["/bin/busybox", "sleep", "86400"])
    app = push_runnable(
        registry, "bench/app", "1", ["/bin/busybox", "sleep", "600"], filler_bytes=IMAGE_BYTES
    )
    times: dict[str, list[float]] = {"agent": [], "kubelet": [], "pulled": []}
    for attempt in range(RUNS):
        for mode in times:
            node_dir = workdir / f"pods-{mode}-{attempt}"
            node = Containerd(node_dir, sandbox_image=pause.tagged)
            node.trust_http_registry(registry.host)
            node.start()
            try:
                _pull(node.endpoint, pause.tagged)
                if mode == "agent":
                    asyncio.run(agent_pass(node.endpoint, listing([app.pinned()], registry.host)))
                elif mode == "pulled":
                    _pull(node.endpoint, app.tagged)
                pod = f"bench-{mode}-{attempt}"
                times[mode].append(_start(node.endpoint, app.tagged, pod, mode == "kubelet"))
                remove_all_pods(node.endpoint)
            finally:
                node.stop()
                shutil.rmtree(node_dir, ignore_errors=True)
    agent, kubelet, pulled = (statistics.median(times[m]) for m in ("agent", "kubelet", "pulled"))
    return [
        Row(
            f"pod start, {IMAGE_BYTES >> 20} MiB image: preloaded vs kubelet's pull",
            "sandbox+pull+start",
            kubelet,
            agent,
            "s",
            1.0,
            applies=False,
            note=f"reported, no target: the kubelet path takes {kubelet / agent:.1f}x the "
            "preloaded start (registry on loopback; a real registry widens the gap)",
        ),
        Row(
            "pod start: preloaded by the agent vs by a bare pull",
            "bare-pulled start",
            pulled,
            agent,
            "s",
            EQUAL_TARGET,
        ),
    ]
