"""One HTTP client for the Kubernetes API: every request of every feature goes through
`ApiClient.send`, which bounds the answer, never follows a redirect (the credentials would
follow it) and maps what went wrong on the way in one place."""

from __future__ import annotations

import contextlib
import json
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from agent.adapters.http import BodyTooLarge, read_bounded, redirect_of
from agent.adapters.kube.errors import KubeApiError, about, refusal

MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"


@dataclass(frozen=True)
class Access:
    """What a request to the API server needs: where, over which TLS, with which headers
    (a function: an in-cluster token is read again at each request, as kubelet rotates it)."""

    server: str
    ssl: ssl.SSLContext | bool
    headers: Callable[[], dict[str, str]] = field(repr=False, default=dict)
    tls_server_name: str | None = None


class ApiClient:
    def __init__(self, session: aiohttp.ClientSession, access: Access) -> None:
        self._session = session
        self.access = access

    async def send(
        self,
        method: str,
        path: str,
        *,
        limit: int,
        within: float,
        body: object = None,
        content_type: str = "application/json",
        what: str | None = None,
    ) -> tuple[int, bytes]:
        """The status and the body (at most `limit` bytes) of one request, answered within
        `within` seconds; KubeApiError saying why there is none, about `what` (default: the
        method and path)."""
        what = f"{method} {path.split('?')[0]}" if what is None else what
        headers = {**self.access.headers(), "Accept": "application/json"}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        try:
            async with self._session.request(
                method,
                self.access.server + path,
                data=data,
                headers=headers,
                ssl=self.access.ssl,
                server_hostname=self.access.tls_server_name,
                timeout=aiohttp.ClientTimeout(total=within),
                allow_redirects=False,  # the credentials go to the API server and nowhere else
            ) as response:
                moved = redirect_of(response)
                if moved is not None:
                    raise KubeApiError(about(what, moved), response.status)
                return response.status, await read_bounded(response, limit)
        except BodyTooLarge as exc:
            raise KubeApiError(about(what, f"the answer is too large: {exc}")) from exc
        except TimeoutError as exc:
            raise KubeApiError(about(what, f"no answer in {within:g}s")) from exc
        except (aiohttp.ClientError, ValueError) as exc:
            # aiohttp's messages name the URL, never the request's headers (the credentials).
            said = f"the API server at {self.access.server}: {exc}"
            raise KubeApiError(about(what, said)) from exc

    async def lines(
        self, path: str, *, idle: float, line_limit: int, hints: dict[int, str]
    ) -> AsyncIterator[bytes]:
        """The lines of a streamed GET (a watch), each at most `line_limit` bytes, until the
        server ends it; KubeApiError for a refusal, a silence of `idle` seconds, or a line too
        long."""
        what = f"GET {path.split('?')[0]}"
        headers = {**self.access.headers(), "Accept": "application/json"}
        try:
            async with self._session.get(
                self.access.server + path,
                headers=headers,
                ssl=self.access.ssl,
                server_hostname=self.access.tls_server_name,
                timeout=aiohttp.ClientTimeout(total=None, sock_read=idle),
                allow_redirects=False,
            ) as response:
                moved = redirect_of(response)
                if moved is not None:
                    raise KubeApiError(about(what, moved), response.status)
                if response.status >= 400:
                    body = await read_bounded(response, line_limit)
                    raise refusal(what, "GET", response.status, body, hints)
                pending = b""
                async for chunk in response.content.iter_any():
                    pending += chunk
                    *done, pending = pending.split(b"\n")
                    for line in done:
                        if line.strip():
                            yield line
                    if len(pending) > line_limit:
                        raise KubeApiError(about(what, "a watch event past the size bound"))
        except BodyTooLarge as exc:
            raise KubeApiError(about(what, f"the answer is too large: {exc}")) from exc
        except TimeoutError as exc:
            raise KubeApiError(about(what, f"nothing for {idle:g}s")) from exc
        except aiohttp.ClientError as exc:
            said = f"the API server at {self.access.server}: {exc}"
            raise KubeApiError(about(what, said)) from exc

    async def json(
        self,
        method: str,
        path: str,
        *,
        limit: int,
        within: float,
        hints: dict[int, str],
        body: object = None,
        content_type: str = "application/json",
    ) -> tuple[Any, int]:
        """The parsed answer and its size; a refusal mapped by `errors.refusal`."""
        status, raw = await self.send(
            method, path, limit=limit, within=within, body=body, content_type=content_type
        )
        what = f"{method} {path.split('?')[0]}"
        if status >= 400:
            raise refusal(what, method, status, raw, hints)
        try:
            return json.loads(raw), len(raw)
        except (ValueError, RecursionError) as exc:
            raise KubeApiError(f"{what}: the API server answered no JSON") from exc


@contextlib.asynccontextmanager
async def api_client(access: Access, connections: int = 100) -> AsyncIterator[ApiClient]:
    """An ApiClient over its own HTTP session of at most `connections` connections."""
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield ApiClient(session, access)
