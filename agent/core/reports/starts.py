"""Container starts that found their image on the node (hit) or waited for it (miss). Pure.

kubelet creates the pod sandbox first, then pulls what is missing, then creates containers.
So a start is a hit when its image arrived on the node before its pod's sandbox was created,
and a miss when the image arrived later: it was pulled for this pod."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from agent.core.engine.plan import NodeImage


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    sandbox_id: str
    image_id: str
    """The image id (config digest) the container runs, as CRI reports it."""
    created_ns: int


def arrivals(images: Iterable[NodeImage], created_ns: Mapping[str, int]) -> dict[str, int]:
    """image id → when its content first arrived: the oldest containerd record naming it."""
    result: dict[str, int] = {}
    for image in images:
        times = [created_ns[n] for n in (*image.repo_tags, *image.repo_digests) if n in created_ns]
        if times:
            result[image.id] = min(times)
    return result


def classify(
    containers: Iterable[ContainerInfo],
    sandbox_created_ns: Mapping[str, int],
    arrived_ns: Mapping[str, int],
    seen: set[str],
) -> list[tuple[ContainerInfo, str]]:
    """New containers (not in `seen`, which is updated) with "hit" or "miss". A container whose
    image is gone from the node cannot be judged and is left out."""
    verdicts = []
    for container in containers:
        if container.id in seen:
            continue
        seen.add(container.id)
        arrived = arrived_ns.get(container.image_id)
        if arrived is None:
            continue
        pod_started = sandbox_created_ns.get(container.sandbox_id, container.created_ns)
        verdicts.append((container, "hit" if arrived < pod_started else "miss"))
    return verdicts
