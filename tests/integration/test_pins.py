"""Pins leave with their images: what this agent pinned and the list no longer names is
unpinned (so kubelet's image GC may reclaim it), by `once` and by the daemon; a pin anyone else
set is never touched. On real containerd, every line (1.6.20 keeps the labels but does not
report pins to kubelet: the labels are what is checked there)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from agent.core.engine.claims import owner_key
from agent.core.images import platform as platforms
from tests.harness.agent import image_status, once, run_agent, write_config
from tests.harness.containerd import Containerd
from tests.harness.daemon import ConfigMapVolume, DaemonProc, listing
from tests.harness.images import PushedImage, push_image
from tests.harness.registry import Registry

NODE = str(platforms.detect())
PIN = "io.cri-containerd.pinned=pinned"
LIST = "test:one-list"
OURS = f"{owner_key(LIST)}={LIST}"
FOREIGN = "prepull.io/foreign-pin=true"


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
    assert once(containerd, both, "--owner", LIST).code == 0
    for image in (kept, dropped):
        assert PIN in labels(containerd, image.tagged) and OURS in labels(containerd, image.tagged)

    kept_only = write_config(tmp_path / "kept.yaml", registry, [kept.pinned()])
    result = once(containerd, kept_only, "--owner", LIST)

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

    again = once(containerd, kept_only, "--owner", LIST)
    assert "unpinned" not in again.stdout, "released once"


def test_the_daemon_unpins_an_image_when_the_list_drops_it(
    volume: ConfigMapVolume, registry: Registry, containerd: Containerd, repo: str, start_daemon
) -> None:
    kept = push_image(registry, repo + "/kept", "1", (NODE,))
    dropped = push_image(registry, repo + "/dropped", "1", (NODE,))
    volume.write(listing(registry, [kept.pinned(), dropped.pinned()], "resync: 1h\n"))
    daemon = start_daemon(volume.path, "--watch-interval", "0.2", "--owner", LIST)
    daemon.wait_for(lambda: daemon.get("/readyz")[0] == 200, 60, "readiness")
    assert OURS in labels(containerd, dropped.tagged)
    # The first pass may have released what earlier tests' `--owner LIST` runs pinned.
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


def holders(containerd: Containerd, name: str) -> list[str]:
    """The owners whose claims the record `name` carries, by name."""
    row = labels(containerd, name)
    return sorted(
        part.partition("=")[2]
        for part in row.split()[-1].split(",")
        if part.startswith("prepull.io/owner.")
    )


def released_kept(daemon: DaemonProc) -> dict[str, list[str]]:
    pins = json.loads(daemon.get("/status")[1])["released_pins"] or {}
    return pins.get("kept") or {}


def test_two_daemons_keep_each_others_pins_through_list_changes_and_restarts(
    tmp_path: Path, registry: Registry, containerd: Containerd, repo: str, start_daemon
) -> None:
    shared = push_image(registry, repo + "/shared", "1", (NODE,))
    a_only = push_image(registry, repo + "/a", "1", (NODE,))
    b_only = push_image(registry, repo + "/b", "1", (NODE,))
    third = push_image(registry, repo + "/third", "1", (NODE,))
    vol_a, vol_b = ConfigMapVolume(tmp_path / "a"), ConfigMapVolume(tmp_path / "b")
    vol_a.write(listing(registry, [shared.pinned(), a_only.pinned()], "resync: 1h\n"))
    vol_b.write(listing(registry, [shared.pinned(), b_only.pinned()], "resync: 1h\n"))
    team_a = start_daemon(vol_a.path, "--owner", "team-a")
    team_b = start_daemon(vol_b.path, "--owner", "team-b")
    for daemon in (team_a, team_b):
        daemon.wait_for(lambda d=daemon: d.get("/readyz")[0] == 200, 60, "readiness")
    assert eventually(lambda: holders(containerd, shared.tagged) == ["team-a", "team-b"]), labels(
        containerd, shared.tagged
    )
    assert holders(containerd, a_only.tagged) == ["team-a"]
    assert holders(containerd, b_only.tagged) == ["team-b"]

    # team-a drops the shared image: team-b still lists it, so the pin stays, and says for whom.
    vol_a.write(listing(registry, [a_only.pinned()], "resync: 1h\n"))
    team_a.wait_for(lambda: shared.tagged in released_kept(team_a), 30, "team-a's release")
    assert released_kept(team_a)[shared.tagged] == ["team-b"]
    assert PIN in labels(containerd, shared.tagged)
    assert holders(containerd, shared.tagged) == ["team-b"]

    # team-b restarts: its first pass releases nothing of team-a's.
    team_b.terminate()
    team_b = start_daemon(vol_b.path, "--owner", "team-b")
    team_b.wait_for(lambda: team_b.get("/readyz")[0] == 200, 60, "readiness after restart")
    assert holders(containerd, a_only.tagged) == ["team-a"] and PIN in labels(
        containerd, a_only.tagged
    )

    # An operator's `once` with a third list (its own owner: its file) releases none of theirs.
    debug = write_config(tmp_path / "debug.yaml", registry, [third.pinned()])
    result = once(containerd, debug)
    assert result.code == 0, result
    assert "unpinned" not in result.stdout and "released" not in result.stdout, result.stdout
    for image, owner in ((shared, "team-b"), (a_only, "team-a"), (b_only, "team-b")):
        assert PIN in labels(containerd, image.tagged), image.tagged
        assert owner in holders(containerd, image.tagged), labels(containerd, image.tagged)

    # The last holder lets go: the pin goes, kubelet's image GC may reclaim the image.
    vol_b.write(listing(registry, [b_only.pinned()], "resync: 1h\n"))
    team_b.wait_for(
        lambda: PIN not in labels(containerd, shared.tagged), 30, "the shared pin's release"
    )
    assert holders(containerd, shared.tagged) == []
    assert f"{shared.tagged}: pin released, no longer listed" in team_b.log()


def test_a_hand_pin_on_an_image_a_list_names_then_drops_outlives_the_list(
    tmp_path: Path, registry: Registry, containerd: Containerd, repo: str
) -> None:
    """Both ways a hand pin comes: on a record CRI made (pulled by a kubelet or an agent), and
    on one `ctr` pulled or imported (air-gapped nodes), which containerd's CRI rewrites when it
    pulls the same name (1.6 replaces every label)."""
    by_cri = push_image(registry, repo + "/by-cri", "1", (NODE,))
    by_ctr = push_image(registry, repo + "/by-ctr", "1", (NODE,))
    pinned_by_someone_else(tmp_path, registry, containerd, by_cri)
    containerd.ctr("images", "pull", "--plain-http", by_ctr.by_digest())
    containerd.ctr("images", "label", by_ctr.by_digest(), PIN)
    names = [by_cri.pinned(), by_ctr.by_digest()]
    listed = write_config(tmp_path / "listed.yaml", registry, names)
    assert once(containerd, listed, "--owner", LIST).code == 0
    for name in (by_cri.tagged, by_ctr.by_digest()):
        row = labels(containerd, name)
        assert PIN in row and FOREIGN in row and OURS in row, row

    filler = push_image(registry, repo + "/filler", "1", (NODE,))
    others = write_config(tmp_path / "others.yaml", registry, [filler.pinned()])
    dropped = once(containerd, others, "--owner", LIST)

    assert dropped.code == 0, dropped
    assert "unpinned" not in dropped.stdout, dropped.stdout
    assert f"released {by_cri.tagged}  (no longer listed; still pinned for foreign pin)" in (
        dropped.stdout
    )
    for name in (by_cri.tagged, by_ctr.by_digest()):
        row = labels(containerd, name)
        assert PIN in row and FOREIGN in row and OURS not in row, row
    if containerd.release.honours_pins:
        assert _pinned(containerd, by_cri.tagged)


def test_pins_of_agents_before_owners_are_adopted_when_listed_and_kept_when_not(
    tmp_path: Path, registry: Registry, containerd: Containerd, repo: str
) -> None:
    listed = push_image(registry, repo + "/listed", "1", (NODE,))
    other = push_image(registry, repo + "/other", "1", (NODE,))
    for image in (listed, other):
        config = write_config(tmp_path / "old.yaml", registry, [image.pinned()], "pin: false\n")
        assert once(containerd, config).code == 0
        containerd.ctr("images", "label", image.tagged, PIN, "prepull.io/pinned=true")

    mine = write_config(tmp_path / "mine.yaml", registry, [listed.pinned()])
    assert once(containerd, mine, "--owner", LIST).code == 0

    row = labels(containerd, listed.tagged)
    assert PIN in row and OURS in row and "prepull.io/pinned=true" not in row, row
    assert "prepull.io/pinned=true" in labels(containerd, other.tagged), "not ours to adopt"
    filler = push_image(registry, repo + "/filler", "1", (NODE,))
    others = write_config(tmp_path / "others.yaml", registry, [filler.pinned()])
    result = once(containerd, others, "--owner", LIST)
    assert f"unpinned {listed.tagged}" in result.stdout, result.stdout
    assert PIN not in labels(containerd, listed.tagged)
    assert PIN in labels(containerd, other.tagged), "an earlier agent's pin no one adopted"


def test_an_owner_that_is_gone_is_released_by_hand_and_no_one_elses_pin_goes(
    tmp_path: Path, registry: Registry, containerd: Containerd, repo: str
) -> None:
    retired = push_image(registry, repo + "/retired", "1", (NODE,))
    shared = push_image(registry, repo + "/shared", "1", (NODE,))
    old = write_config(tmp_path / "old.yaml", registry, [retired.pinned(), shared.pinned()])
    assert once(containerd, old, "--owner", "retired-list").code == 0
    current = write_config(tmp_path / "current.yaml", registry, [shared.pinned()])
    assert once(containerd, current, "--owner", "current-list").code == 0
    endpoint = ("--cri-endpoint", containerd.endpoint)

    listed = run_agent("pins", *endpoint, "--owner", "retired-list")
    assert listed.code == 0, listed
    assert retired.tagged in listed.stdout and shared.tagged in listed.stdout, listed.stdout
    as_json = json.loads(
        run_agent("pins", *endpoint, "--owner", "retired-list", "-o", "json").stdout
    )
    assert sorted(p["image"] for p in as_json["pins"]) == sorted([retired.tagged, shared.tagged])
    dry = run_agent("release", *endpoint, "--owner", "retired-list", "--dry-run")
    assert f"would release {shared.tagged}  (still pinned for current-list)" in dry.stdout, dry
    assert holders(containerd, retired.tagged) == ["retired-list"], "a dry run changes nothing"

    result = run_agent("release", *endpoint, "--owner", "retired-list")

    assert result.code == 0, result
    assert f"unpinned {retired.tagged}" in result.stdout, result.stdout
    assert f"released {shared.tagged}  (released by hand; still pinned for current-list)" in (
        result.stdout
    )
    assert PIN not in labels(containerd, retired.tagged)
    assert PIN in labels(containerd, shared.tagged)
    assert holders(containerd, shared.tagged) == ["current-list"]
    document = json.loads(run_agent("pins", *endpoint, "-o", "json").stdout)
    mine = [p for p in document["pins"] if p["image"] == shared.tagged]
    assert mine == [
        {"image": shared.tagged, "pinned": True, "owners": ["current-list"], "foreign": False,
         "legacy": False}
    ], mine  # fmt: skip
    bad = run_agent("release", *endpoint)
    assert bad.code == 2 and "give --owner NAME or --legacy" in bad.stderr, bad
