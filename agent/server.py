"""HTTP endpoints on aiohttp.web: /metrics, /healthz, /readyz, /status."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from agent.status import NodeReport

DEFAULT_LISTEN = "0.0.0.0:9410"


def make_app(
    report: NodeReport,
    registry: CollectorRegistry,
    healthy: Callable[[], Awaitable[str | None]],
    shutting_down: Callable[[], bool],
) -> web.Application:
    """`healthy` returns None when healthy, else why not."""

    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(registry)
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
        missing = report.missing
        if missing:
            lines = "".join(
                f"{r.image} ({r.state}{': ' + r.last_error if r.last_error else ''})\n"
                for r in missing
            )
            return web.Response(status=503, text=f"not ready: {len(missing)} missing\n{lines}")
        count = len(report.desired)
        return web.Response(text=f"ready: {count} image{'' if count == 1 else 's'} present\n")

    async def status(request: web.Request) -> web.Response:
        return web.json_response(report.to_json())

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status)
    return app


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"--listen must be host:port, e.g. {DEFAULT_LISTEN}, not {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)
