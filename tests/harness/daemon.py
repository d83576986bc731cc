"""`prepull-agent run` as a subprocess, with helpers to read its endpoints and metrics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.harness.procs import HarnessError, free_port
from tests.harness.registry import Registry


class DaemonProc:
    def __init__(self, config: Path, endpoint: str, *extra: str, healthy: bool = True) -> None:
        """Start the daemon and wait until it serves: healthy, or (healthy=False) at all."""
        self.port = free_port()
        self.stderr_path = config.parent / f"daemon-{self.port}.log"
        self._stderr = self.stderr_path.open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agent",
                "run",
                "--config",
                str(config),
                "--cri-endpoint",
                endpoint,
                "--listen",
                f"127.0.0.1:{self.port}",
                "--watch-interval",
                "0.2",
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )
        serving = (
            (lambda: self.get("/healthz")[0] == 200)
            if healthy
            else (lambda: self.get("/healthz")[0] != 0)
        )
        self.wait_for(serving, 30, "the daemon to serve /healthz")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def metric(self, name: str, **labels: str) -> float | None:
        """The value of one sample of /metrics, or None if it is not exported."""
        _, text = self.get("/metrics")
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return float(sample.value)
        return None

    def wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HarnessError(f"daemon exited {self.proc.returncode}:\n{self.log()}")
            if condition():
                return
            time.sleep(0.1)
        raise HarnessError(f"timed out after {timeout}s waiting for {what}:\n{self.log()[-3000:]}")

    def log(self) -> str:
        if not self._stderr.closed:
            self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def terminate(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()
        return self.proc.returncode


class ConfigMapVolume:
    """A directory laid out as kubelet lays out a ConfigMap volume, updated the way kubelet does:
    files in a timestamped dir, `..data` pointing at it, and the key a symlink through `..data`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir()
        self.version = 0
        self.path = root / "preload.yaml"

    def write(self, text: str) -> None:
        self.version += 1
        folder = self.root / f"..2026_11_24_00_00_{self.version:02d}"
        folder.mkdir()
        (folder / "preload.yaml").write_text(text)
        temp = self.root / "..data_tmp"
        temp.symlink_to(folder.name)
        os.replace(temp, self.root / "..data")  # the atomic swap
        if not self.path.is_symlink():
            self.path.symlink_to("..data/preload.yaml")


def listing(registry: Registry, images: list[str], extra: str = "") -> str:
    body = "images:\n" + "".join(f"  - {i}\n" for i in images)
    return body + f"registries:\n  {registry.host}:\n    insecure: true\n" + extra
