"""The daemon over a soak: 1000 present, pinned images, a pass every second, its CPU per pass,
its resident memory over time (and the slope), and what a /metrics scrape costs."""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from agent.core.images.platform import Platform
from bench.passes import agent_pass, listing
from bench.report import Row
from bench.synthetic import import_images
from tests.harness.containerd import Containerd
from tests.harness.daemon import DaemonProc

IMAGES = 1000
SOAK_SECONDS = float(os.environ.get("BENCH_SOAK_SECONDS", "600"))
SAMPLE_EVERY = 5.0
CPU_PER_PASS_TARGET = 0.020
RSS_TARGET_MB = 60.0
RSS_SLOPE_TARGET = 1.0
"""MB per 10 minutes: "flat"."""
PASSES = "prepull_reconcile_duration_seconds_count"
TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _slope_per_10min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB), in MB per 10 minutes."""
    xs, ys = [s[0] for s in samples], [s[1] for s in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    spread = sum((x - mx) ** 2 for x in xs)
    return 600 * sum((x - mx) * (y - my) for x, y in samples) / spread if spread else 0.0


def _import_floor_mb() -> float:
    """Resident memory of a process that only imports what the daemon imports."""
    code = (
        "import agent.daemon.app, agent.wiring, pathlib; "
        "print(pathlib.Path('/proc/self/status').read_text().split('VmRSS:')[1].split()[0])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout) / 1024


def _one_image_peak_mb(config: Path, endpoint: str, reference: str) -> float:
    """Peak resident memory of the daemon serving the same node with a one-image list: what
    serving costs before the list's size does (the node still lists every image each pass)."""
    single = config.with_name("daemon-one.yaml")
    single.write_text(listing([reference], extra="resync: 1s\n"))
    daemon = DaemonProc(single, endpoint, "--watch-interval", "2")
    try:
        daemon.wait_for(lambda: daemon.get("/readyz")[0] == 200, 120, "the daemon to be ready")
        peak = 0.0
        for _ in range(6):
            time.sleep(SAMPLE_EVERY)
            peak = max(peak, _rss_mb(daemon.proc.pid))
        return peak
    finally:
        daemon.terminate()


def run(workdir: Path, platform: Platform) -> list[Row]:
    node = Containerd(workdir / "daemon-node")
    node.start()
    daemon = None
    try:
        images = import_images(node, IMAGES, platform, workdir)
        text = listing([image.pinned for image in images], extra="resync: 1s\n")
        asyncio.run(agent_pass(node.endpoint, text))  # take the node over: label everything
        config = workdir / "daemon.yaml"
        config.write_text(text)
        # The default watch interval, as operators run it (the test harness polls faster).
        daemon = proc = DaemonProc(config, node.endpoint, "--watch-interval", "2")
        proc.wait_for(lambda: proc.get("/readyz")[0] == 200, 120, "the daemon to be ready")
        pid = daemon.proc.pid
        time.sleep(SAMPLE_EVERY)  # the first passes warm caches up
        passes0, cpu0, started = daemon.metric(PASSES) or 0, _cpu_seconds(pid), time.monotonic()
        samples = []
        while (elapsed := time.monotonic() - started) < SOAK_SECONDS:
            samples.append((elapsed, _rss_mb(pid)))
            if os.environ.get("BENCH_VERBOSE"):
                print(f"    {elapsed:6.0f}s  rss {samples[-1][1]:.1f} MB", flush=True)
            time.sleep(SAMPLE_EVERY)
        cpu = _cpu_seconds(pid) - cpu0
        passes = (daemon.metric(PASSES) or 0) - passes0
        scrapes = []
        size = 0
        for _ in range(20):
            begun = time.perf_counter()
            status, body = daemon.get("/metrics")
            scrapes.append(time.perf_counter() - begun)
            size = len(body.encode())
            assert status == 200
        daemon.terminate()
        daemon = None
        one_image = _one_image_peak_mb(config, node.endpoint, images[0].pinned)
    finally:
        if daemon is not None:
            daemon.terminate()
        node.stop()
        shutil.rmtree(workdir / "daemon-node", ignore_errors=True)
    peak = max(rss for _, rss in samples)
    # "Flat" is judged after warm-up (the allocator settles in the first minutes): the second
    # half of the soak. The whole soak's slope is reported beside it.
    settled = [(t, rss) for t, rss in samples if t >= SOAK_SECONDS / 2]
    slope = _slope_per_10min(settled)
    floor = _import_floor_mb()
    soak = f"{SOAK_SECONDS / 60:g} min soak, {IMAGES} images, resync 1s"
    return [
        Row(
            f"daemon CPU per pass ({soak})",
            "",
            None,
            cpu / max(passes, 1),
            "s",
            CPU_PER_PASS_TARGET,
            note=f"{passes:.0f} passes, {cpu:.1f}s CPU (scrapes of /metrics excluded)",
        ),
        Row(
            "daemon resident memory, peak over the soak",
            "",
            None,
            peak,
            "MB",
            RSS_TARGET_MB,
            note=f"first {samples[0][1]:.1f} MB, last {samples[-1][1]:.1f} MB; floors: a bare "
            f"import of the agent's modules and dependencies {floor:.1f} MB, the daemon with a "
            f"one-image list on the same node {one_image:.1f} MB (so {IMAGES} images take "
            f"{peak - one_image:.1f} MB)",
        ),
        Row(
            "daemon resident memory slope (MB per 10 min)",
            "",
            None,
            max(slope, 0.0),
            "MB",
            RSS_SLOPE_TARGET,
            note=f"least-squares, second half ({len(settled)} samples): {slope:+.2f}; whole "
            f"soak: {_slope_per_10min(samples):+.2f} MB per 10 min",
        ),
        Row(
            f"/metrics scrape at {IMAGES} images",
            "",
            None,
            statistics.median(scrapes),
            "s",
            0.1,
            applies=False,
            note=f"reported, no target: {size / 1024:.0f} kB per scrape, median of 20",
        ),
    ]
