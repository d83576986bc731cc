from __future__ import annotations

import asyncio
import io

import pytest

from agent.cli.live import LiveDisplay, fit
from agent.core.errors import AgentError
from agent.core.reports.progress import (
    Ingest,
    Progress,
    PullView,
    follow,
    format_bytes,
    ingest_digest,
)

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
C = "sha256:" + "c" * 64


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("ref", "digest"),
    [
        (f"layer-{A}", A),
        (f"manifest-{B}", B),
        (f"config-{C}", C),
        ("layer-sha512:" + "d" * 128, "sha512:" + "d" * 128),
        ("some-upload-without-digest", None),
    ],
)
def test_an_ingest_names_the_blob_it_downloads(ref: str, digest: str | None) -> None:
    assert ingest_digest(ref) == digest


def test_bytes_are_added_up_per_image_through_its_blobs() -> None:
    clock = Clock()
    progress = Progress(clock)
    progress.begin("app:1", {A: 1000, B: 3000})
    progress.begin("db:1", {C: 500})
    clock.now += 2
    progress.observe([Ingest(f"layer-{A}", 400, 1000), Ingest(f"layer-{C}", 100, 500)])
    app, db = progress.views()
    assert (app.image, app.done, app.total, app.seconds) == ("app:1", 400, 4000, 2.0)
    assert (db.done, db.total) == (100, 500)
    # A finishes (its ingest is gone: committed whole), B starts.
    clock.now += 2
    progress.observe([Ingest(f"layer-{B}", 1000, 3000), Ingest(f"layer-{C}", 300, 500)])
    view = progress.view("app:1")
    assert view is not None and view.done == 1000 + 1000
    assert view.rate == 500.0
    assert progress.bytes_in_flight() == 2000 + 300
    progress.end("app:1")
    assert [v.image for v in progress.views()] == ["db:1"]
    assert progress.view("app:1") is None


def test_a_blob_never_seen_downloading_counts_nothing_until_the_pull_ends() -> None:
    """Content already present (a shared base layer) is never downloaded: no bytes for it."""
    progress = Progress(Clock())
    progress.begin("app:1", {A: 1000, B: 3000})
    progress.observe([])
    view = progress.view("app:1")
    assert view is not None and (view.done, view.total) == (0, 4000)
    assert progress.active
    progress.end("app:1")
    assert not progress.active


def test_only_pulls_running_longer_than_the_interval_are_due_and_then_once_per_interval() -> None:
    clock = Clock()
    progress = Progress(clock)
    progress.begin("slow:1", {A: 10})
    clock.now += 5
    progress.begin("quick:1", {B: 10})
    assert [v.image for v in progress.due(10)] == []
    clock.now += 5
    assert [v.image for v in progress.due(10)] == ["slow:1"]
    assert progress.due(10) == []
    clock.now += 10
    assert [v.image for v in progress.due(10)] == ["slow:1", "quick:1"]


@pytest.mark.parametrize(
    ("view", "text"),
    [
        (PullView("a", 12_000_000, 40_000_000, 6.0), "12.0 MB of 40.0 MB (30%), 2.0 MB/s, 6s"),
        (PullView("a", 512, 0, 2.0), "512 B, 256 B/s, 2s"),
        (PullView("a", 0, 1000, 0.0), "0 B of 1.0 kB (0%), 0 B/s, 0s"),
    ],
)
def test_a_pull_describes_itself_in_words(view: PullView, text: str) -> None:
    assert view.describe() == text


def test_format_bytes_uses_decimal_units() -> None:
    assert [format_bytes(n) for n in (0, 999, 1000, 2_500_000, 3 * 10**9)] == [
        "0 B",
        "999 B",
        "1.0 kB",
        "2.5 MB",
        "3.0 GB",
    ]


def test_follow_reads_ingests_only_while_pulls_are_in_flight_and_survives_errors() -> None:
    progress = Progress(Clock())
    calls: list[str] = []
    ticks: list[int] = []
    asked_thrice = asyncio.Event()

    async def ingests() -> list[Ingest]:
        calls.append("list")
        if len(calls) == 3:
            asked_thrice.set()
        if len(calls) == 1:
            raise AgentError("Content.ListStatuses: unimplemented")
        return [Ingest(f"layer-{A}", 7)]

    async def scenario() -> None:
        task = asyncio.create_task(follow(progress, ingests, 0.01, lambda: ticks.append(1)))
        await asyncio.sleep(0.05)
        assert calls == [], "nothing is pulling: the runtime is not asked"
        progress.begin("app:1", {A: 10})
        await asyncio.wait_for(asked_thrice.wait(), 5)
        progress.end("app:1")
        await asyncio.sleep(0.05)
        ticked = len(ticks)
        await asyncio.sleep(0.05)
        assert len(ticks) == ticked, "idle again: no more ticks after the one that saw it end"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert len(calls) >= 3, "a failed look does not stop the next"
    assert len(ticks) >= 3


def test_the_live_display_redraws_its_block_below_the_results() -> None:
    clock = Clock()
    progress = Progress(clock)
    out = io.StringIO()
    display = LiveDisplay(out, progress)
    progress.begin("app:1", {A: 1000})
    progress.begin("db:1", {B: 1000})
    display.redraw()
    assert out.getvalue().count("pulling") == 2 and "\x1b[" not in out.getvalue()
    progress.observe([Ingest(f"layer-{A}", 500)])
    progress.end("db:1")
    display.result("pulled  db:1")
    text = out.getvalue()
    # The two progress lines are erased, the result printed, the block drawn again (one line).
    assert text.count("\x1b[2F\x1b[J") == 1
    after = text.split("\x1b[2F\x1b[J")[1]
    assert after.startswith("pulled  db:1\n")
    assert after.splitlines()[1].startswith("pulling   500 B of 1.0 kB (50%), ")
    assert after.splitlines()[1].endswith("  app:1")
    display.close()
    assert out.getvalue().endswith("\x1b[1F\x1b[J")


def test_a_progress_line_too_wide_keeps_the_numbers_and_the_names_tail() -> None:
    head = "pulling   4.2 MB of 6.3 MB (66%), 766.0 kB/s, 5s   "
    name = "registry.example.com:5000/team/platform/api-gateway:2.4.1@sha256:b3b13690126e…"
    compact = "pulling   4.2 MB of 6.3 MB (66%), 766.0 kB/s, 5s  "

    assert fit(head, name, 200) == head + name
    assert fit(head, name, len(compact + name)) == compact + name, "the padding goes first"
    no_digest = "registry.example.com:5000/team/platform/api-gateway:2.4.1@…"
    assert fit(head, name, len(compact + no_digest)) == compact + no_digest, "then the digest"
    line = fit(head, name, 79)
    assert len(line) == 79 and line.startswith(compact + "…"), line
    assert line.endswith("…platform/api-gateway:2.4.1@…"), "then the registry, from the left"
    assert fit(head, name, 20) == head[:20], "narrower than the numbers: cut, never wrapped"
