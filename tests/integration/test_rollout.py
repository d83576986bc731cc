"""rollout.spread on a real daemon, containerd and registry: new content waits for this node's
moment without a registry request, then is pulled; an evicted image is restored at once."""

from __future__ import annotations

import json
import time
from typing import Any

from agent.rollout import slot
from tests.harness.containerd import Containerd
from tests.harness.daemon import ConfigMapVolume
from tests.harness.images import push_image
from tests.harness.registry import Registry
from tests.integration.conftest import NODE, image_status, remove_image

SPREAD = 30.0


def test_new_content_waits_for_the_nodes_moment_and_a_restore_does_not(
    volume: ConfigMapVolume,
    registry: Registry,
    containerd: Containerd,
    repo: str,
    start_daemon: Any,
) -> None:
    image = push_image(registry, repo, "1", (NODE,))
    # A node name whose moment for this digest falls 8-18 s into the 30 s window.
    node = next(
        name
        for name in (f"node-{i}" for i in range(10_000))
        if 8 <= slot(name, image.digest, SPREAD) <= 18
    )
    moment = slot(node, image.digest, SPREAD)
    volume.write(
        f"images:\n  - {image.pinned()}\nresync: 1s\nrollout:\n  spread: 30s\n"
        f"registries:\n  {registry.host}:\n    insecure: true\n"
    )
    started = time.monotonic()
    daemon = start_daemon(volume.path, "--node-name", node)
    daemon.wait_for(
        lambda: json.loads(daemon.get("/status")[1])["images"][0]["state"] == "deferred",
        30,
        "the image to wait for its moment",
    )
    waiting = json.loads(daemon.get("/status")[1])["images"][0]
    assert waiting["last_error"].startswith("waiting for its rollout slot until "), waiting
    assert waiting["last_error"].endswith("(rollout.spread 30s)"), waiting
    assert daemon.metric("prepull_images_waiting_for_rollout") == 1
    asked = daemon.metric("prepull_registry_request_duration_seconds_count", registry=registry.host)
    assert asked is None, "a node waiting for its moment asks the registry nothing"
    assert daemon.get("/readyz")[0] == 503, "not ready while the image is not there"

    daemon.wait_for(lambda: daemon.get("/readyz")[0] == 200, 60, "the pull at its moment")
    took = time.monotonic() - started
    assert moment - 1 <= took <= moment + 15, (moment, took)
    assert daemon.metric("prepull_images_waiting_for_rollout") == 0

    # Evicted (kubelet's image GC, crictl rmi): held before, so restored at the next pass.
    remove_image(containerd, image.tagged)
    remove_image(containerd, image.by_digest())
    evicted = time.monotonic()
    daemon.wait_for(lambda: image_status(containerd, image.tagged) is not None, 30, "the restore")
    assert time.monotonic() - evicted < min(moment, 8), "a restore waited for a rollout slot"
