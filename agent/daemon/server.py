"""HTTP endpoints on aiohttp.web: /metrics, /healthz, /readyz, /status.

The port answers whoever reaches it (deploy/ ships a NetworkPolicy to narrow that), so no burst
of requests may cost the daemon its memory or its probes: concurrent requests for the same view
share one rendering (single flight) and get the same bytes, the heavy views (/status, /metrics)
serve at most MAX_HEAVY_REQUESTS at once and refuse the rest with 503 and Retry-After, and
/healthz asks the runtime at most once per HEALTH_MAX_AGE however many probes arrive."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from agent.core.reports.status import ImageReport, NodeReport
from agent.core.text import fit

T = TypeVar("T")
# /status and /metrics answers being written at once. Each holds its body until the client has
# read it: a thousand slow readers of a 1 MB /status must not mean a thousand copies.
MAX_HEAVY_REQUESTS = 16
# Seconds a health verdict is reused: kubelet probes every few seconds, a flood every moment.
HEALTH_MAX_AGE = 1.0
# Images /readyz names; /status lists them all.
MAX_READYZ_LINES = 20
HEAVY_PATHS = frozenset({"/status", "/metrics"})


class SingleFlight(Generic[T]):
    """One rendering at a time: callers that arrive while it runs share its result; a result
    younger than `max_age` seconds is served as it is (0: never reused once done)."""

    def __init__(
        self,
        render: Callable[[], Awaitable[T]],
        max_age: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._render = render
        self._max_age = max_age
        self._clock = clock
        self._running: asyncio.Future[T] | None = None
        self._done: tuple[float, T] | None = None

    async def get(self) -> T:
        if self._done is not None and self._clock() - self._done[0] < self._max_age:
            return self._done[1]
        if self._running is None:
            self._running = asyncio.ensure_future(self._once())
        # shield: one caller hanging up must not cancel the rendering the others wait for.
        return await asyncio.shield(self._running)

    async def _once(self) -> T:
        try:
            result = await self._render()
            self._done = (self._clock(), result)
            return result
        finally:
            self._running = None


def make_app(
    report: NodeReport,
    registry: CollectorRegistry,
    healthy: Callable[[], Awaitable[str | None]],
    shutting_down: Callable[[], bool],
) -> web.Application:
    """`healthy` returns None when healthy, else why not."""

    async def render_metrics() -> bytes:
        # Rendering thousands of series takes a while: off the loop that answers probes
        # (prometheus_client's collectors are thread-safe).
        return await asyncio.to_thread(generate_latest, registry)

    async def render_status() -> bytes:
        # The snapshot is taken on the loop (the report changes there); encoding is not.
        document = report.to_json()
        return await asyncio.to_thread(lambda: json.dumps(document).encode())

    metrics_view = SingleFlight(render_metrics)
    status_view = SingleFlight(render_status)
    health_view = SingleFlight(healthy, max_age=HEALTH_MAX_AGE)
    heavy = [0]

    @web.middleware
    async def bounded(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path not in HEAVY_PATHS:
            return await handler(request)
        if heavy[0] >= MAX_HEAVY_REQUESTS:
            return web.Response(
                status=503, text="busy: too many requests at once\n", headers={"Retry-After": "1"}
            )
        heavy[0] += 1
        try:
            response = await handler(request)
            # Written here, inside the bound: the body stays counted until it is sent.
            await response.prepare(request)
            await response.write_eof()
            return response
        finally:
            heavy[0] -= 1

    async def metrics(request: web.Request) -> web.Response:
        body = await metrics_view.get()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        problem = await health_view.get()
        if problem is not None:
            return web.Response(status=503, text=f"unhealthy: {problem}\n")
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        if shutting_down():
            return web.Response(status=503, text="shutting down\n")
        if report.passes == 0:
            return web.Response(status=503, text="not ready: first pass not finished\n")
        waiting = report.waiting_for
        if report.converging:
            # Still serving the list it completed before: a list change is not an outage.
            text = (
                f"ready: serving {report.served_digest}; converging to {report.list_digest}, "
                f"{len(waiting)} new image{'' if len(waiting) == 1 else 's'} to go\n"
            )
            return web.Response(text=text + _lines(waiting))
        if waiting:
            lines = _lines(waiting)
            return web.Response(status=503, text=f"not ready: {len(waiting)} missing\n{lines}")
        present = len(report.desired) - len(report.missing)
        text = f"ready: {present} image{'' if present == 1 else 's'} present\n"
        given_up = report.missing
        if given_up:
            # Reported, not waited for: a broken entry must not stall a DaemonSet rollout.
            text += f"{len(given_up)} failed permanently (not waited for):\n"
            text += _lines(given_up)
        return web.Response(text=text)

    async def status(request: web.Request) -> web.Response:
        return web.Response(body=await status_view.get(), content_type="application/json")

    app = web.Application(middlewares=[bounded])
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status)
    return app


def _lines(reports: list[ImageReport]) -> str:
    """One line per image, the first MAX_READYZ_LINES of them: a probe's answer stays small
    (/status has them all)."""
    text = "".join(_line(r) for r in reports[:MAX_READYZ_LINES])
    more = len(reports) - MAX_READYZ_LINES
    return text + (f"… and {more} more (see /status)\n" if more > 0 else "")


def _line(report: ImageReport) -> str:
    reason = f": {report.last_error}" if report.last_error else ""
    return fit(f"{report.image} ({report.state}{reason})") + "\n"
