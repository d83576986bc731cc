"""The Range probe on a real daemon, containerd and registry: a registry seen through a front
that ignores Range is found once and named, and the doctor's advice then leaves containerd's
chunked fetch (which needs Range) out; the plain registry is found to honour it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agent.core.doctor.pullpath import TRANSFER, TRANSFER_ADVICE_WITHOUT_RANGE
from tests.harness.agent import NODE
from tests.harness.containerd import Containerd, selected_release
from tests.harness.daemon import DaemonProc
from tests.harness.images import push_image
from tests.harness.norange import RangeIgnoringFront
from tests.harness.registry import Registry

LINE = selected_release().line


def test_a_registry_that_ignores_range_is_named_and_chunked_fetch_is_not_advised(
    registry: Registry, fresh_containerd: Containerd, repo: str, tmp_path: Path
) -> None:
    front = RangeIgnoringFront(registry.host).start()
    fresh_containerd.trust_http_registry(front.host)
    direct = push_image(registry, repo + "/direct", "1", (NODE,))
    behind = push_image(registry, repo + "/behind", "1", (NODE,))
    preload = tmp_path / "preload.yaml"
    preload.write_text(
        "images:\n"
        f"  - {direct.tagged}\n"
        f"  - {front.host}/{behind.repo}:1\n"
        "registries:\n"
        f"  {registry.host}:\n    insecure: true\n"
        f"  {front.host}:\n    insecure: true\n"
    )
    daemon = DaemonProc(
        preload,
        fresh_containerd.endpoint,
        "--containerd-config",
        str(fresh_containerd.config_file),
    )
    try:

        def runtime() -> dict[str, Any]:
            found: dict[str, Any] = json.loads(daemon.get("/status")[1]).get("runtime") or {}
            return found

        daemon.wait_for(lambda: len(runtime().get("range", {})) == 2, 120, "both probes")
        assert runtime()["range"] == {registry.host: True, front.host: False}
        assert front.ranged >= 1, "the probe asked the front for a range"
        assert f"{front.host} ignores HTTP Range" in daemon.log()
        assert f"{registry.host} ignores" not in daemon.log()
        if LINE == "2":
            daemon.wait_for(
                lambda: "ignores Range" in json.dumps(runtime().get("pull_path")),
                30,
                "the pull path to follow the probe",
            )
        findings = runtime()["pull_path"]["findings"]
        advised = {f["setting"] for f in findings if f["tuning"]}
        if LINE == "2":
            assert advised == {f"{TRANSFER}.{k}" for k in TRANSFER_ADVICE_WITHOUT_RANGE.settings}
            assert all(f"{front.host} ignores Range" in f["why"] for f in findings if f["tuning"])
        else:  # the old path has no chunked fetch: its advice does not depend on Range
            assert advised and all("max_concurrent_downloads" in s for s in advised), findings
    finally:
        daemon.terminate()
        front.stop()
