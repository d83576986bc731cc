"""The admission policy that keeps each agent to its own Node (deploy/components/own-node-only),
its CEL evaluated on requests the agent makes and on those a compromised agent would make.
cel-python stands in for the API server's CEL (test-only); the objects are also validated
against the Kubernetes schemas with every overlay (test_deploy)."""

from __future__ import annotations

import copy
from typing import Any

import celpy
import pytest
from celpy.adapter import json_to_cel

from agent.core.gate import CONDITION_TYPE
from tests.harness.kubectl import DEPLOY, kustomize

AGENT = "system:serviceaccount:prepull-system:prepull-agent"
KEY = "prepull.io/not-ready"
ENV = celpy.Environment()


NODES = "prepull-agent-own-node-only"
EVENTS = "prepull-agent-own-node-events"


def policy(name: str = NODES) -> dict[str, Any]:
    rendered = kustomize(DEPLOY / "overlays" / "readiness-gate")
    (found,) = [
        o
        for o in rendered
        if o["kind"] == "ValidatingAdmissionPolicy" and o["metadata"]["name"] == name
    ]
    (binding,) = [
        o
        for o in rendered
        if o["kind"] == "ValidatingAdmissionPolicyBinding" and o["spec"]["policyName"] == name
    ]
    assert binding["spec"]["validationActions"] == ["Deny"]
    return found


def evaluate(expression: str, bindings: dict[str, Any]) -> bool:
    program = ENV.program(ENV.compile(expression))
    activation = {name: json_to_cel(value) for name, value in bindings.items()}
    return bool(program.evaluate(activation))


def refusals(
    user: str, node_of_token: str | None, sub: str, new: Any, old: Any, name: str = NODES
) -> list[str]:
    """What the API server would refuse the write with ([] if admitted), per the policy."""
    spec = policy(name)["spec"]
    extra = {"authentication.kubernetes.io/node-name": [node_of_token]} if node_of_token else {}
    bindings = {
        "request": {"userInfo": {"username": user, "extra": extra}, "subResource": sub},
        "object": new,
        "oldObject": old,
    }
    if not all(evaluate(c["expression"], bindings) for c in spec["matchConditions"]):
        return []
    return [v["message"] for v in spec["validations"] if not evaluate(v["expression"], bindings)]


def node(name: str = "n1") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/os": "linux"}},
        "spec": {
            "taints": [{"key": KEY, "effect": "NoSchedule"}, {"key": "gpu", "effect": "NoSchedule"}]
        },
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }


def with_condition(before: dict[str, Any], status: str) -> dict[str, Any]:
    after = copy.deepcopy(before)
    after["status"]["conditions"].append({"type": CONDITION_TYPE, "status": status})
    return after


def without_taint(before: dict[str, Any], key: str) -> dict[str, Any]:
    after = copy.deepcopy(before)
    after["spec"]["taints"] = [t for t in after["spec"]["taints"] if t["key"] != key]
    return after


def test_the_agent_may_write_its_condition_and_remove_its_taint_on_its_own_node() -> None:
    before = node()
    assert refusals(AGENT, "n1", "status", with_condition(before, "True"), before) == []
    assert refusals(AGENT, "n1", "", without_taint(before, KEY), before) == []


def test_the_agent_may_remove_the_condition_earlier_agents_wrote_but_not_write_it() -> None:
    before = node()
    before["status"]["conditions"].append({"type": "PrepullReady", "status": "False"})
    after = with_condition(before, "True")
    after["status"]["conditions"] = [
        c for c in after["status"]["conditions"] if c["type"] != "PrepullReady"
    ]
    assert refusals(AGENT, "n1", "status", after, before) == []
    forged = copy.deepcopy(before)
    forged["status"]["conditions"][-1]["status"] = "True"
    assert refusals(AGENT, "n1", "status", forged, before) == [
        "prepull-agent may change only its prepull.io/PrepullReady condition"
    ]
    fresh = node()
    added = copy.deepcopy(fresh)
    added["status"]["conditions"].append({"type": "PrepullReady", "status": "True"})
    assert refusals(AGENT, "n1", "status", added, fresh), "the old condition written anew"


@pytest.mark.parametrize(
    ("token_node", "sub", "change", "refused"),
    [
        ("n2", "status", lambda n: with_condition(n, "True"), "only the Node its pod runs on"),
        (None, "status", lambda n: with_condition(n, "True"), "only the Node its pod runs on"),
        (
            "n1",
            "status",
            lambda n: {**n, "status": {"conditions": [{"type": "Ready", "status": "False"}]}},
            "only its prepull.io/PrepullReady condition",
        ),
        ("n1", "", lambda n: without_taint(n, "gpu"), "only remove its prepull.io/not-ready"),
        (
            "n1",
            "",
            lambda n: (
                without_taint(n, KEY)
                | {"spec": {"taints": [*n["spec"]["taints"], {"key": KEY, "effect": "NoExecute"}]}}
            ),
            "only remove its prepull.io/not-ready",
        ),
        ("n1", "", lambda n: n | {"spec": {**n["spec"], "unschedulable": True}}, "only remove"),
        (
            "n1",
            "",
            lambda n: n | {"metadata": {**n["metadata"], "labels": {"role": "x"}}},
            "only remove",
        ),
    ],
    ids=[
        "another node",
        "a token bound to no node",
        "another condition",
        "another taint removed",
        "its taint added",
        "cordoned",
        "labels changed",
    ],
)
def test_what_a_compromised_agent_would_write_is_refused(
    token_node: str | None, sub: str, change: Any, refused: str
) -> None:
    before = node()
    messages = refusals(AGENT, token_node, sub, change(before), before)
    assert any(refused in m for m in messages), messages


def test_the_policy_leaves_everyone_else_alone() -> None:
    before = node()
    kubelet = "system:node:n1"
    assert refusals(kubelet, None, "", without_taint(before, "gpu"), before) == []


def event_about(kind: str, name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": f"{name}.1", "namespace": "prepull-system"},
        "involvedObject": {"kind": kind, "name": name, "uid": name},
        "reason": "PreloadFailed",
    }


def test_the_agent_may_record_events_only_about_its_own_node() -> None:
    own = event_about("Node", "n1")
    assert refusals(AGENT, "n1", "", own, None, EVENTS) == []
    assert refusals(AGENT, "n1", "", own | {"count": 2}, own, EVENTS) == []
    forgeries: list[dict[str, Any]] = [event_about("Node", "n2"), event_about("Pod", "n1"), {}]
    for forged in forgeries:
        messages = refusals(AGENT, "n1", "", forged, None, EVENTS)
        assert messages == ["prepull-agent may record Events only about the Node its pod runs on"]
    assert refusals(AGENT, None, "", own, None, EVENTS), "a token bound to no node"
    assert refusals("system:node:n2", None, "", event_about("Node", "n1"), None, EVENTS) == []
