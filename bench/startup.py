"""Whole processes, as operators run them: `prepull-agent once` on a converged node vs a bare
`python -c "import grpc, aiohttp, yaml"` (the import floor of the libraries `once` needs: a CRI
client, a registry client, a YAML list), runs interleaved, medians. Byte-code caching on, as on
any installed system."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from bench.passes import listing
from bench.report import Row, whole_process
from bench.synthetic import Present

RUNS = 9
STARTUP_TARGET = 1.2
BIN = Path(sys.executable).parent
FLOOR = "import grpc, aiohttp, yaml"


def run(endpoint: str, workdir: Path, one: str, many: list[Present]) -> list[Row]:
    """`one`: a pinned reference present on the node; `many`: present pinned images."""
    small = workdir / "startup-one.yaml"
    small.write_text(listing([one]))
    large = workdir / "startup-many.yaml"
    large.write_text(listing([image.pinned for image in many]))
    agent = [str(BIN / "prepull-agent"), "once", "--cri-endpoint", endpoint, "--config"]
    bare = [sys.executable, "-c", FLOOR]
    whole_process([*agent, str(small)])  # byte-code written once, as after an install
    times: dict[str, list[float]] = {"bare": [], "one": [], "many": []}
    for _ in range(RUNS):
        times["bare"].append(whole_process(bare))
        times["one"].append(whole_process([*agent, str(small)]))
        times["many"].append(whole_process([*agent, str(large)]))
    bare_s, one_s, many_s = (statistics.median(times[k]) for k in ("bare", "one", "many"))
    return [
        Row(
            "`once` start-up: whole process, 1 image, converged",
            FLOOR,
            bare_s,
            one_s,
            "s",
            STARTUP_TARGET,
        ),
        Row(
            f"`once` whole process, {len(many)} images, converged",
            FLOOR,
            bare_s,
            many_s,
            "s",
            STARTUP_TARGET,
            applies=False,
            note="reported, no target of its own: start-up plus the warm pass above",
        ),
    ]
