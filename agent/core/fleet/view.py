"""The fleet at a glance: which agent serves which node, one row per node from the /status its
agent answers (or why none came), and a summary across them. Pure: the Kubernetes objects and
/status documents come in as parsed JSON, checked here as hostile input."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from agent.core.errors import Malformed as Malformed  # the fleet view's own error, said here
from agent.core.fleet.targeting import why_not_targeted
from agent.core.jsonread import as_list as _list
from agent.core.jsonread import dig as _dig
from agent.core.jsonread import text as _text

FAILING_STATES = ("failed", "refused")


@dataclasses.dataclass(frozen=True)
class Target:
    """A node and the agent pod serving it: `port` to ask it on, or `why_not` nobody can be."""

    node: str
    pod: str | None = None
    port: int | None = None
    why_not: str | None = None
    targeted: bool = True
    """The agent's DaemonSet would run a pod here; a node it never targets (another OS, a
    virtual node) is shown apart and counts toward nothing."""


@dataclasses.dataclass(frozen=True)
class Failure:
    image: str
    reason: str


@dataclasses.dataclass(frozen=True)
class Converging:
    """A ready node's progress toward a newer list (its /status `converging`)."""

    to: str | None
    since: float | None
    present: int
    desired: int
    overdue: bool


@dataclasses.dataclass(frozen=True)
class NodeRow:
    node: str
    pod: str | None
    answered: bool
    """Its agent's /status was read; if not, `error` says why."""
    ready: bool
    images_ready: int = 0
    images_desired: int = 0
    failing: tuple[Failure, ...] = ()
    deferred: int = 0
    pulling: int = 0
    bytes_done: int = 0
    bytes_total: int = 0
    served_list: str | None = None
    """The list the node last became ready with (its digest)."""
    list: str | None = None
    """The list the agent has now: another than `served_list` while it works toward it."""
    missing: tuple[str, ...] = ()
    error: str | None = None
    targeted: bool = True
    converging: Converging | None = None
    """Ready on the list it served while it converges to `list`."""

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "pod": self.pod,
            "targeted": self.targeted,
            "answered": self.answered,
            "ready": self.ready,
            "converging": dataclasses.asdict(self.converging) if self.converging else None,
            "images": {"ready": self.images_ready, "desired": self.images_desired},
            "missing": list(self.missing),
            "failing": [dataclasses.asdict(f) for f in self.failing],
            "deferred": self.deferred,
            "in_flight": {
                "pulls": self.pulling,
                "bytes_done": self.bytes_done,
                "bytes_total": self.bytes_total,
            },
            "served_list": self.served_list,
            "list": self.list,
            "error": self.error,
        }


# -- who serves which node ---------------------------------------------------------------------


def nodes_of(node_list: Any) -> dict[str, dict[str, Any]]:
    """The Nodes of a NodeList by name; Malformed if it is not one."""
    return {_name(item): item for item in _items(node_list, "NodeList")}


def daemonsets_of(pod_list: Any) -> list[str]:
    """The DaemonSets that control the agent pods (their controller ownerReferences)."""
    names = set()
    for pod in _items(pod_list, "PodList"):
        for owner in _list(_dig(pod, "metadata", "ownerReferences")):
            if _dig(owner, "kind") == "DaemonSet" and _dig(owner, "controller") is True:
                names.add(_text(_dig(owner, "name")))
    return sorted(name for name in names if name)


def targets(
    nodes: Mapping[str, Any] | None,
    pod_list: Any,
    port: str,
    daemonsets: Sequence[Any] | None = None,
) -> list[Target]:
    """One Target per node, in name order: `nodes` (None: the nodes the pods run on), each with
    the agent pod on it that can answer (Running, with an IP and the port), else why none can.
    `port` is the container port's name or number. A node with no agent pod that none of
    `daemonsets` would run on is not targeted (None: every node is)."""
    by_node: dict[str, list[dict[str, Any]]] = {}
    for pod in _items(pod_list, "PodList"):
        node = _dig(pod, "spec", "nodeName")
        if isinstance(node, str) and node:
            by_node.setdefault(node, []).append(pod)
    wanted = sorted(set(nodes) if nodes is not None else set(by_node))
    found = []
    for node in wanted:
        pods = by_node.get(node, [])
        why = None
        if not pods and nodes is not None and daemonsets is not None:
            why = why_not_targeted(daemonsets, nodes[node])
        if why is not None:
            found.append(Target(node, why_not=f"not targeted: {why}", targeted=False))
        else:
            found.append(_target(node, pods, port))
    return found


def _target(node: str, pods: list[dict[str, Any]], port: str) -> Target:
    if not pods:
        return Target(node, why_not="no agent pod on this node")
    # During a rolling update a node has an old pod terminating and a new one starting: the
    # running one answers.
    running = [p for p in pods if _dig(p, "status", "phase") == "Running" and _pod_ip(p)]
    if not running:
        pod = pods[0]
        phase = _dig(pod, "status", "phase")
        return Target(node, _name(pod), why_not=f"agent pod {_text(phase) or 'Unknown'}")
    pod = max(running, key=lambda p: _text(_dig(p, "metadata", "creationTimestamp")))
    number = _port(pod, port)
    if number is None:
        return Target(node, _name(pod), why_not=f"agent pod has no container port {port!r}")
    return Target(node, _name(pod), number)


