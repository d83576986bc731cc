"""Who holds a pin: the labels on an image record that say which lists (owners) want it kept,
read and changed. Pure: the adapter (agent.adapters.runtime.containerd) writes what these
functions decide, one label path at a time, so owners writing the same record never undo each
other's labels.

A record is pinned (`io.cri-containerd.pinned=pinned`, kubelet's image GC skips it) while any
holder is left:
- an owner: `prepull.io/owner.<hash of the name>=<name>`, one label per list that wants it;
- a foreign pin: `prepull.io/foreign-pin=true`, a pin that was there before any agent touched
  the record (set by hand, by another tool, by a node-image baker). No agent ever releases it;
  an operator may set it by hand to keep a pin whatever the lists say;
- a legacy pin: `prepull.io/pinned=true`, what agents before owners wrote. An owner that lists
  the record adopts it (its own label replaces the mark); otherwise it stays until
  `prepull-agent release --legacy`."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

PIN_KEY, PIN_VALUE = "io.cri-containerd.pinned", "pinned"
OWNER_PREFIX = "prepull.io/owner."
FOREIGN_KEY = "prepull.io/foreign-pin"
LEGACY_KEY = "prepull.io/pinned"
MARK = "true"
LEGACY = "legacy"
"""The holder name `release` takes for the pins agents before owners set."""
MAX_OWNER = 200
"""Longest owner name written; containerd bounds a label's key and value together (4 KiB)."""
_OWNER_TEXT = re.compile(r"[^A-Za-z0-9._:/@=+-]")

Changes = dict[str, str | None]
"""Label key → its new value, or None to remove it."""


def owner_key(owner: str) -> str:
    """The label an owner's claim is written under: a hash keeps any name a valid, short key."""
    return OWNER_PREFIX + hashlib.sha256(owner.encode()).hexdigest()[:16]


def owner_name(text: str) -> str:
    """An owner name as it is written and shown: printable, unambiguous, bounded. What is
    not in the safe set becomes `_`, so a name from a file path or a flag can do no harm."""
    cleaned = _OWNER_TEXT.sub("_", text.strip())[:MAX_OWNER]
    return cleaned or "unnamed"


@dataclass(frozen=True)
class Holders:
    """What a record's labels say of its pin."""

    pinned: bool
    owners: tuple[tuple[str, str], ...]
    """(label key, owner name) per owner, by key; the names are hostile text (escape them)."""
    foreign: bool
    legacy: bool

    @classmethod
    def of(cls, labels: Mapping[str, str]) -> Holders:
        return cls(
            pinned=labels.get(PIN_KEY) == PIN_VALUE,
            owners=tuple(sorted((k, v) for k, v in labels.items() if k.startswith(OWNER_PREFIX))),
            foreign=FOREIGN_KEY in labels,
            legacy=LEGACY_KEY in labels,
        )

    @property
    def marked(self) -> bool:
        """Some agent has touched this record's pin (an owner, a foreign or a legacy mark)."""
        return bool(self.owners) or self.foreign or self.legacy

    @property
    def pinned_before_us(self) -> bool:
        """Pinned, and no agent has touched it: someone else's pin."""
        return self.pinned and not self.marked

    def holds(self, owner: str) -> bool:
        return any(key == owner_key(owner) for key, _ in self.owners)

    def names(self, but: str | None = None) -> list[str]:
        """Who keeps the pin (apart from `but`), as said to a person."""
        skip = owner_key(but) if but is not None else None
        named = sorted(name for key, name in self.owners if key != skip)
        return named + ["foreign pin"] * self.foreign + ["an earlier agent"] * self.legacy


@dataclass(frozen=True)
class Released:
    """A record an owner let go of: `kept_by` says who still holds its pin (empty: unpinned,
    kubelet's image GC may reclaim it)."""

    name: str
    kept_by: tuple[str, ...] = ()


def released_text(released: Released) -> str:
    """What a person reads of one let-go claim (the holders' names are escaped by the log)."""
    if released.kept_by:
        return f"no longer listed; still pinned for {', '.join(released.kept_by)}"
    return "pin released, no longer listed (kubelet's image GC may reclaim it)"


def relevant(labels: Mapping[str, str]) -> dict[str, str]:
    """The labels that say who holds a pin (what a snapshot before a pull keeps)."""
    return {
        k: v
        for k, v in labels.items()
        if k in (PIN_KEY, FOREIGN_KEY, LEGACY_KEY) or k.startswith(OWNER_PREFIX)
    }


def claim(
    labels: Mapping[str, str], owner: str, before: Mapping[str, str] | None = None
) -> Changes:
    """What makes `owner` a holder of the record's pin, given its labels now and, if the pass
    pulled, as they were before the pull: containerd's CRI rewrites a record's labels when a
    pull re-creates it (1.6 replaces them all for a record `ctr` pulled or imported), so a pin
    someone set by hand, seen before, must be known as theirs after.

    A pin there before any agent touched the record, now or before the pull, becomes a foreign
    pin (so is a foreign mark seen before); a legacy mark is adopted; the pin label is set.
    Other owners' claims are not written back from `before`: one may have been released since
    (restoring it would leak the pin), and an owner that lists the image claims it again on its
    next pass."""
    now = dict(labels)
    changes: Changes = {}
    seen = before or {}
    foreign = Holders.of(seen).pinned_before_us or FOREIGN_KEY in seen
    if (foreign or Holders.of(now).pinned_before_us) and FOREIGN_KEY not in now:
        changes[FOREIGN_KEY] = MARK
    key = owner_key(owner)
    if now.get(key) != owner:
        changes[key] = owner
    if now.get(PIN_KEY) != PIN_VALUE:
        changes[PIN_KEY] = PIN_VALUE
    if LEGACY_KEY in now:
        changes[LEGACY_KEY] = None  # adopted: this owner's label says it now
    return changes


def holder_key(owner: str) -> str:
    """The label that says `owner` holds a pin (`LEGACY`: the mark of agents before owners)."""
    return LEGACY_KEY if owner == LEGACY else owner_key(owner)


def release(labels: Mapping[str, str], owner: str) -> Changes:
    """What takes `owner` off the record's pin (`LEGACY`: the mark of agents before owners);
    the pin itself goes only when no holder is left. Nothing if `owner` does not hold it."""
    key = holder_key(owner)
    if key not in labels:
        return {}
    changes: Changes = {key: None}
    rest = {k: v for k, v in labels.items() if k != key}
    if not Holders.of(rest).marked and labels.get(PIN_KEY) == PIN_VALUE:
        changes[PIN_KEY] = None
    return changes


def applied(labels: Mapping[str, str], changes: Changes) -> dict[str, str]:
    """`labels` with `changes` made."""
    result = dict(labels)
    for key, value in changes.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result


def owner_of(
    explicit: str | None,
    config_path: str,
    *,
    pod_name: str = "",
    pod_namespace: str = "",
) -> str:
    """Whose pins a run claims: `--owner` if given; else, for an agent a DaemonSet runs, that
    DaemonSet (`daemonset:<namespace>/<name>`: two DaemonSets on one node are two owners, and
    a restarted or updated pod is the same one); else the list's file (`file:<absolute path>`).

    A DaemonSet's pod is named `<daemonset>-<5 random characters>` (the API server's
    generateName), so its DaemonSet's name is the pod's name without its last part."""
    if explicit:
        return owner_name(explicit)
    if pod_name and pod_namespace and "-" in pod_name:
        return owner_name(f"daemonset:{pod_namespace}/{pod_name.rpartition('-')[0]}")
    return owner_name(f"file:{os.path.abspath(config_path)}")
