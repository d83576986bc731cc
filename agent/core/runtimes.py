"""What a container runtime release can do, from the name and version CRI `Version` reports.

Pure: the thresholds are facts about containerd releases (containerd/containerd, tags and
release notes), checked against the Debian builds the tests run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CONTAINERD = "containerd"
# containerd/containerd#8742: before these releases the CRI plugin's PullImage shares one
# registry-headers map between concurrent pulls (remotes/docker NewResolver), and parallel pulls
# can kill containerd with "fatal error: concurrent map writes". Fixed by #8800 (1.6.22) and
# #8799 (1.7.3); 2.x never had it.
RACE_FIXED = {(1, 6): (1, 6, 22), (1, 7): (1, 7, 3)}
# The CRI plugin reports images labelled io.cri-containerd.pinned=pinned as pinned (kubelet's
# image GC then skips them) from these releases on; older ones keep the label and ignore it.
PINS_FROM = {(1, 6): (1, 6, 22), (1, 7): (1, 7, 3)}
_VERSION = re.compile(r"v?(\d+)\.(\d+)(?:\.(\d+))?")

Version = tuple[int, int, int]


def parse_version(text: str) -> Version | None:
    """`1.6.20~ds1`, `v1.7.24`, `2.1.9+unknown` → (major, minor, patch); None if unreadable."""
    match = _VERSION.match(text.strip())
    if match is None:
        return None
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


@dataclass(frozen=True)
class RuntimeInfo:
    """Who the runtime behind the socket is, as CRI `Version` says."""

    name: str
    version: str
    api_version: str


@dataclass(frozen=True)
class RuntimeFeatures:
    name: str
    version: str
    tag_binding: bool
    """containerd's Images API binds a tag to pinned content (CRI alone cannot)."""
    pins_honoured: bool
    """CRI reports our pin label as `pinned`, so kubelet's image GC keeps preloaded images."""
    parallel_pulls: bool
    """Concurrent PullImage calls are safe; False on releases with containerd#8742."""

    @property
    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "version": self.version,
            "tag_binding": self.tag_binding,
            "pins_honoured": self.pins_honoured,
            "parallel_pulls": self.parallel_pulls,
        }

    def limitations(self) -> list[str]:
        """What an operator must know about this runtime, one sentence each."""
        notes = []
        if not self.tag_binding:
            notes.append(
                f"{self.name} has no containerd Images API: tags cannot be bound to pinned "
                "digests, pods must reference digests"
            )
        if self.name == CONTAINERD and not self.pins_honoured:
            notes.append(
                f"containerd {self.version} ignores the pin label (needs 1.6.22+, 1.7.3+ or "
                "2.x): kubelet's image GC may evict preloaded images, which are restored on "
                "the next pass"
            )
        if not self.parallel_pulls:
            notes.append(
                f"containerd {self.version} can crash on concurrent pulls (containerd#8742, "
                "fixed in 1.6.22 and 1.7.3): pulls run one at a time"
            )
        return notes


def features_of(name: str, version: str) -> RuntimeFeatures:
    if name != CONTAINERD:
        # Another CRI runtime (CRI-O, …): no containerd Images API, no known pull race.
        return RuntimeFeatures(name, version, False, False, True)
    parsed = parse_version(version)
    if parsed is None:
        # An unreadable version may be an old build: never risk the runtime's life on it.
        return RuntimeFeatures(name, version, True, False, False)
    return RuntimeFeatures(
        name,
        version,
        tag_binding=True,
        pins_honoured=_at_least(parsed, PINS_FROM),
        parallel_pulls=_at_least(parsed, RACE_FIXED),
    )


def _at_least(version: Version, fixed_in: dict[tuple[int, int], Version]) -> bool:
    """True if `version` is at or past the fix for its release line (lines after the table's
    last are fixed from their start; lines before its first never got the fix)."""
    line = version[:2]
    if line in fixed_in:
        return version >= fixed_in[line]
    return line > max(fixed_in)