def _port(pod: dict[str, Any], port: str) -> int | None:
    if port.isdigit():
        return int(port) if 0 < int(port) < 65536 else None
    for container in _list(_dig(pod, "spec", "containers")):
        for declared in _list(_dig(container, "ports")):
            number = _dig(declared, "containerPort")
            if _dig(declared, "name") == port and isinstance(number, int) and 0 < number < 65536:
                return number
    return None


def _pod_ip(pod: dict[str, Any]) -> str:
    return _text(_dig(pod, "status", "podIP"))


# -- one node's row ----------------------------------------------------------------------------


def unanswered(target: Target, reason: str) -> NodeRow:
    return NodeRow(
        target.node,
        target.pod,
        answered=False,
        ready=False,
        error=reason,
        targeted=target.targeted,
    )


def row(target: Target, status: Any) -> NodeRow:
    """The row of a node whose agent answered `status` (its /status, parsed); Malformed if the
    answer is not shaped as an agent's /status (a node's answer is checked, never trusted)."""
    if not isinstance(status, dict) or not isinstance(status.get("ready"), bool):
        raise Malformed("the answer is not an agent's /status (no `ready`)")
    images = status.get("images")
    if not isinstance(images, list) or not all(isinstance(i, dict) for i in images):
        raise Malformed("the answer is not an agent's /status (`images` is not a list)")
    desired = [i for i in images if i.get("state") != "skipped"]
    ready = [i for i in desired if i.get("state") == "present"]
    failing = tuple(
        Failure(_text(i.get("image")) or "?", _text(i.get("last_error")) or _text(i["state"]))
        for i in desired
        if i.get("state") in FAILING_STATES
    )
    pulls = [i["pull"] for i in desired if isinstance(i.get("pull"), dict)]
    config = status["config"] if isinstance(status.get("config"), dict) else {}
    return NodeRow(
        target.node,
        target.pod,
        answered=True,
        ready=status["ready"],
        images_ready=len(ready),
        images_desired=len(desired),
        failing=failing,
        deferred=sum(1 for i in desired if i.get("state") == "deferred"),
        pulling=len(pulls),
        bytes_done=sum(_count(p.get("bytes_done")) for p in pulls),
        bytes_total=sum(_count(p.get("bytes_total")) for p in pulls),
        served_list=_digest(status.get("served_list")),
        list=_digest(config.get("digest")),
        missing=tuple(_text(i.get("image")) or "?" for i in desired if i.get("state") != "present"),
        error=_text(status.get("last_error")) or None,
        converging=_converging(status.get("converging")) if status["ready"] else None,
    )


def _converging(value: Any) -> Converging | None:
    if not isinstance(value, dict):
        return None
    since = value.get("since")
    return Converging(
        to=_digest(value.get("to")),
        since=float(since)
        if isinstance(since, int | float) and not isinstance(since, bool)
        else None,
        present=_count(value.get("present")),
        desired=_count(value.get("desired")),
        overdue=value.get("overdue") is True,
    )


# -- across the fleet --------------------------------------------------------------------------


def summary(rows: Iterable[NodeRow]) -> dict[str, Any]:
    """Nodes ready and not, images missing fleet-wide (each with the nodes it is missing on),
    which image fails where, and which lists the nodes serve (a half-rolled-out list shows as
    two)."""
    every = list(rows)
    rows = [r for r in every if r.targeted]
    missing: dict[str, list[str]] = {}
    failing: dict[str, list[str]] = {}
    lists: dict[str, int] = {}
    for item in rows:
        for image in item.missing:
            missing.setdefault(image, []).append(item.node)
        for failure in item.failing:
            failing.setdefault(failure.image, []).append(item.node)
        if item.answered:
            key = item.served_list or "none"
            lists[key] = lists.get(key, 0) + 1
    return {
        "nodes": len(rows),
        "ready": sum(1 for r in rows if r.ready),
        "not_ready": sum(1 for r in rows if r.answered and not r.ready),
        "not_answering": sum(1 for r in rows if not r.answered),
        "not_targeted": len(every) - len(rows),
        "converging": sum(1 for r in rows if r.converging is not None),
        "overdue": sum(1 for r in rows if r.converging is not None and r.converging.overdue),
        "images_missing": sum(len(nodes) for nodes in missing.values()),
        "missing": _by_count(missing),
        "failing": _by_count(failing),
        "lists_served": dict(sorted(lists.items(), key=lambda kv: (-kv[1], kv[0]))),
    }


def _by_count(where: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """Most widespread first."""
    return {k: sorted(v) for k, v in sorted(where.items(), key=lambda kv: (-len(kv[1]), kv[0]))}


# -- checked reads of hostile JSON -------------------------------------------------------------


def _items(document: Any, kind: str) -> list[dict[str, Any]]:
    items = document.get("items") if isinstance(document, dict) else None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise Malformed(f"the API server's answer is not a {kind}")
    return items


def name_of(item: Any) -> str:
    """An object's name; Malformed if it has none."""
    if not isinstance(item, dict):
        raise Malformed("an object in the API server's answer is not an object")
    return _name(item)


def _name(item: dict[str, Any]) -> str:
    name = _dig(item, "metadata", "name")
    if not isinstance(name, str) or not name:
        raise Malformed("an object in the API server's list has no name")
    return name


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _digest(value: Any) -> str | None:
    if isinstance(value, str) and value.startswith("sha256:") and len(value) == 71:
        return value
    return None
