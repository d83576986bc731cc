"""containerd's own pull settings, default against the settings `prepull-agent doctor` may
advise, on loopback and through a link that caps each connection at 20 MB/s (as registries and
CDNs do). The image: 4 random layers of 64 MiB (256 MiB compressed). Each run pulls it once with
raw CRI PullImage on a fresh containerd; runs interleaved, medians. The candidates are the
advice table of core.doctor.pullpath for this line plus the alternatives it was chosen over, so
the bench shows both that the advice is the best of them and the ratio the doctor quotes.

In the same run, the physical floors of a pull of that image on this node, each against raw
PullImage with containerd's defaults on loopback: the blobs fetched in parallel over HTTP (the
fetch floor), inflated on one core (Python's zlib, gzip, unpigz and igzip from .cache/tools),
and unpacked (tar into a folder on the disk containerd's root is on)."""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
from collections.abc import Callable, Coroutine, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from agent.core.doctor import pullpath
from bench import floors
from bench.cold import raw_pulls
from bench.passes import agent_pass, listing
from bench.report import Row
from tests.harness.containerd import Containerd
from tests.harness.images import push_layered, random_layers
from tests.harness.link import CappedLink
from tests.harness.registry import Registry

LAYERS = 4
LAYER_BYTES = 64 << 20
CAP = 20_000_000
"""Bytes per second per connection."""
RUNS = 3
TARGETS = {"2": 0.5}
"""The advice through the capped link, against containerd's default: at most this. Before 2.1
CRI pulls take the old path, which has no chunked fetch: a layer's own fetch through the cap
(3.4 s) bounds it, so the target there is OLD_PATH_TARGET."""
OLD_PATH_TARGET = 0.75


def candidates(line: str) -> dict[str, Mapping[str, object]]:
    """What is tried on `line`: the default, the doctor's advice, the alternatives."""
    if line == "2":
        ranged = pullpath.TRANSFER_ADVICE
        return {
            "default": {},
            "advice": ranged.settings,
            "downloads only": pullpath.TRANSFER_ADVICE_WITHOUT_RANGE.settings,
            "16 MiB chunks only": {"concurrent_layer_fetch_buffer": 16 << 20},
        }
    return {"default": {}, "advice": pullpath.CRI_ADVICE.settings}


def configure(line: str, settings: Mapping[str, object]) -> Callable[[str], str]:
    """The harness config with `settings` in the table the advice names on `line`."""
    lines = "".join(f"  {key} = {value!r}\n" for key, value in settings.items())
    if line == "2":
        return lambda text: text + f'\n[plugins."io.containerd.transfer.v1.local"]\n{lines}'
    header = '[plugins."io.containerd.grpc.v1.cri"]\n'
    return lambda text: text.replace(header, header + lines, 1)


def run(registry: Registry, workdir: Path, node_platform: str) -> list[Row]:
    line = os.environ.get("PREPULL_CONTAINERD", "1.6")
    blobs = random_layers(LAYERS, LAYER_BYTES)
    image = push_layered(registry, "bench/pullpath", "1", node_platform, blobs)
    tried = candidates(line)
    links = {"capped": CappedLink(registry.host, CAP).start(), "loopback": None}
    times: dict[tuple[str, str], list[float]] = {(c, k): [] for c in tried for k in links}
    agent_times: list[float] = []
    try:
        for attempt in range(RUNS):
            for (name, link_name), spent in times.items():
                link = links[link_name]
                host = link.host if link is not None else registry.host
                edit = configure(line, tried[name])
                folder = workdir / f"pullpath-{name}-{link_name}-{attempt}".replace(" ", "-")
                reference = f"{host}/{image.repo}@{image.digest}"
                spent.append(
                    _on_fresh_node(
                        folder,
                        host,
                        edit,
                        partial(raw_pulls, references=[reference], concurrency=1),
                    )
                )
                if name == "advice" and link_name == "capped":
                    # The agent itself, on another fresh node with the advice.
                    text = listing([f"{host}/{image.repo}:1@{image.digest}"], host)
                    seconds = _on_fresh_node(
                        folder.with_name(folder.name + "-agent"),
                        host,
                        edit,
                        partial(_agent_seconds, text=text),
                    )
                    agent_times.append(seconds)
    finally:
        for link in links.values():
            if link is not None:
                link.stop()
    median = {key: statistics.median(spent) for key, spent in times.items()}
    rows = _rows(line, tried, median, statistics.median(agent_times))
    return rows + floors.rows(
        registry, image.repo, [blob for blob, _ in blobs], workdir, median[("default", "loopback")]
    )


def _on_fresh_node(
    folder: Path,
    registry_host: str,
    edit: Callable[[str], str],
    work: Callable[[str], Coroutine[Any, Any, float]],
) -> float:
    """`work` against a containerd started for it in `folder`, removed afterwards."""
    folder.mkdir(parents=True)
    node = Containerd(folder, edit_config=edit)
    node.trust_http_registry(registry_host)
    node.start()
    try:
        return asyncio.run(work(node.endpoint))
    finally:
        node.stop()
        shutil.rmtree(folder, ignore_errors=True)


async def _agent_seconds(endpoint: str, text: str) -> float:
    return (await agent_pass(endpoint, text)).seconds


def _rows(
    line: str,
    tried: Mapping[str, Mapping[str, object]],
    median: Mapping[tuple[str, str], float],
    agent: float,
) -> list[Row]:
    size = f"{LAYERS} x {LAYER_BYTES >> 20} MiB"
    quoted = pullpath.TRANSFER_ADVICE if line == "2" else pullpath.CRI_ADVICE
    rows = []
    for link_name, label in (
        ("capped", f"{CAP // 1_000_000} MB/s per connection"),
        ("loopback", "loopback"),
    ):
        default = median[("default", link_name)]
        for name, settings in tried.items():
            if name == "default":
                continue
            advice = name == "advice"
            quote = quoted.capped if link_name == "capped" else quoted.loopback
            rows.append(
                Row(
                    f"{size}, {label}: {name}",
                    "containerd default",
                    default,
                    median[(name, link_name)],
                    "s",
                    TARGETS.get(line, OLD_PATH_TARGET) if advice and link_name == "capped" else 1.0,
                    # On loopback the registry shares the node's cores: reported, not a target.
                    applies=advice and link_name == "capped",
                    note=f"containerd {line}: {_settings(settings)}"
                    + (f"; the doctor quotes {quote:.2f}x" if advice else ""),
                )
            )
    rows.append(
        Row(
            f"{size}, capped: the agent, with the advice",
            "raw PullImage, advice",
            median[("advice", "capped")],
            agent,
            "s",
            1.10,
            note="the agent's own pass (manifest check, pull, tag bind) on the advised node",
        )
    )
    return rows


def _settings(settings: Mapping[str, object]) -> str:
    return ", ".join(f"{key} = {value}" for key, value in settings.items())
