"""Pins leave with their images: what this agent pinned and the list no longer names is
unpinned (so kubelet's image GC may reclaim it), by `once` and by the daemon; a pin anyone else
set is never touched. On real containerd, every line (1.6.20 keeps the labels but does not
report pins to kubelet: the labels are what is checked there)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from agent.core import platform as platforms
from tests.harness.containerd import Containerd
from tests.harness.daemon import ConfigMapVolume, listing
from tests.harness.images import PushedImage, push_image
from tests.harness.registry import Registry
from tests.integration.conftest import image_status, once, write_config

NODE = str(platforms.detect())
PIN = "io.cri-containerd.pinned=pinned"
OURS = "prepull.io/pinned=true"


def labels(containerd: Containerd, name: str) -> str:
    """The row of `ctr images ls` for the record `name`, labels last ("" if absent)."""
    rows = containerd.ctr("images", "ls").splitlines()
    return next((row for row in rows if row.startswith(name + " ")), "")


def _pinned(containerd: Containerd, name: str) -> bool:
    """What kubelet's image GC asks: whether CRI reports the image `name` pinned."""
    seen = image_status(containerd, name)
    assert seen is not None, f"{name} is gone"
    return seen.pinned


def eventually(check: Callable[[], bool], seconds: float = 10.0) -> bool:
    """Whether `check` holds within `seconds` (asked again every 50 ms)."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def pinned_by_someone_else(
    tmp_path: Path, registry: Registry, containerd: Containerd, image: PushedImage
) -> None:
    """Pulled without a pin, then pinned by hand, as an operator or a node image baker does."""
    config = write_config(tmp_path / "theirs.yaml", registry, [image.pinned()], "pin: false\n")
    assert once(containerd, config).code == 0
    containerd.ctr("images", "label", image.tagged, PIN)


def test_once_unpins_what_left_the_list_and_never_a_pin_it_did_not_set(
    tmp_path: Path, registry: Registry, containerd: Containerd, repo: str
) -> None:
    kept = push_image(registry, repo + "/kept", "1", (NODE,))
    dropped = push_image(registry, repo + "/dropped", "1", (NODE,))
    theirs = push_image(registry, repo + "/theirs", "1", (NODE,))
    pinned_by_someone_else(tmp_path, registry, containerd, theirs)
    both = write_config(tmp_path / "both.yaml", registry, [kept.pinned(), dropped.pinned()])
    assert once(containerd, both).code == 0
    for image in (kept, dropped):
        assert PIN in labels(containerd, image.tagged) and OURS in labels(containerd, image.tagged)

    result = once(containerd, write_config(tmp_path / "kept.yaml", registry, [kept.pinned()]))

    assert result.code == 0, result
    assert f"unpinned {dropped.tagged}" in result.stdout, result.stdout
    assert theirs.tagged not in result.stdout and f"unpinned {kept.tagged}" not in result.stdout
    gone = labels(containerd, dropped.tagged)
    assert gone and PIN not in gone and OURS not in gone, gone
    assert PIN in labels(containerd, kept.tagged)
    assert PIN in labels(containerd, theirs.tagged) and OURS not in labels(
        containerd, theirs.tagged
    )
    if containerd.release.honours_pins:
        # CRI learns of label changes from containerd's event stream, a moment later.
        assert eventually(lambda: not _pinned(containerd, dropped.tagged)), "still pinned"
        assert _pinned(containerd, theirs.tagged)

    again = once(containerd, write_config(tmp_path / "kept2.yaml", registry, [kept.pinned()]))
    assert "unpinned" not in again.stdout, "released once"


def test_the_daemon_unpins_an_image_when_the_list_drops_it(
    volume: ConfigMapVolume, registry: Registry, containerd: Containerd, repo: str, start_daemon
) -> None:
    kept = push_image(registry, repo + "/kept", "1", (NODE,))
    dropped = push_image(registry, repo + "/dropped", "1", (NODE,))
    volume.write(listing(registry, [kept.pinned(), dropped.pinned()], "resync: 1h\n"))
    daemon = start_daemon(volume.path, "--watch-interval", "0.2")
    daemon.wait_for(lambda: daemon.get("/readyz")[0] == 200, 60, "readiness")
    assert OURS in labels(containerd, dropped.tagged)
    # The first pass released what earlier tests pinned on this shared containerd.
    before = daemon.metric("prepull_images_unpinned_total") or 0

    volume.write(listing(registry, [kept.pinned()], "resync: 1h\n"))
    daemon.wait_for(
        lambda: daemon.metric("prepull_images_unpinned_total") == before + 1,
        30,
        "the pin's release",
    )
    gone = labels(containerd, dropped.tagged)
    assert PIN not in gone and OURS not in gone, gone
    assert PIN in labels(containerd, kept.tagged)
    released = json.loads(daemon.get("/status")[1])["released_pins"]
    assert released["images"] == [dropped.tagged], released
    assert f"{dropped.tagged}: pin released, no longer listed" in daemon.log()
