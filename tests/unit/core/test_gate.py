from __future__ import annotations

import asyncio
import datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.core.errors import MalformedNode
from agent.core.reports.events import NodeEvent
from agent.core.reports.gate import (
    CONDITION_TYPE,
    HEARTBEAT_SECONDS,
    NodeGate,
    Verdict,
    checked_node,
    condition,
    current_condition,
    taint_removal,
    verdict,
)
from tests.fakes import FakeNodeApi

T0 = datetime.datetime(2026, 11, 27, 10, 0, 0, tzinfo=datetime.UTC)
KEY = "prepull.io/not-ready"


def test_a_ready_node_is_released_with_what_is_present() -> None:
    broken = verdict(True, [], 3, passes=1, waited=0, timeout=None, failed=["r.io/gone:1"])
    assert broken.ready and broken.message == "3 images present; 1 failed for good: r.io/gone:1"
    found = verdict(True, [], 3, passes=1, waited=0, timeout=None)
    assert (found.ready, found.reason, found.release) == (True, "Preloaded", True)
    assert found.message == "3 images present"


def test_before_the_first_pass_the_node_waits_and_says_why() -> None:
    found = verdict(False, ["a:1", "b:1"], 0, passes=0, waited=5, timeout=60)
    assert (found.ready, found.reason, found.release) == (False, "Preloading", False)
    assert found.message == "the first pass has not finished; waiting for 2 images: a:1, b:1"
    nothing = verdict(False, [], 0, passes=0, waited=0, timeout=None)
    assert nothing.message == "the first pass has not finished"


def test_the_message_names_what_is_missing_and_counts_the_rest() -> None:
    waiting = [f"img{i}:1" for i in range(7)]
    found = verdict(False, waiting, 2, passes=3, waited=5, timeout=None)
    assert found.message == (
        "waiting for 7 images: img0:1, img1:1, img2:1, img3:1, img4:1 and 2 more"
    )


def test_after_the_timeout_the_node_is_released_anyway_and_says_so() -> None:
    found = verdict(False, ["a:1"], 0, passes=2, waited=61, timeout=60)
    assert (found.ready, found.reason, found.release) == (False, "ReadyTimeout", True)
    assert (
        found.message == "released after 60s without the list preloaded; waiting for 1 image: a:1"
    )


def test_the_transition_time_moves_only_when_the_status_does() -> None:
    waiting = verdict(False, ["a:1"], 0, passes=1, waited=0, timeout=None)
    first = condition(waiting, T0, None)
    assert first["lastTransitionTime"] == first["lastHeartbeatTime"] == "2026-11-27T10:00:00Z"
    later = T0 + datetime.timedelta(minutes=1)
    still = condition(verdict(False, ["b:1"], 1, passes=2, waited=60, timeout=None), later, first)
    assert still["lastTransitionTime"] == "2026-11-27T10:00:00Z"
    assert still["lastHeartbeatTime"] == "2026-11-27T10:01:00Z"
    ready = condition(verdict(True, [], 2, passes=3, waited=90, timeout=None), later, still)
    assert (ready["status"], ready["lastTransitionTime"]) == ("True", "2026-11-27T10:01:00Z")
    assert ready["type"] == CONDITION_TYPE


def test_the_taint_removal_is_guarded_by_the_whole_list_and_keeps_other_taints() -> None:
    taints = [
        {"key": "other", "effect": "NoExecute"},
        {"key": KEY, "effect": "NoSchedule"},
        {"key": KEY, "effect": "NoExecute"},
    ]
    operations = taint_removal({"spec": {"taints": taints}}, KEY)
    assert operations == [
        {"op": "test", "path": "/spec/taints", "value": taints},
        {"op": "remove", "path": "/spec/taints/2"},
        {"op": "remove", "path": "/spec/taints/1"},
    ]
    assert taint_removal({"spec": {"taints": taints[:1]}}, KEY) is None
    assert taint_removal({"spec": {}}, KEY) is None


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def gate(api: FakeNodeApi, clock: Clock, timeout: float | None = None) -> NodeGate:
    return NodeGate(
        api, condition=True, taint_key=KEY, timeout=timeout, clock=clock, wall_clock=lambda: T0
    )


