"""`make bench`: every performance target of the project, measured as ratios in one run against
a local registry and containerd (PREPULL_CONTAINERD picks the line; overlayfs like real nodes).

Each section prints one row per target: what the figure includes, the baseline it is measured
against, the agent's figure, the ratio, the target and whether it was met. The bench exits 1
when any target that applies on this machine was missed. `python -m bench cold warm` runs only
the sections named; BENCH_SOAK_SECONDS shortens the daemon soak (default 10 minutes).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from agent.adapters.runtime.containerd import PIN_CONCURRENCY
from agent.core.images import platform as platforms
from bench import cold, daemon, fleet, lock, pods, pullpath, startup, warm
from bench.passes import agent_pass, listing
from bench.report import Row, header
from bench.synthetic import import_images
from tests.harness.containerd import Containerd
from tests.harness.registry import Registry

SECTIONS = ("lock", "startup", "warm", "cold", "pullpath", "daemon", "pods", "fleet")


def _startup(workdir: Path) -> list[Row]:
    node = Containerd(workdir / "startup-node")
    node.start()
    try:
        images = import_images(node, 1000, platforms.detect(), workdir)
        asyncio.run(agent_pass(node.endpoint, listing([i.pinned for i in images])))
        return startup.run(node.endpoint, workdir, images[0].pinned, images)
    finally:
        node.stop()


def main(argv: list[str]) -> int:
    chosen = argv or list(SECTIONS)
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        print(f"unknown section(s) {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
        return 2
    line = os.environ.get("PREPULL_CONTAINERD", "1.6")
    node_platform = platforms.detect()
    workdir = Path(tempfile.mkdtemp(prefix="prepull-bench-"))
    registry = Registry(workdir / "registry").start()
    sections: dict[str, tuple[str, Callable[[], list[Row]]]] = {
        "lock": ("lock: tags to digests", lambda: lock.run(registry, str(node_platform))),
        "startup": ("start-up: whole processes", lambda: _startup(workdir)),
        "warm": (
            "warm pass and takeover (in process, after start-up)",
            lambda: warm.run(workdir, node_platform, PIN_CONCURRENCY),
        ),
        "cold": (
            f"cold preload, median of {cold.RUNS}, concurrency {cold.CONCURRENCY}",
            lambda: cold.run(registry, workdir, str(node_platform)),
        ),
        "pullpath": (
            f"containerd's pull settings, median of {pullpath.RUNS}",
            lambda: pullpath.run(registry, workdir, str(node_platform)),
        ),
        "daemon": ("the daemon over a soak", lambda: daemon.run(workdir, node_platform)),
        "pods": (f"pod start, median of {pods.RUNS}", lambda: pods.run(registry, workdir)),
        "fleet": ("fleet rollout, simulated (no network)", fleet.run),
    }
    print(f"prepull-agent bench: containerd {line} (overlayfs), {os.cpu_count()} cores")
    rows: list[Row] = []
    try:
        for name in chosen:
            title, work = sections[name]
            header(title)
            started = time.monotonic()
            section_rows = work()
            for row in section_rows:
                print(row.render(), flush=True)
            print(f"  ({time.monotonic() - started:.0f}s)")
            rows += section_rows
    finally:
        registry.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    missed = [r.target for r in rows if r.applies and not r.met]
    counted = sum(r.applies for r in rows)
    print(f"\n{counted - len(missed)} of {counted} targets met" + (":" if missed else ""))
    for target in missed:
        print(f"  MISSED: {target}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
