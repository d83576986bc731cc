"""The Kubernetes API, for the agent's own Node only: read it, patch its status (the
PrepullReady condition), JSON-patch it (remove the startup taint). aiohttp, already the
registry client's, is the HTTP client; the service account's token is read again for every
request, so a rotated token is used as soon as kubelet writes it."""

from __future__ import annotations

import json
import ssl
from typing import Any
from urllib.parse import quote

import aiohttp

from agent import auth, files
from agent.errors import AgentError, InputError
from agent.gate import Conflict, checked_node
from agent.settings import ClusterAccess
from agent.transport import BodyTooLarge, read_bounded

REQUEST_TIMEOUT = 10.0
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
# A projected service-account token is a JWT of ~1 kB.
MAX_TOKEN_BYTES = 64 * 1024
MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"


def tls_context(access: ClusterAccess) -> ssl.SSLContext | None:
    """The TLS context trusting the API server's CA (None: the system's CAs); InputError if
    the CA file cannot be loaded. The daemon calls it at start, so that is exit 2, not a
    failure later."""
    if access.ca_file is None:
        return None
    try:
        return ssl.create_default_context(cafile=str(access.ca_file))
    except (OSError, ssl.SSLError) as exc:
        reason = f"cannot load the API server's CA {access.ca_file}: {exc}"
        raise InputError(reason) from None


class KubeApi:
    """NodeApi (agent.gate) over HTTPS, for `access.node`."""

    def __init__(self, session: aiohttp.ClientSession, access: ClusterAccess) -> None:
        self._session = session
        self._access = access
        self._ssl = tls_context(access)
        self._path = f"/api/v1/nodes/{quote(access.node, safe='')}"

    async def get_node(self) -> dict[str, Any]:
        """The Node, its shape checked where the gate reads it (agent.gate.checked_node)."""
        return checked_node(await self._request("GET", self._path))

    async def patch_status(self, patch: dict[str, Any]) -> None:
        await self._request("PATCH", self._path + "/status", patch, MERGE_PATCH)

    async def json_patch(self, operations: list[dict[str, Any]]) -> None:
        await self._request("PATCH", self._path, operations, JSON_PATCH)

    def _token(self) -> str:
        try:
            token = files.read_text(self._access.token_file, MAX_TOKEN_BYTES).strip()
        except files.UnreadableFile as exc:
            raise AgentError(f"cannot read the service account token: {exc}") from None
        # Never quoted: it is a credential. A CR or LF would forge header lines.
        if not auth.fits_header(token):
            raise AgentError(
                f"the service account token in {self._access.token_file} is empty or holds "
                "spaces or control characters: not sent"
            )
        return token

    async def _request(
        self, method: str, path: str, body: object = None, content_type: str | None = None
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self._token()}", "Accept": "application/json"}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
            data = json.dumps(body)
        what = f"{method} {path}"
        try:
            async with self._session.request(
                method,
                self._access.server + path,
                data=data,
                headers=headers,
                ssl=self._ssl if self._ssl is not None else True,
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
            ) as response:
                text = (await read_bounded(response, MAX_RESPONSE_BYTES)).decode(errors="replace")
                if response.status in (409, 422) and method == "PATCH":
                    raise Conflict(f"{what}: {_message(text)}")
                if response.status >= 400:
                    raise AgentError(_refusal(what, response.status, text))
        except BodyTooLarge as exc:
            raise AgentError(f"{what}: the API server sent {exc}") from None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise AgentError(f"{what}: the API server at {self._access.server}: {exc}") from None
        try:
            document = json.loads(text)
        except (ValueError, RecursionError):
            raise AgentError(f"{what}: the API server answered no JSON") from None
        if not isinstance(document, dict):
            raise AgentError(f"{what}: the API server answered JSON that is not an object")
        return document


def _message(text: str) -> str:
    """The `message` of a Kubernetes Status body, else the body's start."""
    try:
        document = json.loads(text)
    except ValueError:
        return text[:200]
    if isinstance(document, dict) and isinstance(document.get("message"), str):
        return str(document["message"])
    return text[:200]


def _refusal(what: str, status: int, text: str) -> str:
    hint = {
        401: "the service account token was refused",
        403: "forbidden: apply deploy/ readiness-gate RBAC (nodes get/patch, nodes/status "
        "patch) and run with its service account",
        404: "no such node: is NODE_NAME (spec.nodeName) right?",
    }.get(status, "")
    return f"{what}: HTTP {status}: {_message(text)}" + (f" ({hint})" if hint else "")
