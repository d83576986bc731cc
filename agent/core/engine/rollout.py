"""Rollouts that spare the registry: when the list names content a node has never held, a node
that already serves pulls it only at its own moment within `rollout.spread` — derived from a
hash of the node's name and the digest, and placed on the wall clock, so it is uniform over
the window across a fleet, a different order for every image, and the same moment after any
restart of the agent. Content the node held before (a restore after image GC) is never delayed,
and neither is a node's first fill (a new node holding none of its list, which the readiness
gate keeps out of service until it has it) unless `rollout.spreadFirstFill` says so. Pure."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from agent.core.engine.plan import NodeState, inputs
from agent.core.images.platform import Platform
from agent.core.lists.config import ImageEntry, format_duration

_SCALE = float(1 << 64)


def slot(node: str, digest: str, spread: float) -> float:
    """Seconds into the window at which `node` may pull `digest`: in [0, spread)."""
    if spread <= 0:
        return 0.0
    key = hashlib.sha256(f"{node}\n{digest}".encode()).digest()
    return int.from_bytes(key[:8], "big") / _SCALE * spread


def moment(node: str, digest: str, spread: float, now: float) -> float:
    """The first wall-clock time at or after `now` that falls on the node's slot in the
    window repeating every `spread` seconds. It depends on the node, the digest and the clock
    only: an agent restarted before the moment finds the same one. A fleet that sees new
    content at one time pulls it uniformly over the next `spread` seconds."""
    return now + (slot(node, digest, spread) - now) % spread


def holds_any(entries: Iterable[ImageEntry], node: Platform, state: NodeState) -> bool:
    """Whether the node holds anything of its list (under any of an entry's names)."""
    return any(any(inputs(entry, state)) for entry in entries if entry.applies_to(node))


@dataclass
class Rollout:
    """What a node remembers to place its pulls: each waiting digest's moment, which digests
    it has held (their restores are not delayed), and whether it is filling for the first time."""

    node: str
    clock: Callable[[], float] = time.time
    """Wall-clock seconds: moments are placed on it, so they survive restarts."""
    spread_first_fill: bool = False
    moments: dict[str, float] = field(default_factory=dict)
    held: set[str] = field(default_factory=set)
    first_fill: bool = False
    """The node held none of its list when the agent first looked, and has not been ready
    since: it pulls at once (unless spread_first_fill)."""
    looked: bool = False
    """Whether first_look has been told what the node held."""

    def first_look(self, holds_any_listed: bool) -> None:
        """The agent's first look at the node: a node holding none of its list is a new node
        filling for the first time (the fleet's existing nodes already serve)."""
        if not self.looked:
            self.looked = True
            self.first_fill = not holds_any_listed

    def ready(self) -> None:
        """The node holds its list: from now on new content waits for its moment."""
        self.first_fill = False

    def not_before(self, digest: str, spread: float) -> float | None:
        """The wall-clock time `digest` may be pulled, if that is later than now; else None."""
        if spread <= 0 or digest in self.held:
            return None
        if self.first_fill and not self.spread_first_fill:
            return None
        now = self.clock()
        due = self.moments.get(digest)
        if due is None:
            due = self.moments[digest] = moment(self.node, digest, spread, now)
        return due if due > now else None

    def present(self, digest: str) -> None:
        """The node holds `digest` now: if it goes missing later, restore it at once."""
        self.held.add(digest)
        self.moments.pop(digest, None)

    def next_due(self) -> float | None:
        """Seconds until the earliest moment still to come (when the next pass should run)."""
        now = self.clock()
        later = [due - now for due in self.moments.values() if due > now]
        return min(later) if later else None


def waiting_for_slot(rollout: Rollout | None, digest: str | None, spread: float) -> str | None:
    """Why new content waits for this node's moment in the rollout, or None to pull now.
    Decided before any registry request: a waiting node costs the registry nothing."""
    if rollout is None or digest is None:
        return None
    due = rollout.not_before(digest, spread)
    if due is None:
        return None
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(due))
    return f"waiting for its rollout slot until {when} (rollout.spread {format_duration(spread)})"
