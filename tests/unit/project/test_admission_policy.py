"""The admission policy that keeps each agent to its own Node (deploy/components/own-node-only),
its CEL evaluated on requests the agent makes and on those a compromised agent would make.
cel-python stands in for the API server's CEL (test-only); the objects are also validated
against the Kubernetes schemas with every overlay (test_deploy)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import celpy
import kubernetes_validate
import pytest
from celpy.adapter import json_to_cel

from agent.core.reports.gate import CONDITION_TYPE
from tests.harness.kubeapi import SCHEMA_VERSION
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
    user: str,
    node_of_token: str | None,
    sub: str,
    new: Any,
    old: Any,
    name: str = NODES,
    found: dict[str, Any] | None = None,
) -> list[str]:
    """What the API server would refuse the write with ([] if admitted), per the policy
    (`found`: a policy other than deploy/'s overlay renders)."""
    spec = (found or policy(name))["spec"]
    extra = {"authentication.kubernetes.io/node-name": [node_of_token]} if node_of_token else {}
    bindings: dict[str, Any] = {
        "request": {"userInfo": {"username": user, "extra": extra}, "subResource": sub},
        "object": new,
        "oldObject": old,
    }
    if not all(evaluate(c["expression"], bindings) for c in spec["matchConditions"]):
        return []
    # As the API server does: each variable evaluated once, then read as variables.<name>.
    variables = {v["name"]: evaluate(v["expression"], bindings) for v in spec.get("variables", [])}
    bindings["variables"] = variables
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
            "may not change a Node's metadata",
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


# -- every field of a Node, from the Kubernetes schema the project validates against ----------

SCHEMA = (
    Path(kubernetes_validate.__file__).parent
    / "kubernetes-json-schema"
    / (f"v{SCHEMA_VERSION}-local")
)
# The server's own bookkeeping on every write: never the agent's to hold equal.
SERVER_KEEPS = {"managedFields", "resourceVersion", "generation"}


def schema_fields(name: str) -> dict[str, Any]:
    properties: dict[str, Any] = json.loads((SCHEMA / name).read_text())["properties"]
    return properties


def forged(prop: dict[str, Any]) -> Any:
    """A value of the field's own type that no Node had: what an attacker would write."""
    kinds = prop.get("type") or "object"
    kind = next(k for k in ([kinds] if isinstance(kinds, str) else kinds) if k != "null")
    if kind == "array":
        return [forged(prop.get("items") or {})]
    return {"string": "forged", "integer": 4242, "boolean": True}.get(kind, {"forged": "x"})


PROPERTIES = {
    "metadata": schema_fields("objectmeta-meta-v1.json"),
    "spec": schema_fields("nodespec-v1.json"),
    "status": schema_fields("nodestatus-v1.json"),
}


# The items of these lists have required fields the schema's items name by reference.
REQUIRED_ITEMS = {
    ("status", "conditions"): [{"type": "Forged", "status": "True"}],
    ("spec", "taints"): [{"key": "forged", "effect": "NoSchedule"}],
}


def changed(before: dict[str, Any], part: str, field: str) -> dict[str, Any]:
    after = copy.deepcopy(before)
    after[part][field] = REQUIRED_ITEMS.get((part, field)) or forged(PROPERTIES[part][field])
    return after


# Every top-level field of metadata, NodeSpec and NodeStatus on both subresources, but the
# agent's own part (its condition on nodes/status, its taint on nodes: the cases above).
FIELDS = [
    (sub, part, field)
    for sub in ("", "status")
    for part, fields in PROPERTIES.items()
    for field in fields
    if field not in SERVER_KEEPS
    and (sub, part, field) not in (("status", "status", "conditions"), ("", "spec", "taints"))
]


@pytest.mark.parametrize(
    ("sub", "part", "field"), FIELDS, ids=[f"{s or 'nodes'}:{p}.{f}" for s, p, f in FIELDS]
)
def test_every_field_of_a_node_but_the_agents_own_is_refused_on_both_subresources(
    sub: str, part: str, field: str
) -> None:
    """Generated from every top-level field the schema gives Node's metadata, NodeSpec and
    NodeStatus (a field a later Kubernetes adds is a new case here, refused or failing)."""
    before = node()
    assert refusals(AGENT, "n1", sub, changed(before, part, field), before), f"{part}.{field}"


DO_NOT_DISRUPT = "karpenter.sh/do-not-disrupt"


def test_the_fields_an_attacker_reached_before_are_refused() -> None:
    before = node()
    before["status"] |= {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                         "allocatable": {"pods": "110"}, "capacity": {"cpu": "8"}}  # fmt: skip
    forged: list[tuple[str, Any]] = [
        ("status", lambda n: n["status"].update(addresses=[{"type": "InternalIP",
                                                            "address": "203.0.113.9"}])),
        ("status", lambda n: n["status"].update(allocatable={"pods": "0"})),
        ("status", lambda n: n["status"].update(capacity={"cpu": "100000"})),
        ("status", lambda n: n["metadata"].update(annotations={DO_NOT_DISRUPT: "true"})),
        ("", lambda n: n["metadata"].update(
            annotations={"cluster-autoscaler.kubernetes.io/scale-down-disabled": "true"})),
        ("", lambda n: n["metadata"].update(finalizers=["x/y"])),
        ("", lambda n: n["metadata"].update(ownerReferences=[{"kind": "Pod", "name": "p"}])),
        ("", lambda n: n["spec"].update(podCIDR="10.9.0.0/24")),
        ("", lambda n: n["spec"].update(providerID="aws:///x")),
        ("", lambda n: n["spec"].update(taints=[{"key": KEY, "effect": "NoExecute"},
                                                {"key": "gpu", "effect": "NoSchedule"}])),
    ]  # fmt: skip
    for sub, change in forged:
        after = copy.deepcopy(before)
        change(after)
        assert refusals(AGENT, "n1", sub, after, before), after


def test_the_agents_real_patches_are_admitted_as_the_api_server_applies_them() -> None:
    """The gate's strategic merge patch (its condition; `$patch: delete` of the old one) and
    its JSON patch (`test` of the taints, then `remove`), applied to a Node as kubelet keeps it."""
    from agent.core.reports.gate import taint_removal

    before = node()
    before["metadata"] |= {"resourceVersion": "7", "managedFields": [{"manager": "kubelet"}]}
    before["status"]["conditions"].append({"type": "PrepullReady", "status": "False"})
    after = copy.deepcopy(before)
    after["metadata"] |= {"resourceVersion": "8", "managedFields": [{"manager": "agent"}]}
    after["status"]["conditions"] = [
        {"type": "Ready", "status": "True"},
        {"type": CONDITION_TYPE, "status": "True", "reason": "Preloaded"},
    ]
    assert refusals(AGENT, "n1", "status", after, before) == []
    operations = taint_removal(before, KEY)
    assert operations is not None and operations[0]["op"] == "test"
    patched = copy.deepcopy(before)
    for operation in operations[1:]:
        index = int(operation["path"].rsplit("/", 1)[1])
        del patched["spec"]["taints"][index]
    assert refusals(AGENT, "n1", "", patched, before) == []


def test_a_renamed_install_is_protected_too() -> None:
    """In another namespace, the project's overlay matches the agent as it is; with a name
    prefix too, the README's replacements (tests/data/renamed-install) copy the account's name."""
    before = node()
    forged = changed(before, "metadata", "annotations")
    assert refusals("system:serviceaccount:team-a:prepull-agent", "n1", "", forged, before)
    assert refusals("system:serviceaccount:team-a:not-the-agent", "n1", "", forged, before) == []
    rendered = kustomize(Path(__file__).parents[2] / "data" / "renamed-install")
    (renamed,) = [
        o
        for o in rendered
        if o["kind"] == "ValidatingAdmissionPolicy" and o["metadata"]["name"] == f"team-a-{NODES}"
    ]
    (account,) = [o for o in rendered if o["kind"] == "ServiceAccount"]
    user = f"system:serviceaccount:{account['metadata']['namespace']}:{account['metadata']['name']}"
    assert user == "system:serviceaccount:team-a:team-a-prepull-agent"
    assert refusals(user, "n1", "", forged, before, found=renamed)
    assert refusals(user, "n1", "status", with_condition(before, "True"), before,
                    found=renamed) == []  # fmt: skip
