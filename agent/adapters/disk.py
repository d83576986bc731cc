"""The image filesystem as statvfs (and kubelet) see it: what the disk budget (core.engine.disk)
measures."""

from __future__ import annotations

import os

from agent.core.engine.disk import DiskUsage


def usage_of(path: str) -> DiskUsage:
    """The filesystem holding `path`, as statvfs (and kubelet) see it; OSError if not visible."""
    stats = os.statvfs(path)
    return DiskUsage(stats.f_blocks * stats.f_frsize, stats.f_bavail * stats.f_frsize)
