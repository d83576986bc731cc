"""Locks that keep the user's text, and telling when a lock has gone stale. Pure."""

from __future__ import annotations

from agent.core.lists.config import parse
from agent.preload.lock import lock_text, stale

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
LIST = f"""\
# Team A's images: keep this order, the first ones matter most.
images:
  - r.io/a/api:1.2   # the API
  - r.io/a/api-worker:1
  - image: r.io/a/gpu:3
    platforms: [linux/amd64]
  - r.io/a/pinned:2@{D2}
  - nginx
concurrency: 4
"""


def test_a_lock_keeps_comments_order_and_layout_and_pins_every_tag_in_place() -> None:
    config = parse(LIST, "preload.yaml")
    digests = {e: D1 for e in config.images if e.reference.digest is None}

    locked = lock_text(LIST, config, digests)

    assert locked.startswith("# Locked from preload.yaml")
    assert "# Team A's images: keep this order" in locked and "# the API" in locked
    assert f"  - r.io/a/api:1.2@{D1}   # the API\n" in locked
    assert f"  - r.io/a/api-worker:1@{D1}\n" in locked, "api:1 must not be pinned inside it"
    assert f"  - image: r.io/a/gpu:3@{D1}\n    platforms: [linux/amd64]\n" in locked
    assert f"  - r.io/a/pinned:2@{D2}\n" in locked and f"  - nginx:latest@{D1}\n" in locked
    again = parse(locked, "preload.lock.yaml")
    assert [e.reference.digest for e in again.images] == [D1, D1, D1, D2, D1]
    assert lock_text(locked, again, {}) == locked, "locking a lock changes nothing"


def test_an_entry_that_cannot_be_found_on_its_line_falls_back_to_a_fresh_rendering() -> None:
    text = 'images:\n  - "r.io/a/\\\n    api:1"\n'  # one reference over two lines
    config = parse(text, "odd.yaml")

    locked = lock_text(text, config, {config.images[0]: D1})

    assert parse(locked).images[0].reference.digest == D1


def test_a_current_lock_is_not_stale() -> None:
    config = parse(LIST)
    digests = {e: D1 for e in config.images if e.reference.digest is None}
    locked = parse(lock_text(LIST, config, digests)).images
    now = {**digests, config.images[3]: D2}

    assert stale(config.images, now, locked) == []


def test_a_moved_tag_a_new_entry_and_a_dropped_one_are_each_named() -> None:
    config = parse(LIST)
    digests = {e: D1 for e in config.images if e.reference.digest is None}
    locked = parse(lock_text(LIST, config, digests)).images
    listed = parse(LIST.replace("  - nginx\n", "  - r.io/a/new:1\n")).images
    now = {e: D1 for e in listed if e.reference.digest is None}
    now[listed[0]] = D2  # api:1.2 was re-pushed
    now[listed[3]] = D1  # the pinned entry's tag moved too

    problems = stale(listed, now, locked)

    assert any(p.startswith("r.io/a/api:1.2 (line 3): the lock has") for p in problems)
    assert any(p.startswith("r.io/a/pinned:2") and "tag moved" in p for p in problems)
    assert any(p.startswith("r.io/a/new:1 (line 8): not in the lock") for p in problems)
    assert any(p.startswith("nginx:latest@") and "not in the list" in p for p in problems)
    assert len(problems) == 4, problems
