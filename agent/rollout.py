"""Rollouts that spare the registry: when the list names content a node has never held, the node
pulls it only at its own moment within `rollout.spread` after it first saw it, derived from a
hash of the node's name and the digest — uniform over the window across a fleet, a different
order for every image, the same moment on every restart of the agent. Content the node held
before (a restore after image GC) is never delayed. Pure."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

_SCALE = float(1 << 64)


def slot(node: str, digest: str, spread: float) -> float:
    """Seconds into the window at which `node` may pull `digest`: in [0, spread)."""
    if spread <= 0:
        return 0.0
    key = hashlib.sha256(f"{node}\n{digest}".encode()).digest()
    return int.from_bytes(key[:8], "big") / _SCALE * spread


@dataclass
class Rollout:
    """What a node remembers to place its pulls: when it first wanted each digest, and which
    digests it has held (their restores are not delayed)."""

    node: str
    first_wanted: dict[str, float] = field(default_factory=dict)
    held: set[str] = field(default_factory=set)

    def not_before(self, digest: str, now: float, spread: float) -> float | None:
        """When `digest` may be pulled, if that is later than `now`; else None."""
        if spread <= 0 or digest in self.held:
            return None
        start = self.first_wanted.setdefault(digest, now)
        due = start + slot(self.node, digest, spread)
        return due if due > now else None

    def present(self, digest: str) -> None:
        """The node holds `digest` now: if it goes missing later, restore it at once."""
        self.held.add(digest)
        self.first_wanted.pop(digest, None)

    def next_due(self, now: float, spread: float) -> float | None:
        """The earliest moment a waiting digest may be pulled (when the next pass should run)."""
        due = [
            start + slot(self.node, digest, spread) for digest, start in self.first_wanted.items()
        ]
        later = [moment for moment in due if moment > now]
        return min(later) if later else None
