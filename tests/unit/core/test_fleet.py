"""The fleet view's pure core (agent.core.fleet.view) and its table (agent.cli.fleet): which pod
serves which node, a row from a /status read as hostile input, the summary across nodes."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from agent.cli.fleet import _targets, format_fleet, short_list
from agent.core.errors import AgentError
from agent.core.fleet import view as fleet

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64


def pod(name: str, node: str, phase: str = "Running", ip: str | None = "10.0.0.7", **extra: Any):
    return {
        "metadata": {
            "name": name,
            "creationTimestamp": extra.get("created", "2026-12-01T00:00:00Z"),
        },
        "spec": {
            "nodeName": node,
            "containers": [
                {"name": "agent", "ports": [{"name": "metrics", "containerPort": 9410}]}
            ],
        },
        "status": {"phase": phase, **({"podIP": ip} if ip else {})},
    }


def nodes(*names: str, **labels: str) -> dict[str, Any]:
    return {n: {"metadata": {"name": n, "labels": dict(labels)}} for n in names}


def image(name: str, state: str, **extra: Any) -> dict[str, Any]:
    return {"image": name, "state": state, "last_error": None, "pull": None, **extra}


def test_each_node_gets_the_running_agent_on_it_or_why_none_answers() -> None:
    pods = {
        "items": [
            pod("old", "n1", phase="Running", created="2026-11-01T00:00:00Z"),
            pod("new", "n1", phase="Running", created="2026-12-01T00:00:00Z"),
            pod("starting", "n2", phase="Pending", ip=None),
            pod("elsewhere", "n9"),
        ]
    }
    found = fleet.targets(nodes("n3", "n1", "n2"), pods, "metrics")
    assert found == [
        fleet.Target("n1", "new", 9410),
        fleet.Target("n2", "starting", why_not="agent pod Pending"),
        fleet.Target("n3", why_not="no agent pod on this node"),
    ]
    assert fleet.targets(None, pods, "9999")[0] == fleet.Target("n1", "new", 9999)
    assert (
        fleet.targets(nodes("n1"), pods, "http")[0].why_not
        == "agent pod has no container port 'http'"
    )
    assert fleet.targets(nodes("n1"), pods, "70000")[0].why_not == (
        "agent pod has no container port '70000'"
    )


@pytest.mark.parametrize(
    "hostile",
    [None, [], {"items": "x"}, {"items": [1]}, {"items": [{"metadata": {"name": 5}}]}],
)
def test_lists_not_shaped_as_kubernetes_lists_are_refused(hostile: Any) -> None:
    with pytest.raises(fleet.Malformed):
        fleet.nodes_of(hostile)


def test_a_row_counts_what_the_node_holds_lacks_and_pulls() -> None:
    status = {
        "ready": False,
        "served_list": A,
        "config": {"digest": B},
        "last_error": None,
        "images": [
            image("a:1", "present"),
            image("b:1", "failed", last_error="denied"),
            image("c:1", "refused", last_error="no linux/arm64"),
            image("d:1", "deferred"),
            image("e:1", "pulling", pull={"bytes_done": 10, "bytes_total": 40}),
            image("f:1", "skipped"),
        ],
    }
    row = fleet.row(fleet.Target("n1", "p", 9410), status)
    assert (row.images_ready, row.images_desired, row.deferred) == (1, 5, 1)
    assert row.failing == (fleet.Failure("b:1", "denied"), fleet.Failure("c:1", "no linux/arm64"))
    assert (row.pulling, row.bytes_done, row.bytes_total) == (1, 10, 40)
    assert (row.served_list, row.list) == (A, B)
    assert row.missing == ("b:1", "c:1", "d:1", "e:1")
    assert row.to_json()["images"] == {"ready": 1, "desired": 5}


@pytest.mark.parametrize(
    "hostile",
    [
        "ready",
        {"ready": "yes", "images": []},
        {"ready": True},
        {"ready": True, "images": ["a"]},
    ],
)
def test_an_answer_that_is_no_agent_status_is_refused(hostile: Any) -> None:
    with pytest.raises(fleet.Malformed):
        fleet.row(fleet.Target("n1"), hostile)


def test_hostile_fields_inside_a_status_count_as_nothing() -> None:
    status = {
        "ready": True,
        "served_list": "sha256:short",
        "config": "not a mapping",
        "images": [image("a:1", "pulling", pull={"bytes_done": -5, "bytes_total": True})],
    }
    row = fleet.row(fleet.Target("n1"), status)
    assert (row.bytes_done, row.bytes_total, row.served_list, row.list) == (0, 0, None, None)


def test_the_summary_counts_nodes_and_names_where_each_image_fails() -> None:
    rows = [
        fleet.NodeRow("n1", "p1", True, True, 2, 2, served_list=A),
        fleet.NodeRow(
            "n2",
            "p2",
            True,
            False,
            1,
            3,
            failing=(fleet.Failure("x:1", "denied"),),
            served_list=A,
            missing=("x:1", "y:1"),
        ),
        fleet.NodeRow(
            "n3",
            "p3",
            True,
            True,
            2,
            3,
            failing=(fleet.Failure("x:1", "denied"),),
            served_list=B,
            missing=("x:1",),
        ),
        fleet.unanswered(fleet.Target("n4"), "no answer in 5s"),
    ]
    summary = fleet.summary(rows)
    assert (summary["nodes"], summary["ready"], summary["not_ready"]) == (4, 2, 1)
    assert summary["not_answering"] == 1
    assert summary["images_missing"] == 3
    assert summary["missing"] == {"x:1": ["n2", "n3"], "y:1": ["n2"]}
    assert summary["failing"] == {"x:1": ["n2", "n3"]}
    assert summary["lists_served"] == {A: 2, B: 1}

    text = format_fleet(rows, summary, lambda s: s, short_list)
    lines = text.splitlines()
    assert lines[0].split() == [
        "NODE",
        "READY",
        "IMAGES",
        "FAILING",
        "DEFERRED",
        "PULLING",
        "LIST",
        "DETAIL",
    ]
    assert lines[2].split()[:4] == ["n2", "no", "1/3", "1"] and lines[2].endswith("x:1: denied")
    assert lines[4].split()[:2] == ["n4", "?"] and lines[4].endswith("no answer in 5s")
    assert lines[-1] == (
        "4 nodes: 2 ready, 1 not ready, 1 not answering; 3 images missing fleet-wide; "
        f"failing: x:1 on n2, n3; lists served: {A[:19]} on 2, {B[:19]} on 1"
    )
    rows_only = format_fleet(rows, summary, lambda s: s, short_list, headers=False)
    assert rows_only.splitlines()[0].startswith("n1 ") and len(rows_only.splitlines()) == 4


def test_a_node_working_toward_a_new_list_shows_both() -> None:
    row = fleet.NodeRow("n1", "p", True, False, 0, 1, served_list=A, list=B)
    line = format_fleet([row], fleet.summary([row]), lambda s: s, short_list).splitlines()[1]
    assert f"{A[:19]} → {B[:19]}" in line


class ListsOnly:
    """The API as `_targets` reads it: the pods, then the nodes."""

    def __init__(self, nodes: Any) -> None:
        self.nodes = nodes

    async def pod_list(self, namespace: str, selector: str) -> Any:
        return {"items": [pod("p", "n1")]}

    async def node_list(self, selector: str | None) -> Any:
        return self.nodes


@pytest.mark.parametrize("nodes", [{"items": [{"metadata": {}}]}, {"items": [7]}])
async def test_a_malformed_node_list_is_an_error_that_says_so(nodes: Any) -> None:
    args = argparse.Namespace(
        namespace="prepull-system", agent_selector="a=b", selector=None, port="metrics"
    )
    with pytest.raises(AgentError, match="the API server's"):
        await _targets(ListsOnly(nodes), args)  # type: ignore[arg-type]


def test_a_ready_node_converging_says_how_far_and_an_untargeted_node_counts_toward_nothing() -> (
    None
):
    status = {
        "ready": True,
        "served_list": A,
        "config": {"digest": B},
        "converging": {"to": B, "since": 0.0, "present": 2, "desired": 3, "overdue": True},
        "images": [image("a:1", "present"), image("b:1", "present"), image("c:1", "pulling")],
    }
    converging = fleet.row(fleet.Target("n1", "p1", 9410), status)
    assert converging.ready and converging.converging == fleet.Converging(B, 0.0, 2, 3, True)
    windows = fleet.unanswered(
        fleet.Target("n2", why_not="not targeted: nodeSelector", targeted=False),
        "not targeted: nodeSelector",
    )
    summary = fleet.summary([converging, windows])
    assert (summary["nodes"], summary["ready"], summary["not_answering"]) == (1, 1, 0)
    assert (summary["not_targeted"], summary["converging"], summary["overdue"]) == (1, 1, 1)
    text = format_fleet([converging, windows], summary, lambda s: s, short_list).splitlines()
    assert text[1].split()[:2] == ["n1", "yes"] and "converging 2/3 for " in text[1], text[1]
    assert text[1].endswith(", OVERDUE"), text[1]
    assert text[2].split()[:2] == ["n2", "-"], text[2]
    assert text[-1].startswith(
        "1 nodes: 1 ready, 1 of them converging (1 overdue) (+1 the agent does not target)"
    ), text[-1]
    forged = fleet.row(fleet.Target("n1"), {**status, "converging": {"since": "x", "to": 5}})
    assert forged.converging == fleet.Converging(None, None, 0, 0, False)