def test_an_unchanged_condition_is_written_again_as_a_heartbeat() -> None:
    api = FakeNodeApi([])
    clock = Clock()
    node_gate = gate(api, clock)
    asyncio.run(node_gate.sync(True, [], 1, 1))
    clock.now = HEARTBEAT_SECONDS - 1
    asyncio.run(node_gate.sync(True, [], 1, 2))
    assert api.status_patches == 1, "nothing changed and the heartbeat is not due"
    clock.now = HEARTBEAT_SECONDS + 1
    asyncio.run(node_gate.sync(True, [], 1, 3))
    assert api.status_patches == 2, "the heartbeat is written"
    assert current_condition(api.node)["type"] == "prepull.io/PrepullReady"  # type: ignore[index]


def test_the_gate_writes_the_condition_on_change_only_and_releases_once_ready() -> None:
    api = FakeNodeApi([{"key": KEY, "effect": "NoSchedule"}])
    clock = Clock()
    node_gate = gate(api, clock)
    asyncio.run(node_gate.sync(False, ["a:1"], 0, 1))
    asyncio.run(node_gate.sync(False, ["a:1"], 0, 1))
    assert api.status_patches == 1, "the same verdict is written once"
    assert api.json_patches == 0 and node_gate.released is None
    assert current_condition(api.node)["status"] == "False"  # type: ignore[index]

    asyncio.run(node_gate.sync(True, [], 1, 2))
    assert current_condition(api.node)["status"] == "True"  # type: ignore[index]
    assert api.node["spec"]["taints"] == [] and node_gate.released == "ready"
    asyncio.run(node_gate.sync(True, [], 1, 3))
    assert api.json_patches == 1, "released once, never again"


def test_a_concurrent_change_to_the_taints_is_kept_and_the_removal_retried() -> None:
    api = FakeNodeApi([{"key": KEY, "effect": "NoSchedule"}])
    api.meddle = [{"key": "someone/else", "effect": "NoSchedule"}]
    node_gate = gate(api, Clock())
    asyncio.run(node_gate.sync(True, [], 1, 1))
    assert api.json_patches == 2
    assert api.node["spec"]["taints"] == [{"key": "someone/else", "effect": "NoSchedule"}]
    assert node_gate.released == "ready"


def test_the_timeout_releases_the_node_but_the_condition_stays_false() -> None:
    api = FakeNodeApi([{"key": KEY, "effect": "NoSchedule"}])
    clock = Clock()
    node_gate = gate(api, clock, timeout=60)
    asyncio.run(node_gate.sync(False, ["a:1"], 0, 1))
    assert api.node["spec"]["taints"], "not before the timeout"
    clock.now = 61
    asyncio.run(node_gate.sync(False, ["a:1"], 0, 2))
    assert api.node["spec"]["taints"] == [] and node_gate.released == "timeout"
    written = current_condition(api.node)
    assert written is not None and (written["status"], written["reason"]) == (
        "False",
        "ReadyTimeout",
    )


def test_the_condition_an_earlier_agent_wrote_is_removed_at_the_first_write() -> None:
    api = FakeNodeApi([])
    legacy = {"type": "PrepullReady", "status": "False", "reason": "Preloading"}
    kubelet = {"type": "Ready", "status": "True"}
    api.node["status"]["conditions"] = [kubelet, legacy]
    asyncio.run(gate(api, Clock()).sync(True, [], 1, 1))
    kinds = [c["type"] for c in api.node["status"]["conditions"]]
    assert kinds == ["Ready", "prepull.io/PrepullReady"]


def test_the_gate_tells_its_decisions_once_each_as_events() -> None:
    api = FakeNodeApi([{"key": KEY, "effect": "NoSchedule"}])
    clock = Clock()
    told: list[NodeEvent] = []
    node_gate = NodeGate(
        api, condition=True, taint_key=KEY, timeout=60, clock=clock, on_event=told.append
    )
    asyncio.run(node_gate.sync(False, ["a:1"], 0, 0))
    asyncio.run(node_gate.sync(False, ["a:1", "b:1"], 0, 1))  # a new message: no new event
    clock.now = 61
    asyncio.run(node_gate.sync(False, ["a:1"], 0, 2))
    asyncio.run(node_gate.sync(True, [], 2, 3))
    assert [(e.type, e.reason) for e in told] == [
        ("Normal", "PreloadingImages"),
        ("Warning", "PreloadTimedOut"),
        ("Warning", "StartupTaintRemoved"),
        ("Normal", "ImagesPreloaded"),
    ]
    assert "waiting for 1 image: a:1" in told[0].message
    assert told[2].message.startswith(f"removed {KEY} anyway: released after 60s")


