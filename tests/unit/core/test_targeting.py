"""Which nodes a DaemonSet targets (agent.core.fleet.targeting), as its controller decides."""

from __future__ import annotations

from typing import Any

import pytest

from agent.core.fleet.targeting import why_not_targeted


def daemonset(**spec: Any) -> dict[str, Any]:
    return {"spec": {"template": {"spec": {"containers": [{"name": "agent"}], **spec}}}}


def node(
    name: str = "n1",
    taints: list[dict[str, str]] | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": {"taints": taints or []}}


GPU_A = {"key": "gpu", "value": "a", "effect": "NoSchedule"}
LINUX = daemonset(nodeSelector={"kubernetes.io/os": "linux"}, tolerations=[{"operator": "Exists"}])


def test_the_node_selector_picks_nodes_by_label() -> None:
    assert why_not_targeted([LINUX], node(labels={"kubernetes.io/os": "linux"})) is None
    assert why_not_targeted([LINUX], node(labels={"kubernetes.io/os": "windows"})) == (
        "nodeSelector kubernetes.io/os=linux"
    )
    assert why_not_targeted([LINUX], node()) is not None


def test_a_node_any_of_the_daemonsets_targets_is_targeted() -> None:
    pool_b = daemonset(nodeSelector={"pool": "b"})
    assert why_not_targeted([LINUX, pool_b], node(labels={"pool": "b"})) is None
    assert why_not_targeted([], node()) is None, "nothing known: every node counts"


@pytest.mark.parametrize(
    ("taint", "tolerations", "targeted"),
    [
        ({"key": "gpu", "effect": "NoSchedule"}, [], False),
        ({"key": "gpu", "effect": "PreferNoSchedule"}, [], True),
        ({"key": "gpu", "effect": "NoExecute"}, [{"key": "gpu", "operator": "Exists"}], True),
        (GPU_A, [{"key": "gpu", "value": "b"}], False),
        (GPU_A, [{"key": "gpu", "value": "a"}], True),
        ({"key": "gpu", "effect": "NoSchedule"}, [{"key": "gpu", "operator": "Exists",
                                                  "effect": "NoExecute"}], False),
        ({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}, [], True),
        ({"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}, [], True),
        ({"key": "node.kubernetes.io/network-unavailable", "effect": "NoSchedule"}, [], False),
    ],
)  # fmt: skip
def test_taints_as_the_daemonset_controller_weighs_them(
    taint: dict[str, str], tolerations: list[dict[str, str]], targeted: bool
) -> None:
    found = why_not_targeted([daemonset(tolerations=tolerations)], node(taints=[taint]))
    assert (found is None) is targeted, found


def test_host_network_pods_tolerate_an_unavailable_network() -> None:
    taint = {"key": "node.kubernetes.io/network-unavailable", "effect": "NoSchedule"}
    assert why_not_targeted([daemonset(hostNetwork=True)], node(taints=[taint])) is None


@pytest.mark.parametrize(
    ("expression", "labels", "targeted"),
    [
        ({"key": "zone", "operator": "In", "values": ["a", "b"]}, {"zone": "b"}, True),
        ({"key": "zone", "operator": "In", "values": ["a"]}, {"zone": "b"}, False),
        ({"key": "zone", "operator": "NotIn", "values": ["a"]}, {}, True),
        ({"key": "zone", "operator": "Exists"}, {}, False),
        ({"key": "zone", "operator": "DoesNotExist"}, {}, True),
        ({"key": "cpus", "operator": "Gt", "values": ["8"]}, {"cpus": "16"}, True),
        ({"key": "cpus", "operator": "Lt", "values": ["8"]}, {"cpus": "x"}, False),
        ({"key": "zone", "operator": "Sometimes"}, {"zone": "a"}, False),
    ],
)
def test_required_node_affinity(expression: Any, labels: dict[str, str], targeted: bool) -> None:
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [expression]}]}}}  # fmt: skip
    found = why_not_targeted([daemonset(affinity=affinity)], node(labels=labels))
    assert (found is None) is targeted, found


def test_terms_are_ored_fields_match_the_name_and_an_empty_term_matches_nothing() -> None:
    def terms(*items: Any) -> dict[str, Any]:
        required = {"nodeSelectorTerms": list(items)}
        return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}

    by_name = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]}
    never = {"matchExpressions": [{"key": "x", "operator": "Exists"}]}
    assert why_not_targeted([daemonset(affinity=terms(never, by_name))], node("n2")) is None
    assert why_not_targeted([daemonset(affinity=terms(by_name))], node("n1")) is not None
    assert why_not_targeted([daemonset(affinity=terms({}))], node("n1")) is not None
    assert why_not_targeted([daemonset(affinity=terms())], node("n1")) is not None


@pytest.mark.parametrize("hostile", [None, 5, {"spec": "x"}, {"spec": {"template": []}}])
def test_a_daemonset_not_shaped_as_one_targets_nothing(hostile: Any) -> None:
    assert why_not_targeted([hostile], node()) == "its DaemonSet has no pod template"


def test_hostile_nodes_and_selectors_do_not_crash_and_do_not_match() -> None:
    odd = {"metadata": {"name": 5, "labels": {"kubernetes.io/os": ["linux"]}}, "spec": []}
    assert why_not_targeted([LINUX], odd) is not None
    assert why_not_targeted([daemonset(tolerations="all")], {"spec": {"taints": [7]}}) is None
