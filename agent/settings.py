"""What the daemon is told at start: settings from the command line (and, for the readiness
gate, the pod's environment), checked."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from agent.errors import InputError
from agent.platform import Platform

DEFAULT_LISTEN = "0.0.0.0:9410"
# containerd's own default socket (CRI is served on it).
DEFAULT_ENDPOINT = "unix:///run/containerd/containerd.sock"
# Where kubelet mounts a pod's service account (Kubernetes docs, "Accessing the Kubernetes API
# from a Pod").
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class DaemonSettings:
    config_path: Path
    endpoint: str
    node: Platform | None
    """None: the platform containerd's CRI plugin pulls for (uname if it does not say)."""
    listen: tuple[str, int]
    shutdown_grace: float = 20.0
    """Seconds in-flight pulls get to finish after SIGTERM; keep below the pod's grace period."""
    watch_interval: float = 2.0
    """Seconds between looks at the config file (a ConfigMap update lands within a minute)."""
    hosts_dir: Path | None = None
    """containerd's registry hosts directory (certs.d), for the same mirrors, TLS and HTTP."""
    strict_readiness: bool = False
    """/readyz waits for permanently failed images too (a broken entry then blocks rollouts)."""
    container_scan_interval: float = 10.0
    """Seconds between looks for new containers, to count pod starts that hit or missed. The
    verdict comes from timestamps, so a slower scan is as accurate, only later."""
    progress_log_interval: float = 30.0
    """A pull still running logs how far it has got every this many seconds."""
    node_name: str = ""
    """This node's name (--node-name, $NODE_NAME, else the hostname): where it falls in a
    rollout's spread (agent.rollout) depends on it."""
    gate: GateSettings | None = None
    """The readiness gate (agent.gate), if asked for; None: the agent never calls the API."""


@dataclass(frozen=True)
class ClusterAccess:
    server: str
    """https://host:port of the API server."""
    token_file: Path
    ca_file: Path | None
    node: str

    @classmethod
    def resolve(
        cls,
        node: str | None,
        server: str | None = None,
        token_file: Path | None = None,
        ca_file: Path | None = None,
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
            server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
        if not server.startswith("https://"):
            # Every request carries the service account's token: never in the clear.
            raise InputError(f"--kube-api must be an https:// URL, not {server!r}")
        default_ca = SERVICE_ACCOUNT / "ca.crt"
        return cls(
            server=server.rstrip("/"),
            token_file=token_file or SERVICE_ACCOUNT / "token",
            ca_file=ca_file or (default_ca if default_ca.exists() else None),
            node=node,
        )


@dataclass(frozen=True)
class GateSettings:
    access: ClusterAccess
    condition: bool
    """Keep the node's PrepullReady condition up to date."""
    startup_taint: str | None
    """Remove this taint from the node once the list is preloaded."""
    ready_timeout: float | None
    """After this many seconds, remove the taint anyway (a broken registry must not keep
    capacity out forever)."""


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"--listen must be host:port, e.g. {DEFAULT_LISTEN}, not {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)
