"""Which nodes a DaemonSet runs a pod on, decided as its controller decides (kubernetes
pkg/controller/daemon: the node's name, the pod template's node selector and required node
affinity, and the node's NoSchedule/NoExecute taints against the template's tolerations plus
those the controller adds to every daemon pod). Pure: the objects come in as parsed JSON,
checked as hostile input; anything not shaped as Kubernetes writes it does not match."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent.core.jsonread import as_list as _list
from agent.core.jsonread import dig as _dig
from agent.core.jsonread import text as _text

# What the DaemonSet controller adds to every daemon pod (kubernetes pkg/controller/daemon/util
# AddOrUpdateDaemonPodTolerations): a daemon pod runs through these conditions.
DAEMON_TOLERATIONS: tuple[dict[str, str], ...] = (
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
)
HOST_NETWORK_TOLERATION = {
    "key": "node.kubernetes.io/network-unavailable",
    "operator": "Exists",
    "effect": "NoSchedule",
}
BLOCKING_EFFECTS = ("NoSchedule", "NoExecute")


def why_not_targeted(daemonsets: Sequence[Any], node: Any) -> str | None:
    """None if any of `daemonsets` would run a pod on `node`, else why the first does not."""
    reasons = [_why_not(ds, node) for ds in daemonsets]
    if not reasons or any(reason is None for reason in reasons):
        return None
    return reasons[0]


def _why_not(daemonset: Any, node: Any) -> str | None:
    spec = _dig(daemonset, "spec", "template", "spec")
    if not isinstance(spec, dict):
        return "its DaemonSet has no pod template"
    name = _text(_dig(node, "metadata", "name"))
    labels = _labels(_dig(node, "metadata", "labels"))
    wanted_name = spec.get("nodeName")
    if isinstance(wanted_name, str) and wanted_name and wanted_name != name:
        return f"the DaemonSet runs on {wanted_name} only"
    selector = spec.get("nodeSelector")
    if isinstance(selector, dict):
        for key, value in selector.items():
            if labels.get(key) != value:
                return f"nodeSelector {key}={value}"
    terms = _dig(spec, "affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution")
    if terms is not None and not _any_term(_dig(terms, "nodeSelectorTerms"), labels, name):
        return "required node affinity"
    tolerations = [t for t in _list(spec.get("tolerations")) if isinstance(t, dict)]
    tolerations += DAEMON_TOLERATIONS
    if spec.get("hostNetwork") is True:
        tolerations.append(HOST_NETWORK_TOLERATION)
    for taint in _list(_dig(node, "spec", "taints")):
        if not isinstance(taint, dict) or taint.get("effect") not in BLOCKING_EFFECTS:
            continue
        if not any(_tolerates(t, taint) for t in tolerations):
            return f"taint {_text(taint.get('key'))}:{taint.get('effect')} not tolerated"
    return None


def _any_term(terms: Any, labels: dict[str, str], name: str) -> bool:
    """Node selector terms are ORed; an empty or malformed list matches nothing (as the
    scheduler: `nodeSelectorTerms: []` selects no node)."""
    return any(_term(term, labels, name) for term in _list(terms) if isinstance(term, dict))


def _term(term: dict[str, Any], labels: dict[str, str], name: str) -> bool:
    """A term's requirements are ANDed; a term with none matches nothing."""
    expressions = _list(term.get("matchExpressions"))
    fields = _list(term.get("matchFields"))
    if not expressions and not fields:
        return False
    return all(_requirement(e, labels) for e in expressions) and all(
        _requirement(f, {"metadata.name": name}) for f in fields
    )


def _requirement(expression: Any, labels: dict[str, str]) -> bool:
    if not isinstance(expression, dict):
        return False
    key, operator = _text(expression.get("key")), expression.get("operator")
    values = [v for v in _list(expression.get("values")) if isinstance(v, str)]
    present = key in labels
    if operator == "In":
        return present and labels[key] in values
    if operator == "NotIn":
        return not present or labels[key] not in values
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    if operator in ("Gt", "Lt") and present and len(values) == 1:
        try:
            have, bound = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return have > bound if operator == "Gt" else have < bound
    return False


def _tolerates(toleration: dict[str, Any], taint: dict[str, Any]) -> bool:
    """kubernetes core/v1 Toleration.ToleratesTaint: an empty effect matches every effect, an
    empty key with Exists every taint; Equal (the default) compares values."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    operator = toleration.get("operator") or "Equal"
    if operator == "Exists":
        return key == "" or key == taint.get("key")
    return (
        operator == "Equal"
        and key == taint.get("key")
        and (toleration.get("value") or "") == (taint.get("value") or "")
    )


def _labels(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}
