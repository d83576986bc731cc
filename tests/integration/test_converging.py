"""A list change is not an outage: a daemon that served a complete list stays ready while it
converges to a newer one (/readyz, /status, metrics say converging), on real containerd and a
registry behind a slow link; `once` exits by the same rule."""

from __future__ import annotations

import json
import os
from pathlib import Path

from agent.core.images import platform as platforms
from tests.harness.agent import once, write_config
from tests.harness.containerd import Containerd
from tests.harness.daemon import ConfigMapVolume, listing
from tests.harness.images import push_image
from tests.harness.registry import Registry
from tests.harness.slowproxy import SlowProxy

NODE = str(platforms.detect())


def test_a_daemon_whose_list_gains_a_slow_image_stays_ready_while_it_converges(
    volume: ConfigMapVolume, registry: Registry, containerd: Containerd, repo: str, start_daemon
) -> None:
    fast = push_image(registry, repo + "/fast", "1", (NODE,))
    slow = push_image(registry, repo + "/slow", "1", (NODE,), layer_bytes=3 << 20)
    proxy = SlowProxy(registry.port, delay=0.05).start()  # 16 KiB every 50 ms: some 10 s
    try:
        containerd.trust_http_registry(proxy.host)
        through = f"{proxy.host}/{slow.repo}:1@{slow.digest}"
        registries = f"  {proxy.host}:\n    insecure: true\n"
        volume.write(listing(registry, [fast.pinned()], "resync: 1h\n"))
        daemon = start_daemon(volume.path, "--converge-deadline", "600")
        daemon.wait_for(lambda: daemon.get("/readyz")[0] == 200, 60, "readiness")
        served = json.loads(daemon.get("/status")[1])["served_list"]

        volume.write(listing(registry, [fast.pinned(), through], registries + "resync: 1h\n"))
        answers: list[tuple[int, str]] = []

        seen: dict[str, object] = {}

        def converging() -> bool:
            """/readyz, /status and the metrics all say converging, read back to back."""
            answers.append(daemon.get("/readyz"))
            status = json.loads(daemon.get("/status")[1])
            metrics = (daemon.metric("prepull_converging"), daemon.metric("prepull_node_ready"))
            said = "converging to" in answers[-1][1] and metrics == (1, 1)
            seen.update(status=status)
            return said and status["converging"] is not None and status["ready"]

        daemon.wait_for(converging, 30, "/readyz, /status and metrics to say converging")
        status = seen["status"]
        assert isinstance(status, dict)
        moving = status["converging"]
        assert moving["from"] == served and moving["to"] == status["config"]["digest"] != served
        assert moving["desired"] == 2 and moving["overdue"] is False and moving["since"], moving

        def done() -> bool:
            answers.append(daemon.get("/readyz"))
            status = json.loads(daemon.get("/status")[1])
            return status["converging"] is None and status["served_list"] != served

        daemon.wait_for(done, 120, "the slow image to arrive")
        assert all(code == 200 for code, _ in answers), [a for a in answers if a[0] != 200][:3]
        assert daemon.metric("prepull_converging") == 0
        assert "converging to list" in daemon.log()
    finally:
        proxy.stop()


def test_once_exits_by_the_daemons_rule_and_strict_wants_every_entry(
    tmp_path: Path, registry: Registry, containerd: Containerd, repo: str
) -> None:
    """The README's own example: an entry for another platform only, refused on this node."""
    here = push_image(registry, repo + "/here", "1", (NODE,))
    other = "linux/s390x" if NODE != "linux/s390x" else "linux/ppc64le"
    elsewhere = push_image(registry, repo + "/elsewhere", "1", (other,))
    config = write_config(tmp_path / "p.yaml", registry, [here.pinned(), elsewhere.pinned()])

    result = once(containerd, config)

    assert result.code == 0, result
    assert result.line_for(elsewhere.pinned()).startswith("refused"), result.stdout
    assert f"ready on {NODE}: 1 of 2 refused for good, not waited for" in result.stdout, result
    strict = once(containerd, config, "--strict")
    assert strict.code == 1 and f"not converged on {NODE}: 1 of 2 refused" in strict.stdout
    document = json.loads(once(containerd, config, "-o", "json").stdout)
    assert document["ready"] is True and document["converged"] is False
    assert os.path.basename(document["owner"]) == "p.yaml" and document["owner"].startswith("file:")
