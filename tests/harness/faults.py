"""HTTP proxies on loopback in front of the real registry that inject the faults a real
registry (or a man in the middle) produces: 429s, 5xx to containerd's own pulls, a registry that
never answers, endless bodies; and one that records what clients send (a sniffing mirror)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Self

import aiohttp
from aiohttp import web

from tests.harness.loopthread import LoopThread


class FaultProxy:
    """Forwards every request to `upstream` unless `fault` answers it; records what it saw."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.seen: list[tuple[str, str, Mapping[str, str]]] = []
        """(method, path, request headers) of every request, faulted or not."""
        self.answers: list[int] = []
        self.port = 0
        self._thread: LoopThread | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.closing: asyncio.Event

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    async def fault(self, request: web.Request) -> web.StreamResponse | None:
        """An answer instead of the upstream's, or None to forward."""
        return None

    def decorate(self, headers: dict[str, str]) -> None:
        """Change the upstream's headers on the way back."""

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.method, request.path, dict(request.headers)))
        faulted = await self.fault(request)
        if faulted is not None:
            self.answers.append(faulted.status)
            return faulted
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
            self.decorate(passed)
            return web.Response(status=upstream.status, headers=passed, body=body)

    async def _start(self) -> None:
        self.closing = asyncio.Event()
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
        self.closing.set()
        await self._runner.shutdown()
        await self._runner.cleanup()
        await self._session.close()

    def start(self) -> Self:
        self._thread = LoopThread()
        self._thread.run(self._start())
        return self

    def stop(self) -> None:
        assert self._thread is not None
        self._thread.run(self._stop())
        self._thread.close()


class RateLimitingProxy(FaultProxy):
    """429 with Retry-After for the first requests, and rate-limit headers on the rest."""

    def __init__(self, upstream: str, refuse_first: int, remaining: int) -> None:
        super().__init__(upstream)
        self.refuse_first = refuse_first
        self.remaining = remaining

    async def fault(self, request: web.Request) -> web.StreamResponse | None:
        if len(self.answers) < self.refuse_first:
            return web.Response(
                status=429,
                headers={"Retry-After": "1", "RateLimit-Remaining": "0;w=60"},
                text='{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}',
            )
        return None

    def decorate(self, headers: dict[str, str]) -> None:
        headers["RateLimit-Remaining"] = f"{self.remaining};w=21600"


class ContainerdServerErrors(FaultProxy):
    """500 to the first two `method` requests containerd itself makes for each path containing
    `where` (its User-Agent says containerd), as a flaky registry, CDN or load balancer answers; the
    agent's own requests pass. containerd retries a blob GET once by itself, so one 500 is
    absorbed there; a 500 to its manifest HEAD ends the pull, each containerd line wording it
    its own way (1.6: "failed with status code [manifests …]: 500")."""

    def __init__(self, upstream: str, where: str = "/blobs/", method: str = "GET") -> None:
        super().__init__(upstream)
        self.where = where
        self.method = method
        self._failed: dict[tuple[str, str], int] = {}

    async def fault(self, request: web.Request) -> web.StreamResponse | None:
        key = (request.method, request.path)
        from_containerd = request.headers.get("User-Agent", "").startswith("containerd")
        faulted = self.where in request.path and request.method == self.method
        if from_containerd and self._failed.get(key, 0) < 2 and faulted:
            self._failed[key] = self._failed.get(key, 0) + 1
            return web.Response(status=500, text="upstream hiccup")
        return None


class SilentRegistry(FaultProxy):
    """Accepts connections and reads requests, then never answers."""

    async def fault(self, request: web.Request) -> web.StreamResponse | None:
        await self.closing.wait()
        return web.Response(status=503)


class EndlessManifests(FaultProxy):
    """Answers manifest GETs with an endless body (no Content-Length), as a broken or hostile
    registry or a man in the middle on plain HTTP can."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.sent = 0

    async def fault(self, request: web.Request) -> web.StreamResponse | None:
        if request.method != "GET" or "/manifests/" not in request.path:
            return None
        response = web.StreamResponse(
            status=200, headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
        )
        await response.prepare(request)
        chunk = b" " * (1024 * 1024)
        try:
            while self.sent < 3 * 1024**3:  # 3 GB, as seen; the client hangs up long before
                await response.write(chunk)
                self.sent += len(chunk)
        except (ConnectionError, RuntimeError):
            pass
        return response


class HostileChallenges(FaultProxy):
    """A registry whose token challenge is hostile: it answers every /v2/ request with 401 and
    `challenge` (its `{self}` replaced by this proxy's URL), and its token service at /token
    answers `token_body`, or a redirect to itself."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.challenge = ""
        self.token_body = b'{"token": "ok"}'

    async def fault(self, request: web.Request) -> web.StreamResponse | None:
        if request.path == "/token-loop":
            return web.Response(status=302, headers={"Location": f"{self.url}/token-loop"})
        if request.path == "/token":
            return web.Response(body=self.token_body, content_type="application/json")
        header = self.challenge.replace("{self}", self.url)
        return web.Response(status=401, headers={"WWW-Authenticate": header})


HOSTILE_TEXT = (
    "denied\x1b]0;pwned\x07\x1b[2J\r\nNODE  READY  fake row\u202eevil\u2066"
    "\x1b]52;c;QUFBQQ==\x07\x1b]8;;http://evil.example/\x07link\x1b]8;;\x07\x9b31m\x7f"
)
"""What a hostile registry writes into its error message: a title change, a screen clear, a
carriage return and line feed with a fake table row, a bidi override and isolate, an OSC 52
clipboard write, an OSC 8 link, a C1 control sequence introducer and DEL."""
RAW_CONTROLS = ("\x1b", "\x07", "\r", "\u202e", "\u2066", "\x9b", "\x7f")


class HostileErrorText(FaultProxy):
    """Refuses every manifest request with a distribution error whose message is HOSTILE_TEXT."""

    async def fault(self, request: web.Request) -> web.StreamResponse | None:
        if "/manifests/" not in request.path:
            return None
        body = {"errors": [{"code": "DENIED", "message": HOSTILE_TEXT}]}
        return web.json_response(body, status=403)
