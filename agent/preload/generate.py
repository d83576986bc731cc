"""Preload lists that maintain themselves: from the workloads' manifests (`from-manifests`) or
from what a node runs now (`suggest`). Both write a normal preload list, to be locked. Pure."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.core.errors import InvalidReference
from agent.core.images import reference as references
from agent.core.text import fit

# Where each kind keeps its pod template (k8s.io/api: apps/v1, batch/v1, core/v1).
POD_SPEC_PATHS: Mapping[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "PodTemplate": ("template", "spec"),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "ReplicationController": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    # from-cluster's stand-in for a CapacityBuffer: the PodTemplate it keeps nodes for.
    "CapacityBuffer": ("template", "spec"),
}
_CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")
ALWAYS, IF_NOT_PRESENT, NEVER = "Always", "IfNotPresent", "Never"


@dataclass(frozen=True)
class ContainerImage:
    image: str
    """As the manifest writes it."""
    policy: str
    """The effective imagePullPolicy, after Kubernetes' defaulting."""
    workload: str
    """`Kind namespace/name (container c)` or `(image volume v)`: who uses it."""


@dataclass
class Found:
    """What a set of manifests asks nodes to run."""

    keep: dict[str, list[str]] = field(default_factory=dict)
    """IfNotPresent/Never images, in order of first use → the workloads using them."""
    always: dict[str, list[str]] = field(default_factory=dict)
    """Always images (kubelet pulls them on every start anyway) → workloads."""
    invalid: list[str] = field(default_factory=list)
    """Images no node could pull (not a valid reference), each with its workload."""
    policies: dict[str, set[str]] = field(default_factory=dict)
    """Kept images → the pull policies their workloads use (IfNotPresent, Never)."""

    def mutable(self) -> dict[str, list[str]]:
        """Kept images named by a tag alone: each node keeps whatever the tag meant when it
        first pulled it (the drift a lock prevents)."""
        return {image: users for image, users in self.keep.items() if "@" not in image}


def effective_policy(image: str, written: object) -> str:
    """imagePullPolicy as Kubernetes defaults it (k8s.io/kubernetes pkg/apis/core/v1
    defaults.go): an explicit policy wins; else the tag `latest` (even with a digest) or
    neither tag nor digest → Always; anything else → IfNotPresent."""
    if written in (ALWAYS, IF_NOT_PRESENT, NEVER):
        return str(written)
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.partition(":")[2] if ":" in last else ""
    if tag == "latest" or (not tag and not digest):
        return ALWAYS
    return IF_NOT_PRESENT


def objects(documents: Iterable[Any]) -> Iterator[dict[str, Any]]:
    """Every object in YAML documents, `List` kinds (`kubectl get -o yaml`) opened."""
    for document in documents:
        if not isinstance(document, dict):
            continue
        if isinstance(document.get("items"), list) and str(document.get("kind", "")).endswith(
            "List"
        ):
            yield from objects(document["items"])
        else:
            yield document


def container_images(item: Mapping[str, Any]) -> Iterator[ContainerImage]:
    """Every image a pod template makes kubelet pull: its containers' and its image volumes'."""
    kind = str(item.get("kind", ""))
    path = POD_SPEC_PATHS.get(kind)
    if path is None:
        return
    spec: Any = item
    for key in path:
        spec = spec.get(key) if isinstance(spec, dict) else None
    if not isinstance(spec, dict):
        return
    metadata = item.get("metadata") if isinstance(item.get("metadata"), dict) else {}
    assert isinstance(metadata, dict)
    namespace = fit(metadata.get("namespace") or "default")
    owner = f"{fit(kind)} {namespace}/{fit(metadata.get('name', '?'))}"
    for listed in _CONTAINER_LISTS:
        for container in spec.get(listed) or []:
            if not isinstance(container, dict) or not isinstance(container.get("image"), str):
                continue
            image = container["image"].strip()
            which = "init container" if listed == "initContainers" else "container"
            if listed == "ephemeralContainers":
                which = "ephemeral container"
            policy = effective_policy(image, container.get("imagePullPolicy"))
            name = fit(container.get("name", "?"))
            yield ContainerImage(image, policy, f"{owner} ({which} {name})")
    # Image volumes (KEP-4639): kubelet pulls `image.reference` as it pulls a container's image,
    # `image.pullPolicy` defaulted by the same rule.
    for volume in spec.get("volumes") or []:
        source = volume.get("image") if isinstance(volume, dict) else None
        if not isinstance(source, dict) or not isinstance(source.get("reference"), str):
            continue
        image = source["reference"].strip()
        policy = effective_policy(image, source.get("pullPolicy"))
        name = fit(volume.get("name", "?"))
        yield ContainerImage(image, policy, f"{owner} (image volume {name})")


