"""Starting and stopping helper processes; what both the registry and containerd harness need."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


class HarnessError(RuntimeError):
    """A real component could not be started: the test fails (never skips) with this reason."""


def require_binary(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise HarnessError(f"{name} not found: install the Debian package {package!r} (make deps)")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    proc: subprocess.Popen[bytes],
    log: Path,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise HarnessError(f"{what} exited with {proc.returncode}:\n{tail(log)}")
        if condition():
            return
        time.sleep(0.05)
    raise HarnessError(f"{what} not ready after {timeout}s:\n{tail(log)}")


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
