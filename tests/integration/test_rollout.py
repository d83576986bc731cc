"""rollout.spread on a real daemon, containerd and registry: on a node that already serves, new
content waits for the node's moment — the same moment after a restart — without a registry
request, then is pulled; an evicted image is restored at once; a new node's first fill is not
delayed."""

from __future__ import annotations

import calendar
import json
import time
from typing import Any

from agent.core.engine.rollout import slot
from tests.harness.agent import NODE, image_status, once, remove_image, write_config
from tests.harness.containerd import Containerd
from tests.harness.daemon import ConfigMapVolume, DaemonProc
from tests.harness.images import push_image
from tests.harness.registry import Registry

SPREAD = 30.0
UNTIL = "waiting for its rollout slot until "


def node_waiting(digest: str, low: float, high: float) -> str:
    """A node name whose moment for `digest` is between `low` and `high` seconds from now."""
    now = time.time()
    return next(
        name
        for name in (f"node-{i}" for i in range(10_000))
        if low <= (slot(name, digest, SPREAD) - now) % SPREAD <= high
    )


def until(daemon: DaemonProc, index: int) -> float | None:
    """The wall-clock time /status says image `index` waits for, if it waits."""
    image = json.loads(daemon.get("/status")[1])["images"][index]
    if image["state"] != "deferred":
        return None
    assert image["last_error"].startswith(UNTIL), image
    assert image["last_error"].endswith("(rollout.spread 30s)"), image
    stamp = image["last_error"].removeprefix(UNTIL).split(" ")[0]
    return float(calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")))


def test_new_content_waits_for_the_nodes_moment_across_restarts_and_a_restore_does_not(
    volume: ConfigMapVolume,
    tmp_path: Any,
    registry: Registry,
    containerd: Containerd,
    repo: str,
    start_daemon: Any,
) -> None:
    serving = push_image(registry, repo + "/serving", "1", (NODE,))
    new = push_image(registry, repo + "/new", "1", (NODE,))
    # The node already serves: it holds an image of its list.
    assert (
        once(containerd, write_config(tmp_path / "s.yaml", registry, [serving.pinned()])).code == 0
    )
    node = node_waiting(new.digest, 12, 22)
    volume.write(
        f"images:\n  - {serving.pinned()}\n  - {new.pinned()}\nresync: 1s\n"
        f"rollout:\n  spread: 30s\nregistries:\n  {registry.host}:\n    insecure: true\n"
    )
    daemon = start_daemon(volume.path, "--node-name", node)
    daemon.wait_for(lambda: until(daemon, 1) is not None, 30, "the image to wait for its moment")
    due = until(daemon, 1)
    assert due is not None and time.time() < due <= time.time() + SPREAD
    # /status gives the moment to the second: on the slot within a second.
    off = (due - slot(node, new.digest, SPREAD)) % SPREAD
    assert min(off, SPREAD - off) < 1.01, f"the moment is {off:.2f}s off the node's slot"
    # The gauges follow at the pass's end, a moment after /status has the image.
    daemon.wait_for(
        lambda: daemon.metric("prepull_images_waiting_for_rollout") == 1, 30, "the gauge"
    )
    asked = daemon.metric("prepull_registry_request_duration_seconds_count", registry=registry.host)
    assert asked is None, "a node waiting for its moment asks the registry nothing"
    assert daemon.get("/readyz")[0] == 503, "not ready while the image is not there"
    assert f"{new.pinned()}: started" not in daemon.log(), "a waiting image is not started"
    assert "1 waiting for their rollout moment" in daemon.log()

    # A restart does not move the moment.
    daemon.terminate()
    daemon = start_daemon(volume.path, "--node-name", node)
    daemon.wait_for(lambda: until(daemon, 1) is not None, 30, "the restarted agent to wait")
    assert until(daemon, 1) == due

    daemon.wait_for(lambda: daemon.get("/readyz")[0] == 200, 60, "the pull at its moment")
    assert time.time() >= due - 1, "pulled before its moment"
    # The gauge follows at the end of the pass, a moment after /readyz: wait for that state.
    daemon.wait_for(
        lambda: daemon.metric("prepull_images_waiting_for_rollout") == 0, 30, "the gauge"
    )
    assert daemon.metric("prepull_images_waiting_for_rollout") == 0

    # Evicted (kubelet's image GC, crictl rmi): held before, so restored at the next pass.
    remove_image(containerd, new.tagged)
    remove_image(containerd, new.by_digest())
    daemon.wait_for(lambda: image_status(containerd, new.tagged) is not None, 30, "the restore")
    assert until(daemon, 1) is None


def test_a_new_nodes_first_fill_is_not_delayed(
    volume: ConfigMapVolume,
    registry: Registry,
    containerd: Containerd,
    repo: str,
    start_daemon: Any,
) -> None:
    image = push_image(registry, repo, "1", (NODE,))
    node = node_waiting(image.digest, 20, 29)
    due = time.time() + 20
    volume.write(
        f"images:\n  - {image.pinned()}\nresync: 1s\nrollout:\n  spread: 30s\n"
        f"registries:\n  {registry.host}:\n    insecure: true\n"
    )
    daemon = start_daemon(volume.path, "--node-name", node)
    daemon.wait_for(lambda: daemon.get("/readyz")[0] == 200, 60, "the first fill")
    assert time.time() < due, "a new node's first fill waited for a rollout moment"
    assert "rollout slot" not in daemon.log()
