"""What the daemon is told at start: settings from the command line (and, for the readiness
gate, the pod's environment), checked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent.core.images.platform import Platform

if TYPE_CHECKING:
    from agent.wiring import ClusterAccess

DEFAULT_LISTEN = "0.0.0.0:9410"


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
    rollout's spread (agent.core.engine.rollout) depends on it."""
    owner: str = "daemon"
    """Whose pins this daemon claims and releases (agent.core.engine.claims.owner_of)."""
    converge_deadline: float = 1800.0
    """A ready node converging to a new list longer than this (plus the list's rollout.spread)
    is reported overdue; it stays ready."""
    gate: GateSettings | None = None
    """The readiness gate (core.reports.gate), if asked for; None: the agent never calls the API."""
    containerd_config: Path | None = None
    """containerd's config file, for how it pulls (None: the default file, if there is one)."""
    kubelet_config: Path | None = None
    """The kubelet's configuration file, to say what the kubelet makes of the list (None: not
    judged)."""
    multi_tenant: bool = False
    """The node pool runs pods of tenants that must not share private images."""

    @property
    def node_events(self) -> bool:
        """Record Events on the Node (failing images, the gate's decisions)."""
        return self.gate is not None and self.gate.events


@dataclass(frozen=True)
class GateSettings:
    access: ClusterAccess
    condition: bool
    """Keep the node's prepull.io/PrepullReady condition up to date."""
    startup_taint: str | None
    """Remove this taint from the node once the list is preloaded."""
    ready_timeout: float | None
    """After this many seconds, remove the taint anyway (a broken registry must not keep
    capacity out forever)."""
    events: bool = True
    """Record Events on the Node: `kubectl describe node` then says why it is held."""


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"--listen must be host:port, e.g. {DEFAULT_LISTEN}, not {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)
