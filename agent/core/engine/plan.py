"""Desired list × node state × platform → one step per image (hit, pull, bind, skip). Pure."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from agent.core.images.platform import Platform, describe
from agent.core.lists.config import ImageEntry, Kind


# NodeImage and Step are built once per image per pass and never changed after: plain slotted
# dataclasses, as a frozen one's __init__ costs 5x (object.__setattr__ per field).
@dataclass(slots=True)
class NodeImage:
    """One image as the runtime reports it."""

    id: str
    repo_tags: tuple[str, ...]
    repo_digests: tuple[str, ...]
    size: int
    pinned: bool = False


class Action(enum.Enum):
    HIT = "hit"
    """Present with the right content: nothing to do."""
    PULL = "pull"
    """Pull `pull_ref`, then bind `bind_tag` to it if set."""
    BIND = "bind"
    """The content is present; only the tag must be moved onto it."""
    SKIP = "skip"
    """Not meant for this node's platform: satisfied by definition."""


@dataclass(slots=True)
class Step:
    entry: ImageEntry
    action: Action
    reason: str
    digest: str | None = None
    """The top-level digest the node must hold (None for a skipped entry)."""
    pull_ref: str | None = None
    bind_tag: str | None = None
    """`name:tag` to point at `name@digest` once the content is present."""
    present: NodeImage | None = None
    drift: bool = False
    """The tag on the node named other content than the registry or the pin says."""


class NodeState:
    """One ListImages answer, indexed the ways kubelet and containerd look images up."""

    def __init__(self, images: Iterable[NodeImage]) -> None:
        self.images = tuple(images)
        self.by_tag = {tag: image for image in self.images for tag in image.repo_tags}
        self.by_digest = {ref: image for image in self.images for ref in image.repo_digests}


def plan(
    entries: Iterable[ImageEntry],
    node: Platform,
    state: NodeState,
    tag_digests: Mapping[ImageEntry, str],
) -> list[Step]:
    """A step per entry. Tag entries need their current digest in `tag_digests`."""
    return [plan_one(entry, node, state, tag_digests.get(entry)) for entry in entries]


Seen = tuple[NodeImage | None, NodeImage | None]
"""What the node holds under an entry's names, (by digest, by tag)."""


def inputs(entry: ImageEntry, state: NodeState) -> Seen:
    """What the node's state holds under the entry's names, (by digest, by tag): all a plan
    for the entry reads of the state (with the registry's digest for a tag entry)."""
    ref = entry.reference
    by_digest = state.by_digest.get(ref.by_digest()) if ref.digest is not None else None
    by_tag = state.by_tag.get(ref.tagged) if entry.kind is not Kind.DIGEST else None
    return by_digest, by_tag


def plan_one(entry: ImageEntry, node: Platform, state: NodeState, tag_digest: str | None) -> Step:
    return plan_seen(entry, node, inputs(entry, state), tag_digest)


def plan_seen(
    entry: ImageEntry,
    node: Platform,
    seen: Seen,
    tag_digest: str | None,
) -> Step:
    """plan_one, given what `inputs` found for the entry."""
    ref = entry.reference
    if not entry.applies_to(node):
        return Step(entry, Action.SKIP, f"for {describe(entry.platforms)}, not {node}")
    content, tagged = seen
    if entry.kind == Kind.DIGEST:
        assert ref.digest is not None
        image = content
        if image is not None:
            return Step(entry, Action.HIT, "present", ref.digest, present=image)
        return Step(entry, Action.PULL, "absent", ref.digest, pull_ref=ref.by_digest())
    if entry.kind == Kind.PINNED:
        assert ref.digest is not None
        drift = tagged is not None and (content is None or tagged.id != content.id)
        if content is not None and tagged is not None and tagged.id == content.id:
            return Step(entry, Action.HIT, "present", ref.digest, present=content)
        if content is not None:
            reason = f"tag names {tagged.id}" if tagged is not None else "tag not bound"
            return Step(
                entry,
                Action.BIND,
                reason,
                ref.digest,
                bind_tag=ref.tagged,
                present=content,
                drift=drift,
            )
        return Step(
            entry,
            Action.PULL,
            f"absent; the tag names {tagged.id} on the node" if tagged is not None else "absent",
            ref.digest,
            pull_ref=ref.by_digest(),
            bind_tag=ref.tagged,
            drift=drift,
        )
    if tag_digest is None:
        raise ValueError(f"{entry.written}: a tag entry needs its resolved digest to be planned")
    if tagged is not None and ref.by_digest(tag_digest) in tagged.repo_digests:
        return Step(entry, Action.HIT, "present", tag_digest, present=tagged)
    if tagged is not None:
        return Step(
            entry,
            Action.PULL,
            f"tag moved: the node has {_short(tagged.repo_digests, ref.name)}, "
            f"the registry {tag_digest}",
            tag_digest,
            pull_ref=ref.tagged,
            drift=True,
        )
    return Step(entry, Action.PULL, "absent", tag_digest, pull_ref=ref.tagged)


def _short(repo_digests: Iterable[str], name: str) -> str:
    mine = [d.partition("@")[2] for d in repo_digests if d.partition("@")[0] == name]
    return ", ".join(mine) or "an image without a recorded digest"