def test_a_node_without_the_taint_is_left_as_it_is() -> None:
    api = FakeNodeApi([{"key": "other", "effect": "NoSchedule"}])
    node_gate = gate(api, Clock())
    asyncio.run(node_gate.sync(True, [], 1, 1))
    assert api.json_patches == 0 and node_gate.released == "absent"
    assert api.node["spec"]["taints"] == [{"key": "other", "effect": "NoSchedule"}]


@pytest.mark.parametrize("meddling", [5, 6])
def test_a_node_that_keeps_changing_is_tried_again_at_the_next_sync(meddling: int) -> None:
    api = FakeNodeApi([{"key": KEY, "effect": "NoSchedule"}])
    api.meddle = [{"key": f"w{i}", "effect": "NoSchedule"} for i in range(meddling)]
    node_gate = gate(api, Clock())
    asyncio.run(node_gate.sync(True, [], 1, 1))
    assert node_gate.released is None and api.json_patches == 5
    asyncio.run(node_gate.sync(True, [], 1, 2))
    assert node_gate.released == "ready"
    assert all(t["key"] != KEY for t in api.node["spec"]["taints"])


@pytest.mark.parametrize(
    "shape",
    [
        {"spec": None, "status": None},
        {"spec": {"taints": None}, "status": {"conditions": None}},
        {},
    ],
)
def test_null_halves_read_as_empty(shape: dict[str, Any]) -> None:
    node = checked_node(shape)
    assert current_condition(node) is None
    assert taint_removal(node, "k") is None


@pytest.mark.parametrize(
    ("shape", "field"),
    [
        ({"spec": "x"}, "spec is str"),
        ({"status": []}, "status is list"),
        ({"spec": {"taints": "k"}}, "spec.taints is str"),
        ({"spec": {"taints": [5]}}, "spec.taints[0] is int"),
        ({"spec": {"taints": [{"effect": "NoSchedule"}]}}, "spec.taints[0].key is NoneType"),
        ({"status": {"conditions": ["Ready"]}}, "status.conditions[0] is str"),
        ({"status": {"conditions": [{"type": 1}]}}, "status.conditions[0].type is int"),
    ],
)
def test_a_node_of_the_wrong_shape_is_refused_naming_the_field(
    shape: dict[str, Any], field: str
) -> None:
    with pytest.raises(MalformedNode) as caught:
        checked_node(shape)
    assert field in str(caught.value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=20,
)
node_like = st.fixed_dictionaries(
    {},
    optional={
        "spec": json_values
        | st.fixed_dictionaries(
            {},
            optional={
                "taints": json_values
                | st.lists(st.dictionaries(st.sampled_from(["key", "effect"]), json_values))
            },
        ),
        "status": json_values
        | st.fixed_dictionaries(
            {},
            optional={
                "conditions": json_values
                | st.lists(
                    st.dictionaries(
                        st.sampled_from(["type", "status", "lastTransitionTime"]), json_values
                    )
                )
            },
        ),
    },
)


@given(node_like)
def test_any_node_is_refused_or_fully_readable(document: dict[str, Any]) -> None:
    """Whatever the API server sends: MalformedNode, or every decision reads it without error."""
    try:
        node = checked_node(document)
    except MalformedNode:
        return
    previous = current_condition(node)
    condition(Verdict(True, "Preloaded", "", True), datetime.datetime.now(datetime.UTC), previous)
    taint_removal(node, "k")


def test_a_node_converging_to_a_new_list_is_ready_and_says_toward_what() -> None:
    from agent.core.reports.gate import verdict as decide

    found = decide(
        True,
        ["r.io/new:1"],
        2,
        passes=3,
        waited=0.0,
        timeout=None,
        converging_to="sha256:" + "e" * 64,
    )
    assert found.ready and found.reason == "Converging" and found.release
    assert "sha256:eeeeeeeeeeee" in found.message and "r.io/new:1" in found.message
