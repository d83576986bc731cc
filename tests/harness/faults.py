"""An HTTP proxy on loopback in front of the real registry that injects registry faults:
429 with Retry-After for the first requests, and rate-limit headers on the rest."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from tests.harness.loopthread import LoopThread


class RateLimitingProxy:
    def __init__(self, upstream: str, refuse_first: int, remaining: int) -> None:
        self.upstream = upstream
        self.refuse_first = refuse_first
        self.remaining = remaining
        self.answers: list[int] = []
        self.port = 0
        self._thread: LoopThread | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _forward(self, request: web.Request) -> web.Response:
        if len(self.answers) < self.refuse_first:
            self.answers.append(429)
            return web.Response(
                status=429,
                headers={"Retry-After": "1", "RateLimit-Remaining": "0;w=60"},
                text='{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}',
            )
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=await request.read(),
            allow_redirects=False,
        ) as upstream:
            body = await upstream.read()
            self.answers.append(upstream.status)
            passed = {
                k: v
                for k, v in upstream.headers.items()
                if k.lower() not in ("content-length", "transfer-encoding", "content-encoding")
            }
            passed["RateLimit-Remaining"] = f"{self.remaining};w=21600"
            return web.Response(status=upstream.status, headers=passed, body=body)

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _stop(self) -> None:
        assert self._runner is not None and self._session is not None
        await self._runner.cleanup()
        await self._session.close()

    def start(self) -> RateLimitingProxy:
        self._thread = LoopThread()
        self._thread.run(self._start())
        return self

    def stop(self) -> None:
        assert self._thread is not None
        self._thread.run(self._stop())
        self._thread.close()
