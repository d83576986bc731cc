"""Access to the API server from inside the cluster, as the readiness gate has it: the service
account kubelet mounts (its token read again at every request, as kubelet rotates it), the
API server's service address, this node's name from the downward API."""

from __future__ import annotations

import os
import re
import ssl
from dataclasses import dataclass
from pathlib import Path

from agent.adapters.http import fits_header
from agent.adapters.kube.client import Access
from agent.adapters.kube.errors import KubeApiError
from agent.core import files
from agent.core.defaults import SERVICE_ACCOUNT
from agent.core.errors import InputError

# A projected service-account token is a JWT of ~1 kB.
MAX_TOKEN_BYTES = 64 * 1024


# A DNS-1123 subdomain, what Kubernetes allows a Node's name to be.
NODE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


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


def gate_access(access: ClusterAccess) -> Access:
    """How the gate's requests reach the API server: the service account's token, read at each
    request, and the node's identity when it acts as its node."""

    def headers() -> dict[str, str]:
        headers = {"Authorization": f"Bearer {_token(access.token_file)}"}
        if access.impersonate_node:
            headers["Impersonate-User"] = f"system:node:{access.node}"
        return headers

    context = tls_context(access)
    return Access(access.server, context if context is not None else True, headers)


def _token(path: Path) -> str:
    try:
        token = files.read_text(path, MAX_TOKEN_BYTES).strip()
    except files.UnreadableFile as exc:
        # Only the file's trouble is said: its content is a credential.
        raise KubeApiError(f"cannot read the service account token: {exc}") from None
    # Never quoted: it is a credential. A CR or LF would forge header lines.
    if not fits_header(token):
        raise KubeApiError(
            f"the service account token in {path} is empty or holds spaces or control "
            "characters: not sent"
        )
    return token
