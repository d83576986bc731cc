"""The Kubernetes API, for the agent's own Node only: read it, patch its status (the
PrepullReady condition), JSON-patch it (remove the startup taint), and record Events about it
in the agent's namespace. aiohttp, already the
registry client's, is the HTTP client; the service account's token is read again for every
request, so a rotated token is used as soon as kubelet writes it."""

from __future__ import annotations

import json
import os
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from agent.adapters.registry import auth
from agent.adapters.registry.transport import BodyTooLarge, read_bounded
from agent.core import files
from agent.core.errors import AgentError, InputError
from agent.core.gate import Conflict, checked_node
from agent.core.text import fit

# A DNS-1123 subdomain, what Kubernetes allows a Node's name to be.
NODE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
# Where kubelet mounts a pod's service account (Kubernetes docs, "Accessing the Kubernetes API
# from a Pod").
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class ClusterAccess:
    server: str
    """https://host:port of the API server."""
    token_file: Path
    ca_file: Path | None
    node: str
    namespace: str = "default"
    """Where the agent records Events about its Node: its own namespace, so that what it may
    write stays there (`kubectl describe node` finds them in any namespace)."""
    impersonate_node: bool = False
    """Act as the node itself (`system:node:<node>`) through constrained impersonation
    (KEP-5284, `impersonate:associated-node`): the API server then lets the agent touch only
    its own Node, and NodeRestriction forbids it any taint change."""

    @classmethod
    def resolve(
        cls,
        node: str | None,
        server: str | None = None,
        token_file: Path | None = None,
        ca_file: Path | None = None,
        namespace: str | None = None,
        impersonate_node: bool = False,
    ) -> ClusterAccess:
        """In-cluster defaults (KUBERNETES_SERVICE_HOST/PORT, the service account's token and
        CA, NODE_NAME from the downward API), each overridable; InputError naming what is
        missing when the agent runs outside a pod without them."""
        node = node or os.environ.get("NODE_NAME")
        if not node:
            raise InputError(
                "the readiness gate needs this node's name: --node-name, or NODE_NAME from "
                "the downward API (fieldRef: spec.nodeName)"
            )
        if server is None:
            host = os.environ.get("KUBERNETES_SERVICE_HOST")
            port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            if not host:
                raise InputError(
                    "the readiness gate needs the API server: run in a pod (KUBERNETES_SERVICE_"
                    "HOST is set there) or give --kube-api https://host:port"
                )
            server = service_url(host, port)
        if impersonate_node and not NODE_NAME.fullmatch(node):
            # It goes into a header: nothing but a node name may.
            raise InputError(f"{node!r} is not a node name (a DNS subdomain): cannot act as it")
        if not server.startswith("https://"):
            # Every request carries the service account's token: never in the clear.
            raise InputError(f"--kube-api must be an https:// URL, not {server!r}")
        default_ca = SERVICE_ACCOUNT / "ca.crt"
        return cls(
            server=server.rstrip("/"),
            token_file=token_file or SERVICE_ACCOUNT / "token",
            ca_file=ca_file or (default_ca if default_ca.exists() else None),
            node=node,
            namespace=namespace or _own_namespace(),
            impersonate_node=impersonate_node,
        )


def service_url(host: str, port: str) -> str:
    """The API server's URL from KUBERNETES_SERVICE_HOST and _PORT (an IPv6 host bracketed)."""
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def _own_namespace() -> str:
    """The pod's namespace: POD_NAMESPACE (downward API: metadata.namespace), else the one
    kubelet mounts with the service account's token, else `default`."""
    named = os.environ.get("POD_NAMESPACE", "").strip()
    if named:
        return named
    try:
        mounted = files.read_text(SERVICE_ACCOUNT / "namespace", 256).strip()
    except files.UnreadableFile:
        return "default"
    return mounted or "default"


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
        raise InputError(reason) from exc


def kube_session() -> aiohttp.ClientSession:
    """The HTTP session the gate's API client runs on (each request sets its own timeout)."""
    return aiohttp.ClientSession()


