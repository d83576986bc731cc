"""Events on the Node: aggregated and rate-limited as kubelet's are, sent best-effort."""

from __future__ import annotations

import datetime

import pytest

from agent.core.reports.events import (
    BURST,
    COMBINED,
    REFILL_SECONDS,
    SIMILAR_MAX,
    SIMILAR_WINDOW,
    WARNING,
    EventBook,
    EventRecorder,
    NodeEvent,
)
from tests.fakes import FakeNodeApi

FAILED = NodeEvent(WARNING, "PreloadFailed", "reg/app:1: manifest unknown")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def book(clock: Clock) -> EventBook:
    wall = datetime.datetime(2026, 12, 5, 3, 0, tzinfo=datetime.UTC)
    return EventBook("node-a", "prepull-system", clock, wall_clock=lambda: wall)


def test_an_event_names_the_node_as_kubectl_describe_node_searches_for_it() -> None:
    write = book(Clock()).record(FAILED)
    assert write is not None and write.patch is None
    event = write.event
    assert event["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Node",
        "name": "node-a",
        "uid": "node-a",
    }
    assert event["metadata"]["namespace"] == "prepull-system"
    assert event["metadata"]["name"].startswith("node-a.")
    assert (event["type"], event["reason"], event["count"]) == (WARNING, "PreloadFailed", 1)
    assert event["firstTimestamp"] == event["lastTimestamp"] == "2026-12-05T03:00:00Z"
    assert event["source"] == {"component": "prepull-agent", "host": "node-a"}


def test_a_repeat_raises_the_count_of_the_same_event() -> None:
    events = book(Clock())
    first = events.record(FAILED)
    second = events.record(FAILED)
    third = events.record(FAILED)
    assert first is not None and second is not None and third is not None
    assert second.name == third.name == first.name
    assert second.patch == {"count": 2, "lastTimestamp": "2026-12-05T03:00:00Z"}
    assert third.patch is not None and third.patch["count"] == 3
    assert third.event["count"] == 3  # what is created if the patched one expired


def test_two_events_made_in_one_instant_get_two_names() -> None:
    events = book(Clock())
    one = events.record(FAILED)
    other = events.record(NodeEvent(WARNING, "PreloadFailed", "reg/other:1: denied"))
    assert one is not None and other is not None and one.name != other.name


def test_many_messages_of_one_reason_are_combined_into_one_event() -> None:
    clock = Clock()
    events = book(clock)
    writes = [
        events.record(NodeEvent(WARNING, "PreloadFailed", f"reg/app{i}:1: denied"))
        for i in range(SIMILAR_MAX + 5)
    ]
    messages = [w.event["message"] for w in writes if w is not None]
    assert not any(m.startswith(COMBINED) for m in messages[:SIMILAR_MAX])
    combined = [w for w in writes[SIMILAR_MAX:] if w is not None]
    assert all(w.event["message"].startswith(COMBINED) for w in combined)
    # Outside the window, one message stands alone again.
    clock.now += SIMILAR_WINDOW + 1
    alone = events.record(NodeEvent(WARNING, "PreloadFailed", "reg/late:1: denied"))
    assert alone is not None and alone.event["message"] == "reg/late:1: denied"


def test_the_rate_limit_drops_past_the_burst_and_refills_slowly() -> None:
    clock = Clock()
    events = book(clock)
    sent = [events.record(NodeEvent(WARNING, f"Reason{i}", "m")) for i in range(BURST + 10)]
    assert sum(w is not None for w in sent) == BURST
    assert events.dropped == 10
    clock.now += REFILL_SECONDS / 2
    assert events.record(NodeEvent(WARNING, "Later", "m")) is None
    clock.now += REFILL_SECONDS / 2
    assert events.record(NodeEvent(WARNING, "Later", "m")) is not None
    assert events.dropped == 11


def test_a_long_message_is_cut() -> None:
    write = book(Clock()).record(NodeEvent(WARNING, "PreloadFailed", "x" * 5000))
    assert write is not None and len(write.event["message"]) == 1024


async def test_the_recorder_creates_then_patches_and_recreates_an_expired_event() -> None:
    sink = FakeNodeApi()
    recorder = EventRecorder(book(Clock()), sink)
    await recorder.flush([FAILED])
    await recorder.flush([FAILED])
    assert len(sink.created) == 1 and sink.patched[0][1]["count"] == 2
    sink.expired.add(sink.created[0]["metadata"]["name"])
    await recorder.flush([FAILED])
    assert len(sink.created) == 2 and sink.created[1]["count"] == 3
    assert recorder.to_json() == {"sent": 3, "rate_limited": 0, "failed": 0, "error": None}


async def test_a_failing_api_server_is_tried_again_then_the_write_dropped_logged_once_each_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = FakeNodeApi()
    recorder = EventRecorder(book(Clock()), sink)
    sink.failures = 1
    await recorder.flush([FAILED])
    assert not sink.created and recorder.to_json()["error"] is not None
    await recorder.flush([])
    assert len(sink.created) == 1 and recorder.to_json()["error"] is None
    sink.failures = 10
    other = NodeEvent(WARNING, "PreloadFailed", "reg/other:1: denied")
    for attempt in range(4):
        await recorder.flush([other] if attempt == 0 else [])
    assert len(sink.created) == 1
    assert recorder.to_json()["failed"] == 1
    logged = [r for r in caplog.records if "node event not recorded" in r.getMessage()]
    assert len(logged) == 2, "once per outage, not once per try"
