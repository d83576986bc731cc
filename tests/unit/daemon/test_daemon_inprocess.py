"""The daemon in process, on the fakes (no containerd, no registry): its loops, the one pass
driver following a list that changes, and the guard that restarts a loop that fails. The
subprocess tests (tests/integration/test_daemon.py) hold it to the real runtime."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, cast

from prometheus_client import CollectorRegistry

from agent import wiring
from agent.adapters.kube.access import ClusterAccess
from agent.core.doctor import pullpath
from agent.core.engine.disk import DiskGuard, DiskUsage
from agent.core.reports.gate import CONDITION_TYPE
from agent.daemon.app import Daemon
from agent.daemon.settings import DaemonSettings, GateSettings
from tests.fakes import FakeBinder, FakeNodeApi, FakeRegistry, FakeRuntime

WAIT = 10.0


def fakes() -> tuple[FakeRuntime, FakeBinder, FakeRegistry]:
    cri = FakeRuntime()
    return cri, FakeBinder(cri), FakeRegistry()


def wired(cri: FakeRuntime, images: FakeBinder, registry: FakeRegistry) -> wiring.Wiring:
    """The composition root with the fakes for the runtime and the registry."""

    async def mountpoint() -> str | None:
        return "/fake"

    @contextlib.asynccontextmanager
    async def runtime(endpoint: str) -> AsyncIterator[wiring.NodeRuntime]:
        disk = DiskGuard(mountpoint, lambda path: DiskUsage(100, 90))
        yield wiring.Runtime(endpoint, cast(Any, cri), cast(Any, images), disk)

    @contextlib.asynccontextmanager
    async def registry_client(*args: object, **kwargs: object) -> AsyncIterator[Any]:
        yield registry

    return dataclasses.replace(wiring.WIRING, runtime=runtime, registry_client=registry_client)


async def until(check: Callable[[], bool], what: str) -> None:
    """Wait for a state (never for a moment)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not check() and loop.time() < deadline:  # noqa: ASYNC110 (the fakes signal nothing)
        await asyncio.sleep(0.01)
    assert check(), f"waited {WAIT:.0f}s for {what}"


def settings(config: Path) -> DaemonSettings:
    return DaemonSettings(
        config_path=config,
        endpoint="fake://runtime",
        node=None,
        listen=("127.0.0.1", 0),
        watch_interval=0.05,
        container_scan_interval=0.05,
        shutdown_grace=1.0,
        node_name="node-a",
    )


async def test_the_daemon_converges_follows_a_new_list_and_stops(tmp_path: Path) -> None:
    config = tmp_path / "preload.yaml"
    config.write_text("images:\n  - r.io/team/app:1\n")
    cri, images, registry = fakes()
    metrics = CollectorRegistry()
    daemon = Daemon(
        settings(config),
        wired(cri, images, registry),
        registry=metrics,
    )

    def served(info: str) -> list[str]:
        """The digests an info gauge names now."""
        return [
            sample.labels["digest"]
            for family in metrics.collect()
            if family.name == info
            for sample in family.samples
            if sample.value == 1
        ]

    running = asyncio.create_task(daemon.run())
    await until(lambda: daemon.report.ready, "ready after the first pass")
    assert [p for p in cri.pulls if "r.io/team/app" in p], cri.pulls
    assert images.pinned, "what the pass preloaded is pinned"
    first = daemon.report.list_digest
    assert first is not None and served("prepull_list_info") == [first]
    await until(lambda: served("prepull_served_list_info") == [first], "the first list served")
    assert daemon.report.to_json()["served_list"] == first

    config.write_text("images:\n  - r.io/team/app:1\n  - r.io/team/web:2\n")
    await until(
        lambda: any("r.io/team/web" in p for p in cri.pulls) and daemon.report.ready,
        "the new list's image pulled and the node ready again",
    )
    assert [r.image for r in daemon.report.desired] == ["r.io/team/app:1", "r.io/team/web:2"]
    second = daemon.report.list_digest
    assert second not in (None, first) and served("prepull_list_info") == [second]
    await until(
        lambda: served("prepull_served_list_info") == [second], "the new list served, alone"
    )

    daemon.stop()
    assert await asyncio.wait_for(running, WAIT) == 0


async def test_a_loop_that_fails_is_restarted_and_counted(tmp_path: Path) -> None:
    config = tmp_path / "preload.yaml"
    config.write_text("images:\n  - r.io/team/app:1\n")
    cri, images, registry = fakes()
    metrics = CollectorRegistry()
    daemon = Daemon(
        settings(config),
        wired(cri, images, registry),
        registry=metrics,
        rng=lambda: 0.0,  # no backoff: restart at once
    )
    cri.container_failures = 2
    running = asyncio.create_task(daemon.run())

    def failures() -> float:
        value = metrics.get_sample_value("prepull_task_failures_total", {"task": "starts"})
        return value or 0.0

    await until(lambda: failures() == 2 and cri.container_failures == 0, "two failures counted")
    await until(lambda: daemon.report.ready, "the other loops went on")
    assert not running.done(), "one failing loop never ends the daemon"
    daemon.stop()
    assert await asyncio.wait_for(running, WAIT) == 0


