"""What `once` loads: the libraries and adapters it uses and nothing else (no Kubernetes
adapter, no web server, no Prometheus client), so its start-up stays near the import floor of
grpc, aiohttp and PyYAML (bench.startup measures it)."""

from __future__ import annotations

import json
import subprocess
import sys

# What `once` runs: the CLI, then the composition root (cli.common.load_wiring).
PROBE = (
    "import json, sys; import agent.cli; from agent.cli.common import load_wiring; "
    "load_wiring(); print(json.dumps(sorted(sys.modules)))"
)
NEVER = ("agent.adapters.kube", "agent.daemon.app", "aiohttp.web", "prometheus_client")


def test_once_loads_no_kubernetes_adapter_web_server_or_metrics() -> None:
    loaded = json.loads(
        subprocess.run(
            [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True
        ).stdout
    )
    assert "grpc" in loaded and "agent.adapters.registry.client" in loaded, "the probe ran"
    unwanted = [m for m in loaded if m in NEVER or m.startswith(tuple(f"{n}." for n in NEVER))]
    assert not unwanted, f"`once` loads {unwanted}"
