"""Lists the cluster writes itself (`from-cluster`): which objects of an API server run pods of
their own (a Pod or ReplicaSet a controller owns counts through its controller's template), the
pod templates CapacityBuffers hold nodes for, and where each template's pods may run, so a list
can be cut per node pool. Pure: the objects come in (agent.adapters.kube.workloads reads them).

Upstream: k8s.io/api core/v1 (NodeSelectorRequirement operators, nodeSelector), apps/v1,
batch/v1; kubernetes/autoscaler's CapacityBuffer (autoscaling.x-k8s.io: spec.podTemplateRef,
spec.scalableRef, status.podTemplateRef)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.core.errors import InputError, InvalidReference
from agent.core.images import reference as references
from agent.core.lists import config as configs
from agent.core.text import fit
from agent.preload import generate

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod")
"""The kinds whose pod templates are read (with CapacityBuffers, where served)."""
# An owner whose template is read stands for the objects it controls (apps/v1, batch/v1).
READ_THROUGH: Mapping[str, frozenset[str]] = {
    "ReplicaSet": frozenset({"Deployment"}),
    "Job": frozenset({"CronJob"}),
    "Pod": frozenset({"ReplicaSet", "StatefulSet", "DaemonSet", "Job"}),
}


@dataclass(frozen=True)
class Placement:
    """Where a pod template's pods may run."""

    node_selector: Mapping[str, str] = field(default_factory=dict)
    required: tuple[Any, ...] = ()
    """Required node affinity: nodeSelectorTerms (any one matching)."""
    tolerations: tuple[Any, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "nodeSelector": dict(self.node_selector),
            "nodeAffinity": list(self.required),
            "tolerations": list(self.tolerations),
        }

    def admits(self, labels: Mapping[str, str]) -> bool:
        """Whether a node with `labels` may run these pods (taints aside). A term on fields
        (a node's name) is taken as met: which nodes it names is not known here."""
        if any(labels.get(k) != v for k, v in self.node_selector.items()):
            return False
        return not self.required or any(_term_met(term, labels) for term in self.required)


@dataclass(frozen=True)
class Template:
    """A pod template and who holds it, as from-manifests reads objects."""

    item: dict[str, Any]
    """An object of a kind generate.container_images knows (the holder itself, or a
    PodTemplate standing for a CapacityBuffer)."""
    placement: Placement