def from_manifests(documents: Iterable[Any]) -> Found:
    found = Found()
    written: dict[references.Reference, str] = {}
    """One entry per image however it is written (`nginx:1` and `docker.io/library/nginx:1`)."""
    for item in objects(documents):
        for used in container_images(item):
            try:
                ref = references.parse(used.image)
            except InvalidReference as exc:
                found.invalid.append(f"{used.workload}: {exc}")
                continue
            image = written.setdefault(ref, used.image)
            target = found.always if used.policy == ALWAYS else found.keep
            users = target.setdefault(image, [])
            if target is found.keep:
                found.policies.setdefault(image, set()).add(used.policy)
            if used.workload not in users:
                users.append(used.workload)
    return found


@dataclass(frozen=True)
class Running:
    """One container's image running on a node, or one image it mounts as a volume, as CRI
    reports it: the image's names there."""

    repo_tags: tuple[str, ...]
    repo_digests: tuple[str, ...]
    volume: bool = False


def suggest(running: Sequence[Running]) -> list[tuple[str, int, int]]:
    """The references of the images a node runs now — containers' and image volumes' — pinned
    to the digest running, with how many containers run each and how many mount it, most used
    first (ties in name order): `name:tag@digest` where the node knows a tag, else
    `name@digest`. Images the node knows by no name are left out."""
    containers: Counter[str] = Counter()
    volumes: Counter[str] = Counter()
    for use in running:
        reference = _pinned(use)
        if reference is not None and _parses(reference):
            (volumes if use.volume else containers)[reference] += 1
    uses = containers + volumes
    ranked = sorted(uses, key=lambda reference: (-uses[reference], reference))
    return [(reference, containers[reference], volumes[reference]) for reference in ranked]


def _parses(reference: str) -> bool:
    """Whether a name the runtime reports is an image reference (it goes into a list as is)."""
    try:
        references.parse(reference)
    except InvalidReference:
        return False
    return True


def _pinned(container: Running) -> str | None:
    digests = {d.partition("@")[0]: d.partition("@")[2] for d in container.repo_digests}
    for tagged in container.repo_tags:
        name = tagged.rpartition(":")[0]
        if name in digests:
            return f"{tagged}@{digests[name]}"
    if container.repo_digests:
        return sorted(container.repo_digests)[0]
    return container.repo_tags[0] if container.repo_tags else None


def render_list(images: Iterable[tuple[str, str]], header: str) -> str:
    """A preload list: one entry per (image, comment), the comment after it. Comments are
    escaped (printable) whatever their source; images are references that parsed."""
    lines = [f"# {fit(line)}".rstrip() for line in header.splitlines()]
    lines.append("images:")
    entries = list(images)
    width = max((len(image) for image, _ in entries), default=0)
    for image, comment in entries:
        comment = fit(comment)
        lines.append(f"  - {image.ljust(width)}  # {comment}" if comment else f"  - {image}")
    if not entries:
        lines[-1] = "images: []"
    return "\n".join(lines) + "\n"
