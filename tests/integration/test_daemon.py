"""`prepull-agent run` against real containerd and docker-registry: probes, metrics, reload,
eviction restore, shutdown."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
import yaml

from agent.core.images import platform as platforms
from tests.harness.agent import (
    image_status,
    pull,
    remove_image,
    run_agent,
    slow_listed_image,
)
from tests.harness.containerd import Containerd
from tests.harness.daemon import ConfigMapVolume, DaemonProc, listing
from tests.harness.images import push_image, push_runnable, push_single
from tests.harness.pods import remove_pod, run_pod, sandbox_config, start_container
from tests.harness.procs import HarnessError
from tests.harness.prometheus import Prometheus
from tests.harness.registry import Registry
from tests.harness.slowproxy import SlowProxy

NODE = str(platforms.detect())
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_cold_node_pulls_then_reports_ready_with_status_and_metrics(
    volume: ConfigMapVolume, registry: Registry, containerd: Containerd, repo: str, start_daemon
) -> None:
    image = push_image(registry, repo, "1", (NODE,))
    volume.write(listing(registry, [image.tagged]))

    daemon = start_daemon(volume.path)
    daemon.wait_for(lambda: daemon.get("/readyz")[0] == 200, 30, "readiness")

    status = json.loads(daemon.get("/status")[1])
    assert status["runtime"]["name"] == "containerd"
    assert status["node_platform"] == NODE
    (reported,) = status["images"]
    assert reported["image"] == image.tagged and reported["state"] == "present"
    assert reported["digest"] == image.digest and reported["bytes"] > 0
    assert reported["pinned"] is containerd.release.honours_pins, "1.6.20 ignores the pin label"
    assert status["runtime"]["pins_honoured"] is containerd.release.honours_pins
    assert status["runtime"]["parallel_pulls"] is not containerd.release.races_on_parallel_pulls
    assert bool(status["runtime"]["limitations"]) is (containerd.release.line == "1.6")
    version = status["runtime"]["version"]
    assert version.startswith({"1.6": "1.6.", "1.7": "1.7.", "2": "2."}[containerd.release.line])
    assert (
        daemon.metric("prepull_runtime_info", runtime_name="containerd", runtime_version=version)
        == 1
    )
    assert daemon.metric("prepull_cache_misses_total") == 1
    assert daemon.metric("prepull_cache_hits_total") == 0
    assert daemon.metric("prepull_pulls_total", result="success") == 1
    assert daemon.metric("prepull_pulled_bytes_total") == reported["bytes"]
    assert daemon.metric("prepull_image_ready", image=image.tagged) == 1
    assert daemon.metric("prepull_images_desired") == daemon.metric("prepull_images_ready") == 1
    assert daemon.metric("prepull_pull_duration_seconds_count") == 1
    assert daemon.metric("prepull_last_reconcile_success_timestamp_seconds") > 0
    assert (
        daemon.metric(
            "prepull_registry_request_duration_seconds_count",
            registry=registry.host,
            method="HEAD",
            status="200",
        )
        == 1
    )
    served = status["config"]["digest"]
    assert served.startswith("sha256:")
    daemon.wait_for(
        lambda: json.loads(daemon.get("/status")[1])["served_list"] == served, 30, "served list"
    )
    assert daemon.metric("prepull_list_info", digest=served) == 1
    assert daemon.metric("prepull_served_list_info", digest=served) == 1
    assert daemon.get("/healthz")[0] == 200


def test_warm_node_counts_hits_and_pulls_nothing(
    volume: ConfigMapVolume, registry: Registry, containerd: Containerd, repo: str, start_daemon
) -> None:
    image = push_image(registry, repo, "1", (NODE,))
    volume.write(listing(registry, [image.pinned()]))
    first = start_daemon(volume.path)
    first.wait_for(lambda: first.get("/readyz")[0] == 200, 30, "readiness")
    assert first.terminate() == 0

    warm = start_daemon(volume.path)
    warm.wait_for(lambda: warm.get("/readyz")[0] == 200, 30, "readiness")

    assert warm.metric("prepull_cache_hits_total") == 1
    assert warm.metric("prepull_cache_misses_total") == 0
    assert warm.metric("prepull_pulls_total", result="success") == 0
    assert warm.metric("prepull_registry_request_duration_seconds_count") is None, (
        "a converged pinned list must not touch the registry"
    )


def test_readiness_lists_what_is_missing(
    volume: ConfigMapVolume, registry: Registry, containerd: Containerd, repo: str, start_daemon
) -> None:
    missing = f"{registry.host}/{repo}:never-pushed"
    volume.write(listing(registry, [missing]))

    daemon = start_daemon(volume.path)
    daemon.wait_for(
        lambda: daemon.metric("prepull_reconcile_duration_seconds_count") == 1, 30, "the first pass"
    )

    # A 404 is permanent: reported, not waited for (a broken entry must not stall a rollout).
    code, text = daemon.get("/readyz")
    assert code == 200 and "1 failed permanently" in text, text
    assert missing in text and "not found" in text, text
    assert daemon.metric("prepull_image_ready", image=missing) == 0
    assert daemon.metric("prepull_images_failed_permanently") == 1
    assert daemon.get("/healthz")[0] == 200, "a failing image does not make the agent unhealthy"

    strict = start_daemon(volume.path, "--strict-readiness")
    strict.wait_for(
        lambda: strict.metric("prepull_reconcile_duration_seconds_count") == 1, 30, "a pass"
    )
    code, text = strict.get("/readyz")
    assert code == 503 and missing in text and "not found" in text, text
    assert strict.metric("prepull_node_ready") == 0


def test_configmap_update_is_applied_and_a_broken_one_is_ignored(
    volume: ConfigMapVolume, registry: Registry, containerd: Containerd, repo: str, start_daemon
) -> None:
    first = push_image(registry, f"{repo}-a", "1", (NODE,))
    second = push_image(registry, f"{repo}-b", "1", (NODE,))
    third = push_image(registry, f"{repo}-c", "1", (NODE,))
    volume.write(listing(registry, [first.tagged], "resync: 1h\n"))
    daemon = start_daemon(volume.path)
    daemon.wait_for(lambda: daemon.get("/readyz")[0] == 200, 30, "readiness")

    volume.write(listing(registry, [first.tagged, second.tagged], "resync: 1h\n"))
    daemon.wait_for(
        lambda: image_status(containerd, second.tagged) is not None,
        30,
        "the added image to be preloaded without waiting for resync",
    )

    volume.write("images:\n  - nginx\nconcurrency: lots\n")
    daemon.wait_for(
        lambda: daemon.metric("prepull_config_reload_errors_total") == 1,
        30,
        "the broken update to be rejected",
    )
    assert daemon.get("/healthz")[0] == 200
    assert daemon.get("/readyz")[0] == 200, "the last good list stays in force"
    assert [i["image"] for i in json.loads(daemon.get("/status")[1])["images"]] == [
        first.tagged,
        second.tagged,
    ]
    log = daemon.log()
    assert "config update rejected" in log and "preload.yaml:3: 'concurrency'" in log, log
    rejected = json.loads(daemon.get("/status")[1])["config"]["rejected"]
    assert "preload.yaml:3: 'concurrency'" in rejected["error"] and rejected["since"] > 0
    assert daemon.metric("prepull_config_last_reload_successful") == 0

    volume.write(listing(registry, [third.tagged], "resync: 1h\n"))
    daemon.wait_for(
        lambda: image_status(containerd, third.tagged) is not None,
        30,
        "the next good update to apply",
    )
    assert json.loads(daemon.get("/status")[1])["config"]["rejected"] is None
    assert daemon.metric("prepull_config_last_reload_successful") == 1
    daemon.wait_for(
        lambda: daemon.metric("prepull_image_ready", image=first.tagged) is None,
        10,
        "series of images no longer listed to go",
    )


def test_evicted_image_is_restored_and_counted(
    volume: ConfigMapVolume, registry: Registry, containerd: Containerd, repo: str, start_daemon
) -> None:
    image = push_image(registry, repo, "1", (NODE,))
    volume.write(listing(registry, [image.tagged], "resync: 1s\n"))
    daemon = start_daemon(volume.path)
    daemon.wait_for(lambda: daemon.get("/readyz")[0] == 200, 30, "readiness")

    remove_image(containerd, image.tagged)  # as kubelet's image GC or `crictl rmi` would
    assert image_status(containerd, image.tagged) is None

    daemon.wait_for(lambda: daemon.metric("prepull_evictions_total") == 1, 30, "the eviction")
    assert image_status(containerd, image.tagged) is not None, "the image was not restored"
    assert '"event": "eviction"' in daemon.log()
    records = [json.loads(line) for line in daemon.log().splitlines() if line.startswith("{")]
    started = [r for r in records if r.get("event") == "image_started"]
    assert [r["image"] for r in started] == [image.tagged] * 2, "first pull and the restore"
    passes = [r for r in records if r.get("event") == "pass"]
    assert passes and passes[0]["counts"]["pulled"] == 1 and passes[0]["counts"]["desired"] == 1
    assert "pass done in" in passes[0]["message"] and passes[-1]["counts"]["ready"] == 1


def test_sigterm_exits_cleanly(
    volume: ConfigMapVolume, registry: Registry, containerd: Containerd, repo: str, start_daemon
) -> None:
    image = push_image(registry, repo, "1", (NODE,))
    volume.write(listing(registry, [image.tagged]))
    daemon = start_daemon(volume.path)
    daemon.wait_for(lambda: daemon.get("/readyz")[0] == 200, 30, "readiness")

    code = daemon.terminate(timeout=10)

    log = daemon.log()
    assert code == 0, log
    assert "Task was destroyed" not in log and "Traceback" not in log, log
    assert '"event": "stop"' in log


def test_bad_config_at_start_exits_2(tmp_path: Path, containerd: Containerd) -> None:
    config = tmp_path / "preload.yaml"
    config.write_text("images:\n  - nginx\nresync: often\n")
    from tests.harness.agent import run_agent

    result = run_agent(
        "run",
        "--config",
        str(config),
        "--cri-endpoint",
        containerd.endpoint,
        "--listen",
        "127.0.0.1:0",
    )

    assert result.code == 2, result
    assert f"{config}:3:" in result.stderr


def test_a_real_prometheus_scrapes_the_agent_and_answers_promql(
    tmp_path: Path,
    volume: ConfigMapVolume,
    registry: Registry,
    containerd: Containerd,
    repo: str,
    start_daemon,
) -> None:
    image = push_image(registry, repo, "1", (NODE,))
    volume.write(listing(registry, [image.tagged]))
    daemon = start_daemon(volume.path)
    daemon.wait_for(lambda: daemon.get("/readyz")[0] == 200, 30, "readiness")
    try:
        prometheus = Prometheus(tmp_path / "prometheus", [f"127.0.0.1:{daemon.port}"]).start()
    except HarnessError as exc:
        pytest.fail(f"cannot start prometheus: {exc}", pytrace=False)
    try:
        query = (
            "prepull_images_ready == prepull_images_desired and on(instance) "
            f'prepull_image_ready{{image="{image.tagged}"}} == 1'
        )
        daemon.wait_for(lambda: len(prometheus.query(query)) == 1, 60, "Prometheus to scrape")
        (misses,) = prometheus.query('sum(prepull_cache_misses_total{job="prepull"})')
        assert misses["value"][1] == "1"  # type: ignore[index]
        (up,) = prometheus.query('up{job="prepull"}')
        assert up["value"][1] == "1"  # type: ignore[index]
        # Every dashboard panel and every alert rule is valid PromQL over the agent's real
        # series; the panels that summarize the fleet answer with data (0, never "No data").
        dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                expr = target["expr"].replace("$node", ".*")
                expr = expr.replace("$__rate_interval", "1m").replace("$__range", "5m")
                answer = prometheus.query(expr)
                if "or vector(0)" in expr:  # the fleet summaries say 0, never "No data"
                    assert answer, f"{panel['title']}: no data from {expr}"
                if panel["title"].startswith(("Fleet:", "Lists served:")):  # a row per node/list
                    assert answer, f"{panel['title']}: no data from {expr}"
        (ready,) = prometheus.query("sum(prepull_node_ready) or vector(0)")
        assert ready["value"][1] == "1"  # type: ignore[index]
        rules = yaml.safe_load((DEPLOY / "prometheus-rules.yaml").read_text())
        for rule in rules["groups"][0]["rules"]:
            assert prometheus.query(rule["expr"]) == [], f"{rule['alert']} fires on a good node"
    finally:
        prometheus.stop()


def test_a_node_ready_with_a_broken_entry_is_ready_in_every_signal(
    tmp_path: Path,
    volume: ConfigMapVolume,
    registry: Registry,
    containerd: Containerd,
    repo: str,
    start_daemon,
) -> None:
    """One definition of ready: a tag that does not exist fails for good, is reported and not
    waited for — so /readyz, prepull_node_ready and the last-success moment agree, and the
    never-converged alert stays quiet (its 3 hours taken as passed), on values a real Prometheus
    scraped."""
    image = push_image(registry, repo, "1", (NODE,))
    missing = f"{registry.host}/{repo}:never-pushed"
    volume.write(listing(registry, [image.tagged, missing]))
    daemon = start_daemon(volume.path)
    daemon.wait_for(lambda: daemon.get("/readyz")[0] == 200, 30, "readiness")
    try:
        prometheus = Prometheus(tmp_path / "prometheus", [f"127.0.0.1:{daemon.port}"]).start()
    except HarnessError as exc:
        pytest.fail(f"cannot start prometheus: {exc}", pytrace=False)
    try:
        daemon.wait_for(
            lambda: len(prometheus.query("prepull_node_ready == 1")) == 1, 60, "a scrape"
        )
        assert prometheus.query("prepull_images_failed_permanently == 1"), "the failure is said"
        assert prometheus.query("prepull_last_reconcile_success_timestamp_seconds > 0")
        rules = yaml.safe_load((DEPLOY / "prometheus-rules.yaml").read_text())
        (never,) = [r for r in rules["groups"][0]["rules"] if r["alert"] == "PrepullNeverConverged"]
        as_if_3h_passed = never["expr"].replace("> 3 * 3600", "> -1")
        assert as_if_3h_passed != never["expr"]
        assert prometheus.query(as_if_3h_passed) == [], "never-converged fires on a ready node"
    finally:
        prometheus.stop()


def test_sigterm_during_a_slow_pull_exits_within_the_grace_period(
    volume: ConfigMapVolume, registry: Registry, containerd: Containerd, repo: str, start_daemon
) -> None:
    # 4 MiB through a proxy that holds every 16 KiB for 50 ms: a pull of ~13 s.
    with slow_listed_image(registry, containerd, volume, repo, 4 << 20, delay=0.05):
        daemon = start_daemon(volume.path, "--shutdown-grace", "1")
        daemon.wait_for(
            lambda: '"state": "pulling"' in daemon.get("/status")[1], 30, "the pull to be in flight"
        )

        started = time.monotonic()
        code = daemon.terminate(timeout=20)
        took = time.monotonic() - started

    log = daemon.log()
    assert code == 0, log
    assert took < 8, f"shutdown took {took:.1f}s with a 1s grace period"
    assert "shutting down" in log and '"event": "stop"' in log, log
    assert "Task was destroyed" not in log and "Traceback" not in log, log


def test_a_slow_pull_shows_its_bytes_growing_in_status_metrics_and_log(
    volume: ConfigMapVolume, registry: Registry, containerd: Containerd, repo: str, start_daemon
) -> None:
    # 4 MiB through a proxy that holds every 16 KiB for 20 ms: a pull of several seconds.
    with slow_listed_image(registry, containerd, volume, repo, 4 << 20, delay=0.02) as slow:
        daemon = start_daemon(volume.path, "--progress-log-interval", "1")
        seen: list[dict[str, int]] = []

        def pull_state() -> bool:
            (image,) = json.loads(daemon.get("/status")[1])["images"]
            if image["state"] == "pulling" and image["pull"] and image["pull"]["bytes_done"]:
                seen.append(image["pull"])
            return len({s["bytes_done"] for s in seen}) >= 2

        daemon.wait_for(pull_state, 60, "/status to show the pull's bytes growing")
        in_flight = daemon.metric("prepull_pull_bytes_in_flight")
        table = run_agent("status", "--endpoint", daemon.url, "--no-trunc")
        daemon.wait_for(lambda: daemon.get("/readyz")[0] == 200, 90, "the pull to finish")

    first, last = seen[0], seen[-1]
    assert 0 < first["bytes_done"] < last["bytes_done"] <= last["bytes_total"], seen
    # The layer and the config, as the platform manifest lists them.
    assert 4 << 20 < last["bytes_total"] < (4 << 20) + 4096, seen
    assert last["bytes_per_second"] > 0 and last["seconds"] > 0, seen
    assert in_flight is not None and in_flight > 0
    row = next(line for line in table.stdout.splitlines() if line.startswith(slow))
    assert " pulling " in row and "pulling: " in row and " of " in row, table.stdout
    daemon.wait_for(
        lambda: daemon.metric("prepull_pull_bytes_in_flight") == 0, 5, "the gauge to drop to 0"
    )
    (image,) = json.loads(daemon.get("/status")[1])["images"]
    assert image["state"] == "present" and image["pull"] is None, image
    progress = [line for line in daemon.log().splitlines() if '"image_progress"' in line]
    assert progress, daemon.log()
    record = json.loads(progress[-1])
    assert record["image"] == slow and 0 < record["bytes_done"] <= record["bytes_total"], record
    assert " of " in record["message"] and "/s" in record["message"], record


def test_pod_starts_are_counted_as_cache_hits_and_misses(
    volume: ConfigMapVolume, registry: Registry, containerd: Containerd, repo: str, start_daemon
) -> None:
    preloaded = push_runnable(registry, f"{repo}-hot", "1", ["/bin/busybox", "sleep", "600"])
    cold = push_runnable(registry, f"{repo}-cold", "1", ["/bin/busybox", "sleep", "600"])
    volume.write(listing(registry, [preloaded.tagged]))
    daemon = start_daemon(volume.path, "--container-scan-interval", "0.2")
    daemon.wait_for(lambda: daemon.get("/readyz")[0] == 200, 30, "readiness")
    pods = []
    try:
        # A pod whose image the agent preloaded: kubelet would find it and start at once.
        hot_config = sandbox_config("hot")
        pods.append(run_pod(containerd.endpoint, hot_config))
        start_container(containerd.endpoint, pods[-1], hot_config, preloaded.tagged)
        daemon.wait_for(
            lambda: daemon.metric("prepull_container_starts_total", cache="hit") == 1,
            30,
            "the preloaded start to count as a hit",
        )
        # A pod whose image is not preloaded: kubelet creates the sandbox, pulls, then starts.
        cold_config = sandbox_config("cold")
        pods.append(run_pod(containerd.endpoint, cold_config))
        pull(containerd, cold.tagged)
        start_container(containerd.endpoint, pods[-1], cold_config, cold.tagged)
        daemon.wait_for(
            lambda: daemon.metric("prepull_container_starts_total", cache="miss") == 1,
            30,
            "the cold start to count as a miss",
        )
        assert daemon.metric("prepull_container_starts_total", cache="hit") == 1
    finally:
        for pod in pods:
            remove_pod(containerd.endpoint, pod)


def test_an_unreachable_runtime_makes_the_agent_unhealthy_and_says_why(
    tmp_path: Path, volume: ConfigMapVolume, registry: Registry
) -> None:
    volume.write(listing(registry, [f"{registry.host}/x/y:1"]))
    endpoint = f"unix://{tmp_path}/no-such.sock"
    daemon = DaemonProc(volume.path, endpoint, healthy=False)
    try:
        started = time.monotonic()
        code, text = daemon.get("/healthz")
        assert code == 503 and endpoint in text, text
        # One short, unretried call, and the reason is never empty.
        assert time.monotonic() - started < 3
        reason = text.split("is unavailable: ", 1)[1].strip()
        assert "nothing listens there (no such socket)" in reason, text
        assert daemon.get("/readyz")[0] == 503
        daemon.wait_for(
            lambda: json.loads(daemon.get("/status")[1])["last_error"] is not None,
            30,
            "the failed pass to be reported",
        )
        assert endpoint in json.loads(daemon.get("/status")[1])["last_error"]
    finally:
        assert daemon.terminate() == 0


def test_every_counter_moves_exactly_as_the_situation_says(
    volume: ConfigMapVolume, registry: Registry, containerd: Containerd, repo: str, start_daemon
) -> None:
    """Passes are driven one at a time (SIGHUP reloads and converges; resync is an hour), so
    every counter's delta is exact: a pull, hits, a refusal, a permanent 404, a real eviction,
    and a tag someone moved (drift, not an eviction)."""
    other = "linux/arm64" if NODE != "linux/arm64" else "linux/amd64"
    good = push_image(registry, repo, "1", (NODE,))
    foreign = push_single(registry, f"{repo}/foreign", "1", other)
    missing = f"{registry.host}/{repo}/missing:1"
    volume.write(listing(registry, [good.tagged, foreign.tagged, missing], "resync: 1h\n"))
    daemon = start_daemon(volume.path)
    passes = 1

    def next_pass() -> None:
        nonlocal passes
        passes += 1
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for(
            lambda: daemon.metric("prepull_reconcile_duration_seconds_count") == passes,
            30,
            f"pass {passes}",
        )

    def counters() -> dict[str, float | None]:
        return {
            "pulled": daemon.metric("prepull_pulls_total", result="success"),
            "pull_failed": daemon.metric("prepull_pulls_total", result="failure"),
            "pull_seconds": daemon.metric("prepull_pull_duration_seconds_count"),
            "hits": daemon.metric("prepull_cache_hits_total"),
            "misses": daemon.metric("prepull_cache_misses_total"),
            "refusals": daemon.metric("prepull_refusals_total"),
            "evictions": daemon.metric("prepull_evictions_total"),
            "drift": daemon.metric("prepull_tag_drift_total"),
            "failed_permanently": daemon.metric("prepull_images_failed_permanently"),
            "node_ready": daemon.metric("prepull_node_ready"),
        }

    daemon.wait_for(
        lambda: daemon.metric("prepull_reconcile_duration_seconds_count") == 1, 30, "pass 1"
    )
    assert counters() == {
        "pulled": 1, "pull_failed": 0, "pull_seconds": 1, "hits": 0, "misses": 1,
        "refusals": 1, "evictions": 0, "drift": 0, "failed_permanently": 2, "node_ready": 1,
    }  # fmt: skip
    code, text = daemon.get("/readyz")
    assert code == 200 and "2 failed permanently" in text and missing in text, text

    next_pass()  # nothing changed: a hit, the same refusal, no pulls, no eviction
    assert counters() == {
        "pulled": 1, "pull_failed": 0, "pull_seconds": 1, "hits": 1, "misses": 1,
        "refusals": 2, "evictions": 0, "drift": 0, "failed_permanently": 2, "node_ready": 1,
    }  # fmt: skip

    remove_image(containerd, good.tagged)  # kubelet's image GC, or `crictl rmi`
    next_pass()
    assert counters() == {
        "pulled": 2, "pull_failed": 0, "pull_seconds": 2, "hits": 1, "misses": 2,
        "refusals": 3, "evictions": 1, "drift": 0, "failed_permanently": 2, "node_ready": 1,
    }  # fmt: skip

    # Someone points the tag at other content on the node: drift, not an eviction.
    moved = push_image(registry, f"{repo}/moved", "1", (NODE,))
    pull(containerd, moved.tagged)
    containerd.ctr("images", "tag", "--force", moved.tagged, good.tagged)
    next_pass()
    after = counters()
    assert after["drift"] == 1 and after["evictions"] == 1, after
    assert image_status(containerd, good.tagged).id == good.configs[NODE]  # type: ignore[union-attr]


def _slow_image(
    registry: Registry, containerd: Containerd, repo: str
) -> tuple[SlowProxy, str, str]:
    """16 MiB behind a proxy that holds every 16 KiB for 50 ms (a pull of ~50 s): the proxy,
    the image's reference through it, and the list's registry settings (no resync for an hour)."""
    proxy = SlowProxy(registry.port, delay=0.05).start()
    push_image(registry, f"{repo}/slow", "1", (NODE,), layer_bytes=16 << 20)
    containerd.trust_http_registry(proxy.host)
    settings = f"registries:\n  {proxy.host}:\n    insecure: true\n"
    settings += f"  {registry.host}:\n    insecure: true\nresync: 1h\n"
    return proxy, f"{proxy.host}/{repo}/slow:1", settings


def test_a_new_list_takes_effect_within_the_watch_interval_while_a_long_pull_is_in_flight(
    volume: ConfigMapVolume, registry: Registry, containerd: Containerd, repo: str, start_daemon
) -> None:
    proxy, slow, settings = _slow_image(registry, containerd, repo)
    try:
        fast = [push_image(registry, f"{repo}/fast{i}", "1", (NODE,)).tagged for i in range(2)]
        volume.write(f"images:\n  - {slow}\n{settings}")
        daemon = start_daemon(volume.path, "--shutdown-grace", "1", "--watch-interval", "0.5")
        daemon.wait_for(
            lambda: '"state": "pulling"' in daemon.get("/status")[1], 30, "the slow pull to start"
        )

        # The slow image stays listed and a new one is added: the new list is adopted at once,
        # the slow pull goes on undisturbed, and the new image arrives at once — except on a
        # runtime with the concurrent-pull crash, where pulls wait for each other.
        volume.write(f"images:\n  - {slow}\n  - {fast[0]}\n{settings}")
        started = time.monotonic()
        daemon.wait_for(lambda: "new list adopted mid-pass" in daemon.log(), 5, "adoption")
        if not containerd.release.races_on_parallel_pulls:
            daemon.wait_for(lambda: image_status(containerd, fast[0]) is not None, 15, "fast[0]")
        assert time.monotonic() - started < 5, "a new list waited for the pull in flight"
        states = {i["image"]: i["state"] for i in json.loads(daemon.get("/status")[1])["images"]}
        assert states[slow] == "pulling", states
        assert daemon.get("/healthz")[0] == 200, "probes answer during the pull"

        # The slow image is dropped: its pull is cancelled, the rest of the list converges.
        volume.write(f"images:\n  - {fast[1]}\n{settings}")
        started = time.monotonic()
        daemon.wait_for(lambda: daemon.get("/readyz")[0] == 200, 15, "the new list to converge")
        assert time.monotonic() - started < 5
        assert image_status(containerd, fast[1]) is not None
        assert image_status(containerd, slow) is None, "the dropped pull should not complete"
        status = json.loads(daemon.get("/status")[1])
        assert [i["image"] for i in status["images"]] == [fast[1]]
        assert "Traceback" not in daemon.log()
    finally:
        proxy.stop()


def test_each_image_is_reported_as_it_finishes_while_a_long_pull_is_in_flight(
    volume: ConfigMapVolume, registry: Registry, containerd: Containerd, repo: str, start_daemon
) -> None:
    # Beside the slow image, one already present and a tag that does not exist: both are known
    # within moments.
    proxy, slow, settings = _slow_image(registry, containerd, repo)
    try:
        present = push_image(registry, f"{repo}/here", "1", (NODE,))
        pull(containerd, present.by_digest())
        missing = f"{registry.host}/{repo}/gone:never-pushed"
        here = present.by_digest()
        volume.write(f"images:\n  - {slow}\n  - {here}\n  - {missing}\n{settings}")
        daemon = start_daemon(volume.path, "--shutdown-grace", "1")

        def states() -> dict[str, str]:
            images = json.loads(daemon.get("/status")[1])["images"]
            return {i["image"]: i["state"] for i in images}

        daemon.wait_for(
            lambda: states()[missing] == "failed" and states()[here] == "present",
            30,
            "the missing tag failed and the present image present, mid-pass",
        )
        assert states()[slow] in ("pending", "pulling"), "the slow image is still on its way"
        assert f"{missing} failed" in daemon.log(), "logged when known, not at the pass's end"
        assert daemon.metric("prepull_images_ready") == 1
        assert "pass done" not in daemon.log()
    finally:
        proxy.stop()


def test_status_command_shows_the_daemons_view_as_a_table_and_as_json(
    volume: ConfigMapVolume, registry: Registry, containerd: Containerd, repo: str, start_daemon
) -> None:
    image = push_image(registry, repo, "1", (NODE,))
    missing = f"{registry.host}/{repo}:never-pushed"
    volume.write(listing(registry, [image.tagged, missing]))
    daemon = start_daemon(volume.path)
    daemon.wait_for(lambda: daemon.get("/readyz")[0] == 200, 30, "readiness")

    table = run_agent("status", "--endpoint", daemon.url)
    as_json = run_agent("status", "--endpoint", daemon.url, "-o", "json")

    assert table.code == 0 and as_json.code == 0, (table, as_json)
    lines = table.stdout.splitlines()
    assert lines[0].startswith(f"platform {NODE}  READY  runtime "), lines[0]
    assert lines[1].split() == [
        "IMAGE",
        "STATE",
        "DIGEST",
        "SIZE",
        "PINNED",
        "PULL",
        "TOOK",
        "DETAIL",
    ]
    present = next(line for line in lines if line.startswith(image.tagged + " "))
    assert "present" in present and image.digest in present, present
    failed = next(line for line in lines if line.startswith(missing))
    assert "failed" in failed and "not found" in failed, failed
    assert lines[1].index("STATE") == present.index("present"), "columns line up"
    document = json.loads(as_json.stdout)
    assert document["ready"] is True and document == json.loads(daemon.get("/status")[1]) | {
        "last_reconcile": document["last_reconcile"]
    }
    unreachable = run_agent("status", "--endpoint", "http://127.0.0.1:1")
    assert unreachable.code == 1 and "is the daemon running there?" in unreachable.stderr
