"""A real Prometheus (Debian's package) on loopback, scraping given targets every second."""

from __future__ import annotations

import json
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

from tests.harness.procs import free_port, require_binary, stop, wait_until

CONFIG = """\
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: prepull
    static_configs:
      - targets: [{targets}]
"""


class Prometheus:
    def __init__(self, workdir: Path, targets: list[str]) -> None:
        self.workdir = workdir
        self.targets = targets
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Prometheus:
        binary = require_binary("prometheus", "prometheus")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config = self.workdir / "prometheus.yml"
        config.write_text(CONFIG.format(targets=", ".join(f'"{t}"' for t in self.targets)))
        log = self.workdir / "prometheus.log"
        with log.open("wb") as out:
            self._proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_until(self._ready, 60, "prometheus", self._proc, log)
        return self

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def query(self, promql: str) -> list[dict[str, object]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": promql}
        )
        with urllib.request.urlopen(url, timeout=5) as resp:
            answer = json.loads(resp.read())
        assert answer["status"] == "success", answer
        return list(answer["data"]["result"])

    def stop(self) -> None:
        if self._proc is not None:
            stop(self._proc)
