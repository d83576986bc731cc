"""HTTP endpoints on aiohttp.web: /metrics, /healthz, /readyz, /status."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from agent.status import ImageReport, NodeReport


def make_app(
    report: NodeReport,
    registry: CollectorRegistry,
    healthy: Callable[[], Awaitable[str | None]],
    shutting_down: Callable[[], bool],
) -> web.Application:
    """`healthy` returns None when healthy, else why not."""

    async def metrics(request: web.Request) -> web.Response:
        # Rendering thousands of series takes a while: off the loop that answers probes
        # (prometheus_client's collectors are thread-safe).
        body = await asyncio.to_thread(generate_latest, registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        problem = await healthy()
        if problem is not None:
            return web.Response(status=503, text=f"unhealthy: {problem}\n")
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        if shutting_down():
            return web.Response(status=503, text="shutting down\n")
        if report.passes == 0:
            return web.Response(status=503, text="not ready: first pass not finished\n")
        waiting = report.waiting_for
        if waiting:
            lines = "".join(_line(r) for r in waiting)
            return web.Response(status=503, text=f"not ready: {len(waiting)} missing\n{lines}")
        present = len(report.desired) - len(report.missing)
        text = f"ready: {present} image{'' if present == 1 else 's'} present\n"
        given_up = report.missing
        if given_up:
            # Reported, not waited for: a broken entry must not stall a DaemonSet rollout.
            text += f"{len(given_up)} failed permanently (not waited for):\n"
            text += "".join(_line(r) for r in given_up)
        return web.Response(text=text)

    async def status(request: web.Request) -> web.Response:
        # The snapshot is taken on the loop (the report changes there); encoding is not.
        body = await asyncio.to_thread(json.dumps, report.to_json())
        return web.Response(text=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status)
    return app


def _line(report: ImageReport) -> str:
    reason = f": {report.last_error}" if report.last_error else ""
    return f"{report.image} ({report.state}{reason})\n"