class KubeApi:
    """NodeApi (agent.core.gate) over HTTPS, for `access.node`."""

    def __init__(self, session: aiohttp.ClientSession, access: ClusterAccess) -> None:
        self._session = session
        self._access = access
        self._ssl = tls_context(access)
        self._path = f"/api/v1/nodes/{quote(access.node, safe='')}"
        self._events = f"/api/v1/namespaces/{quote(access.namespace, safe='')}/events"

    async def get_node(self) -> dict[str, Any]:
        """The Node, its shape checked where the gate reads it (agent.core.gate.checked_node)."""
        return checked_node(await self._request("GET", self._path))

    async def patch_status(self, patch: dict[str, Any]) -> None:
        await self._request("PATCH", self._path + "/status", patch, MERGE_PATCH)

    async def json_patch(self, operations: list[dict[str, Any]]) -> None:
        await self._request("PATCH", self._path, operations, JSON_PATCH)

    async def create_event(self, event: dict[str, Any]) -> None:
        await self._request("POST", self._events, event)

    async def patch_event(self, name: str, patch: dict[str, Any]) -> bool:
        """False if the Event is gone (the API server keeps Events an hour)."""
        path = f"{self._events}/{quote(name, safe='')}"
        try:
            await self._request("PATCH", path, patch, MERGE_PATCH)
        except KubeApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def _token(self) -> str:
        try:
            token = files.read_text(self._access.token_file, MAX_TOKEN_BYTES).strip()
        except files.UnreadableFile as exc:
            raise KubeApiError(f"cannot read the service account token: {exc}") from None
        # Never quoted: it is a credential. A CR or LF would forge header lines.
        if not auth.fits_header(token):
            raise KubeApiError(
                f"the service account token in {self._access.token_file} is empty or holds "
                "spaces or control characters: not sent"
            )
        return token

    async def _request(
        self, method: str, path: str, body: object = None, content_type: str | None = None
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self._token()}", "Accept": "application/json"}
        if self._access.impersonate_node:
            headers["Impersonate-User"] = f"system:node:{self._access.node}"
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
                allow_redirects=False,  # the token goes to the API server and nowhere else
            ) as response:
                text = (await read_bounded(response, MAX_RESPONSE_BYTES)).decode(errors="replace")
                status = response.status
                moved = redirect_of(response)
        except BodyTooLarge as exc:
            raise KubeApiError(f"{what}: the API server sent {exc}") from exc
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            # aiohttp's messages name the URL, never the request's headers (the token).
            raise KubeApiError(f"{what}: the API server at {self._access.server}: {exc}") from exc
        if moved is not None:
            raise KubeApiError(f"{what}: {moved}", status)
        if status >= 400:
            raise _refusal(what, method, status, text, self._access.impersonate_node)
        try:
            document = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise KubeApiError(f"{what}: the API server answered no JSON") from exc
        if not isinstance(document, dict):
            raise KubeApiError(f"{what}: the API server answered JSON that is not an object")
        return document


MAX_MESSAGE = 1000
"""The longest API server message kept whole."""


def redirect_of(response: aiohttp.ClientResponse) -> str | None:
    """What to say of a redirect the API server answered (never followed: the credentials
    would go where it points), or None if it is none."""
    if not 300 <= response.status < 400:
        return None
    where = fit(response.headers.get("Location", "nowhere"), 200)
    return f"the API server answered a redirect (HTTP {response.status}) to {where}; not followed"


def refusal_message(text: str) -> str:
    """The `message` of a Kubernetes Status body, else the body's start."""
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return fit(text, 200)
    if isinstance(document, dict) and isinstance(document.get("message"), str):
        return fit(document["message"], MAX_MESSAGE)
    return fit(text, 200)


# What an operator does about each refusal.
_HINTS = {
    401: "the service account token was refused",
    403: "forbidden: apply the RBAC of deploy/'s readiness-gate or node-readiness-controller "
    "component (nodes get/patch, nodes/status patch, events create/patch in the agent's "
    "namespace) and run with its service account",
    404: "no such node: is NODE_NAME (spec.nodeName) right?",
}


IMPERSONATION_HINT = (
    "acting as this node was refused: the service account needs impersonate:associated-node "
    "and the impersonate-on grants of deploy/components/node-impersonation, on an API server "
    "with constrained impersonation (Kubernetes 1.36+); the gate tries again"
)


def _refusal(
    what: str, method: str, status: int, text: str, impersonating: bool = False
) -> AgentError:
    """The one table from the API server's refusals to the project's errors: a guarded write
    that lost a race is a Conflict (the gate reads the Node again); anything else says what
    the server said, with what to do about it where that is known."""
    if status in (409, 422) and method == "PATCH":
        return Conflict(f"{what}: {refusal_message(text)}")
    hint = IMPERSONATION_HINT if status == 403 and impersonating else _HINTS.get(status)
    message = f"{what}: HTTP {status}: {refusal_message(text)}" + (f" ({hint})" if hint else "")
    return KubeApiError(message, status)


class KubeApiError(AgentError):
    """The Kubernetes API could not be asked, or refused; `status` is its HTTP status, if any."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
