"""What the daemon is told at start: settings from the command line, checked. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agent.platform import Platform

DEFAULT_LISTEN = "0.0.0.0:9410"
# containerd's own default socket (CRI is served on it).
DEFAULT_ENDPOINT = "unix:///run/containerd/containerd.sock"


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


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"--listen must be host:port, e.g. {DEFAULT_LISTEN}, not {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)
