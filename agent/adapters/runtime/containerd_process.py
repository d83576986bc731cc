"""The containerd process behind a socket, as this host sees it: its pid (the socket's peer
credentials), its environment and what its PATH finds (through /proc/<pid>/root, its own
mount namespace). Visible only to root in the host's pid namespace (the doctor on the node);
elsewhere each answer is None."""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path

from agent.core.doctor import pullpath

_CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid
UNSEEN = "unknown: containerd's process is not visible here (run the doctor on the node as root)"


def peer_pid(endpoint: str) -> int | None:
    """The pid serving the unix socket `endpoint`, in this pid namespace (0 outside it)."""
    path = endpoint.removeprefix("unix://")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(2)
            connection.connect(path)
            raw = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDENTIALS.size)
    except OSError:
        return None
    pid = _CREDENTIALS.unpack(raw)[0]
    return pid or None


def environment(pid: int) -> dict[str, str] | None:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    pairs = (item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)
    return {key: value for key, value in pairs}


def path_finder(pid: int, env: dict[str, str]) -> Callable[[str], str | None]:
    """Where the process's PATH finds a command (Go's exec.LookPath: the first executable)."""
    root = Path(f"/proc/{pid}/root")

    def find(name: str) -> str | None:
        for folder in filter(None, env.get("PATH", "").split(":")):
            candidate = root / folder.lstrip("/") / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return f"{folder.rstrip('/')}/{name}"
        return None

    return find


def decompressor(endpoint: str, version: str) -> str:
    """The gzip decompressor the containerd behind `endpoint` uses, or why it is unknown."""
    pid = peer_pid(endpoint)
    env = environment(pid) if pid is not None else None
    if pid is None or env is None:
        return UNSEEN
    return pullpath.decompressor(version, env, path_finder(pid, env))


def started_at(endpoint: str) -> float | None:
    """When the containerd behind `endpoint` started (Unix time), or None if unseen: its
    /proc/<pid>/stat start time (clock ticks after boot) and the boot time in /proc/stat."""
    pid = peer_pid(endpoint)
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(
            int(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        # The fields after the command's name, which may hold spaces: the 22nd is starttime.
        ticks = int(stat.rpartition(")")[2].split()[19])
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")