@dataclass
class Cluster:
    templates: list[Template] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Objects left out, each with why (a broken object, a buffer whose template is gone)."""


def counted(item: Mapping[str, Any]) -> bool:
    """Whether `item` runs pods of its own: not controlled by an owner whose template is read."""
    metadata = item.get("metadata") if isinstance(item.get("metadata"), Mapping) else {}
    assert isinstance(metadata, Mapping)
    through = READ_THROUGH.get(str(item.get("kind")), frozenset())
    for ref in metadata.get("ownerReferences") or []:
        if (
            isinstance(ref, Mapping)
            and ref.get("controller") is True
            and ref.get("kind") in through
        ):
            return False
    return True


def pod_spec(item: Mapping[str, Any]) -> Mapping[str, Any] | None:
    spec: Any = item
    for key in generate.POD_SPEC_PATHS.get(str(item.get("kind")), ("-",)):
        spec = spec.get(key) if isinstance(spec, Mapping) else None
    return spec if isinstance(spec, Mapping) else None


def placement(spec: Mapping[str, Any]) -> Placement:
    selector = spec.get("nodeSelector")
    node_selector = (
        {str(k): str(v) for k, v in selector.items()} if isinstance(selector, Mapping) else {}
    )
    affinity = spec.get("affinity")
    node = affinity.get("nodeAffinity") if isinstance(affinity, Mapping) else None
    required = (
        node.get("requiredDuringSchedulingIgnoredDuringExecution")
        if isinstance(node, Mapping)
        else None
    )
    terms = required.get("nodeSelectorTerms") if isinstance(required, Mapping) else None
    tolerations = spec.get("tolerations")
    return Placement(
        node_selector,
        tuple(t for t in terms or [] if isinstance(t, Mapping)),
        tuple(t for t in tolerations or [] if isinstance(t, Mapping))
        if isinstance(tolerations, list)
        else (),
    )


def _term_met(term: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    expressions = term.get("matchExpressions") or []
    if not isinstance(expressions, list):
        return False
    return all(_expression_met(e, labels) for e in expressions if isinstance(e, Mapping))


def _expression_met(expression: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, operator = expression.get("key"), expression.get("operator")
    values = [str(v) for v in expression.get("values") or []]
    value = labels.get(str(key))
    if operator == "In":
        return value in values
    if operator == "NotIn":
        return value not in values
    if operator == "Exists":
        return value is not None
    if operator == "DoesNotExist":
        return value is None
    if operator in ("Gt", "Lt") and value is not None and len(values) == 1:
        try:
            here, there = int(value), int(values[0])
        except ValueError:
            return False
        return here > there if operator == "Gt" else here < there
    return False


def templates(
    workloads: Iterable[Mapping[str, Any]],
    buffers: Iterable[Mapping[str, Any]],
    resolved: Mapping[tuple[str, str], Mapping[str, Any]],
) -> Cluster:
    """The pod templates of `workloads` that run pods of their own, and of `buffers` (their
    PodTemplate: `resolved[namespace, name]`, the one the buffer controller resolved, else the
    spec's; a `scalableRef` buffer stands for its workload, counted already)."""
    found = Cluster()
    for item in workloads:
        if not counted(item):
            continue
        spec = pod_spec(item)
        if spec is None:
            found.skipped.append(f"{_name(item)}: no pod template")
            continue
        found.templates.append(Template(dict(item), placement(spec)))
    for buffer in buffers:
        ref = buffer_template(buffer)
        if ref is None:
            continue  # a scalableRef: the workload it names is read on its own
        template = resolved.get(ref)
        spec = pod_spec({"kind": "PodTemplate", **template}) if template else None
        if template is None or spec is None:
            found.skipped.append(f"{_name(buffer)}: its PodTemplate {ref[0]}/{ref[1]} is not there")
            continue
        metadata = buffer.get("metadata") if isinstance(buffer.get("metadata"), Mapping) else {}
        assert isinstance(metadata, Mapping)
        stand_in = {**template, "kind": "CapacityBuffer", "metadata": dict(metadata)}
        found.templates.append(Template(stand_in, placement(spec)))
    return found


def buffer_template(buffer: Mapping[str, Any]) -> tuple[str, str] | None:
    """(namespace, name) of the PodTemplate a CapacityBuffer keeps nodes for: its status's
    (what the controller resolved), else its spec's; None for a buffer of a workload."""
    metadata = buffer.get("metadata") if isinstance(buffer.get("metadata"), Mapping) else {}
    assert isinstance(metadata, Mapping)
    namespace = str(metadata.get("namespace") or "default")
    for part in ("status", "spec"):
        section = buffer.get(part)
        ref = section.get("podTemplateRef") if isinstance(section, Mapping) else None
        if isinstance(ref, Mapping) and isinstance(ref.get("name"), str) and ref["name"]:
            return namespace, ref["name"]
    return None


def found_images(
    cluster: Cluster, node_labels: Mapping[str, str] | None = None
) -> tuple[generate.Found, dict[str, list[Placement]]]:
    """What `cluster`'s templates keep (from-manifests' rules: pull policies, init, ephemeral
    containers, image volumes) on nodes with `node_labels` (None: any node), and per image the
    placements it runs under."""
    chosen = [
        t for t in cluster.templates if node_labels is None or t.placement.admits(node_labels)
    ]
    found = generate.from_manifests(t.item for t in chosen)
    key_of = {references.parse(image): image for image in (*found.keep, *found.always)}
    where: dict[str, list[Placement]] = {}
    for template in chosen:
        for used in generate.container_images(template.item):
            try:
                image = key_of.get(references.parse(used.image))
            except InvalidReference:
                continue  # said by from_manifests
            if image is not None and template.placement not in where.setdefault(image, []):
                where[image].append(template.placement)
    return found, where


def parse_labels(text: str) -> dict[str, str]:
    """`k=v,k2=v2` (a node pool's labels); ValueError naming what is not `key=value`."""
    labels: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise ValueError(f"{part!r} is not key=value")
        labels[key.strip()] = value.strip()
    return labels


def _name(item: Mapping[str, Any]) -> str:
    metadata = item.get("metadata") if isinstance(item.get("metadata"), Mapping) else {}
    assert isinstance(metadata, Mapping)
    namespace = fit(str(metadata.get("namespace") or "default"))
    return f"{fit(str(item.get('kind', '?')))} {namespace}/{fit(str(metadata.get('name', '?')))}"


def names(items: Sequence[Mapping[str, Any]]) -> Iterator[str]:
    return (_name(item) for item in items)


def dropped(current: str | None, new: str) -> tuple[list[str], list[str]]:
    """(added, dropped) image names from the list text `current` (None, or a text that is no
    list: nothing) to `new`. A digest that moved is neither: the same image, kept current."""
    before = _names(current)
    after = _names(new)
    return sorted(after - before), sorted(before - after)


def held(current: str | None, new: str, max_drop_percent: float) -> str | None:
    """Why writing `new` over `current` must wait, or None: a list that would lose more than
    `max_drop_percent` of its images at once is more likely an API server that answered badly
    (a namespace it failed to list, a selector typed wrong) than the cluster."""
    before = _names(current)
    _, gone = dropped(current, new)
    if not before or 100.0 * len(gone) / len(before) <= max_drop_percent:
        return None
    shown = ", ".join(gone[:5]) + (f" and {len(gone) - 5} more" if len(gone) > 5 else "")
    return (
        f"held: the new list drops {len(gone)} of the {len(before)} images listed now "
        f"(more than {max_drop_percent:g}%): {shown}"
    )


def _names(text: str | None) -> set[str]:
    if text is None:
        return set()
    try:
        return {entry.reference.name for entry in configs.parse(text, "<list>").images}
    except InputError:
        return set()