async def test_the_doctor_loop_reports_how_containerd_pulls_and_what_a_registry_did(
    tmp_path: Path,
) -> None:
    """Apart from the passes: the pull path is read once for a containerd process, and again
    when a registry the list pulled from is found to ignore Range (the fake's does)."""
    config = tmp_path / "preload.yaml"
    config.write_text("images:\n  - r.io/team/app:1\n")
    cri, images, _ = fakes()
    registry = FakeRegistry(ranges=False)
    asked: list[tuple[str, list[str]]] = []

    def checkup(
        endpoint: str, version: str, config_path: Path | None, ignoring_range: Sequence[str] = ()
    ) -> wiring.Checkup:
        asked.append((version, list(ignoring_range)))
        found = pullpath.diagnose(version, None, None, list(ignoring_range), None)
        return wiring.Checkup(found, None)

    metrics = CollectorRegistry()
    daemon = Daemon(
        settings(config),
        dataclasses.replace(wired(cri, images, registry), checkup=checkup),
        registry=metrics,
    )
    running = asyncio.create_task(daemon.run())
    await until(
        lambda: daemon.report.runtime.get("range") == {"r.io": False},
        "the Range probe of the registry the pass pulled from",
    )
    await until(lambda: len(asked) == 2, "the pull path read again with what the probe found")
    assert asked == [("2.1.9", []), ("2.1.9", ["r.io"])]
    said = daemon.report.runtime["pull_path"]
    assert isinstance(said, dict) and said["pull_path"] == "transfer service", said
    assert metrics.get_sample_value("prepull_runtime_transfer_service") == 1
    ranges_asked = registry.requests
    daemon.shared.pass_done.set()  # another pass: the same process, the registry known
    await until(lambda: not daemon.shared.pass_done.is_set(), "the doctor to look again")
    assert len(asked) == 2 and registry.requests == ranges_asked, "nothing asked twice"
    daemon.stop()
    assert await asyncio.wait_for(running, WAIT) == 0


async def test_the_daemon_judges_the_kubelet_s_settings_once_per_file_and_list_seen(
    tmp_path: Path,
) -> None:
    """With --kubelet-config: /status, one series per finding and one log line; judged again
    when the kubelet's file changes, not on every look."""
    config = tmp_path / "preload.yaml"
    config.write_text("images:\n  - r.io/team/app:1\n")
    kubelet_file = tmp_path / "kubelet.yaml"
    kubelet_file.write_text(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
        "imagePullCredentialsVerificationPolicy: AlwaysVerify\n"
    )
    cri, images, registry = fakes()
    judged: list[str | None] = []
    real = wiring.WIRING.kubelet_checkup

    def kubelet_checkup(path: Path | None, listing: Any, **kwargs: Any) -> Any:
        judged.append(listing.source if listing is not None else None)
        return real(path, listing, **kwargs)

    metrics = CollectorRegistry()
    daemon = Daemon(
        dataclasses.replace(settings(config), kubelet_config=kubelet_file),
        dataclasses.replace(wired(cri, images, registry), kubelet_checkup=kubelet_checkup),
        registry=metrics,
    )
    running = asyncio.create_task(daemon.run())
    policy = "kubelet.imagePullCredentialsVerificationPolicy"

    def series(setting: str, change: str) -> float | None:
        labels = {"setting": setting, "change": change}
        return metrics.get_sample_value("prepull_kubelet_finding", labels)

    await until(lambda: series(policy, "1") == 1, "the verification finding as a series")
    said = daemon.report.to_json()["kubelet"]
    assert said["config"] == str(kubelet_file), said
    assert policy in [f["setting"] for f in said["findings"]]
    looked = len(judged)
    daemon.shared.pass_done.set()  # a look with nothing changed: not judged again
    await until(lambda: not daemon.shared.pass_done.is_set(), "the doctor to look again")
    assert len(judged) == looked
    kubelet_file.write_text(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
        "imagePullCredentialsVerificationPolicy: NeverVerify\nimageGCLowThresholdPercent: 70\n"
    )
    daemon.shared.pass_done.set()
    await until(lambda: series(policy, "1") is None, "the finding gone with the new file")
    assert series("kubelet.imageGCLowThresholdPercent", "1") == 1
    daemon.stop()
    assert await asyncio.wait_for(running, WAIT) == 0


async def test_the_gate_loop_releases_the_node_and_records_why_an_image_is_missing(
    tmp_path: Path,
) -> None:
    """The readiness gate in process, on a Node behind the fake API: a permanent failure is
    reported (an Event) and not waited for; the condition says so and the taint goes."""
    config = tmp_path / "preload.yaml"
    config.write_text("images:\n  - r.io/team/app:1\n  - r.io/team/gone:1\n")
    cri, images, _ = fakes()
    registry = FakeRegistry(frozenset({"team/gone"}))
    node = FakeNodeApi([{"key": "prepull.io/not-ready", "effect": "NoSchedule"}])
    access = ClusterAccess("https://api.invalid:6443", tmp_path / "token", None, "node-a")

    @contextlib.asynccontextmanager
    async def node_api(given: ClusterAccess) -> AsyncIterator[FakeNodeApi]:
        assert given is access
        yield node

    gated = dataclasses.replace(
        settings(config), gate=GateSettings(access, True, "prepull.io/not-ready", None)
    )
    daemon = Daemon(
        gated,
        dataclasses.replace(wired(cri, images, registry), node_api=node_api),
        registry=CollectorRegistry(),
    )
    running = asyncio.create_task(daemon.run())
    await until(lambda: not node.node["spec"]["taints"], "the startup taint to go")
    written = node.condition(CONDITION_TYPE)
    assert written is not None and written["status"] == "True", written
    assert "r.io/team/gone:1" in written["message"], written
    await until(lambda: any(e["reason"] == "PreloadFailed" for e in node.created), "the Event")
    (event,) = [e for e in node.created if e["reason"] == "PreloadFailed"]
    assert "r.io/team/gone:1" in event["message"] and event["involvedObject"]["name"] == "node-a"
    daemon.stop()
    assert await asyncio.wait_for(running, WAIT) == 0
