"""A sustained flood of /status, /readyz and /metrics (the daemon's port answers without
authentication) leaves the daemon's memory flat: answers are shared and bounded, nothing is
kept per request. PREPULL_FLOOD_SECONDS lengthens the flood (8 s here; minutes by hand)."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import time
import tracemalloc

from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from agent.core.images.platform import Platform
from agent.core.lists.config import parse
from agent.core.ports import Outcome, Status
from agent.core.reports.status import NodeReport
from agent.daemon.metrics import Metrics, observe_images
from agent.daemon.server import make_app

FLOOD_SECONDS = float(os.environ.get("PREPULL_FLOOD_SECONDS", "8"))
CLIENTS = 32


async def test_a_status_flood_leaves_memory_flat() -> None:
    config = parse("images:\n" + "".join(f"  - r.io/team/app{i}:1\n" for i in range(1000)))
    report = NodeReport(Platform("linux", "amd64"))
    report.configure(config.images)
    report.record([Outcome(e, Status.FAILED, "x" * 200) for e in config.images], time.time())
    registry = CollectorRegistry()
    observe_images(Metrics(registry), report)

    async def healthy() -> str | None:
        return None

    app = make_app(report, registry, healthy, lambda: False)
    async with TestServer(app) as server:
        url = str(server.make_url(""))
        await flood(url, 1.0)  # warm: caches, pools
        gc.collect()
        tracemalloc.start()
        # The clients run in a process of their own: only the daemon's memory is measured.
        answered = await flood(url, FLOOD_SECONDS)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    assert answered.get("200", 0) > 100, answered
    assert set(answered) <= {"200", "503"}, answered  # 503: the bound on answers in flight
    assert grown < 4 * 1024 * 1024, f"grew {grown / 1e6:.1f} MB in the flood"


CLIENT = """
import asyncio, json, sys, time, aiohttp
async def main(url, seconds, clients):
    answered = {}
    async with aiohttp.ClientSession() as session:
        async def ask():
            deadline, i = time.monotonic() + seconds, 0
            while time.monotonic() < deadline:
                async with session.get(url + ("/status", "/readyz", "/metrics")[i % 3]) as r:
                    await r.read()
                    answered[str(r.status)] = answered.get(str(r.status), 0) + 1
                i += 1
        await asyncio.gather(*(ask() for _ in range(clients)))
    print(json.dumps(answered))
asyncio.run(main(sys.argv[1].rstrip("/"), float(sys.argv[2]), int(sys.argv[3])))
"""


async def flood(url: str, seconds: float) -> dict[str, int]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CLIENT,
        url,
        str(seconds),
        str(CLIENTS),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    assert process.returncode == 0
    answered: dict[str, int] = json.loads(out)
    return answered
