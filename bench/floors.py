"""The physical floors of one pull on this node, for bench.pullpath: what fetching, inflating
and unpacking the same layers cost with nothing else in the way. Each is the median of RUNS, and
reported against raw PullImage (containerd's defaults, loopback) as a row that explains, not a
target: containerd does these steps, partly overlapped, and cannot beat their sum by much."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import statistics
import subprocess
import time
import zlib
from collections.abc import Callable
from functools import partial
from pathlib import Path

import aiohttp

from bench.report import Row
from tests.harness.registry import Registry

RUNS = 3
TOOLS = Path(__file__).resolve().parents[1] / ".cache" / "tools"
"""pigz (unpigz) and igzip, unpacked by `make deps` (never on the system PATH)."""


def rows(
    registry: Registry, repo: str, blobs: list[bytes], workdir: Path, pull: float
) -> list[Row]:
    folder = workdir / "floors"
    folder.mkdir(exist_ok=True)
    files = []
    for n, blob in enumerate(blobs):
        files.append(folder / f"layer{n}.tar.gz")
        files[-1].write_bytes(blob)
    digests = ["sha256:" + hashlib.sha256(blob).hexdigest() for blob in blobs]
    size = sum(len(blob) for blob in blobs)
    floors: list[tuple[str, Callable[[], None]]] = [
        (
            f"fetch: {len(blobs)} blobs in parallel over HTTP",
            lambda: asyncio.run(_fetch(registry, repo, digests, size)),
        ),
        ("inflate, one core: Python zlib", lambda: _zlib(blobs)),
        ("inflate, one core: gzip -dc", lambda: _tool(["gzip", "-dc"], files)),
    ]
    for tool in ("unpigz", "igzip"):
        binary = TOOLS / "usr" / "bin" / tool
        if binary.exists():
            floors.append(
                (f"inflate, one core: {tool} -dc", partial(_tool, [str(binary), "-dc"], files))
            )
    tars = []
    for file, blob in zip(files, blobs, strict=True):
        tars.append(file.with_suffix(""))
        tars[-1].write_bytes(zlib.decompressobj(wbits=31).decompress(blob))
    floors.append(("unpack: tar -x of the inflated layers", partial(_unpack, tars, folder)))
    found = []
    for label, work in floors:
        times = []
        for _ in range(RUNS):
            started = time.perf_counter()
            work()
            times.append(time.perf_counter() - started)
        found.append(
            Row(
                label,
                "raw PullImage, default",
                pull,
                statistics.median(times),
                "s",
                1.0,
                applies=False,
                note="a floor of the same pull, on loopback: reported, not a target",
            )
        )
    shutil.rmtree(folder, ignore_errors=True)
    return found


async def _fetch(registry: Registry, repo: str, digests: list[str], size: int) -> None:
    async with aiohttp.ClientSession() as session:

        async def one(digest: str) -> int:
            async with session.get(f"{registry.url}/v2/{repo}/blobs/{digest}") as response:
                response.raise_for_status()
                return len(await response.read())

        fetched = await asyncio.gather(*(one(d) for d in digests))
    assert sum(fetched) == size, "the registry sent other blobs"


def _zlib(blobs: list[bytes]) -> None:
    for blob in blobs:
        zlib.decompressobj(wbits=31).decompress(blob)


def _tool(command: list[str], files: list[Path]) -> None:
    env = {
        "LD_LIBRARY_PATH": str(TOOLS / "usr" / "lib" / "x86_64-linux-gnu"),
        "PATH": "/usr/bin:/bin",
    }
    for file in files:
        with file.open("rb") as source:
            subprocess.run(command, stdin=source, stdout=subprocess.DEVNULL, env=env, check=True)


def _unpack(tars: list[Path], folder: Path) -> None:
    target = folder / "rootfs"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    for tar in tars:
        subprocess.run(["tar", "-x", "-f", str(tar), "-C", str(target)], check=True)
