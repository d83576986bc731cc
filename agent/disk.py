"""The disk budget: never let preloading fill the image filesystem past `maxDiskUsagePercent`.

Past kubelet's image GC threshold (imageGCHighThresholdPercent, 85 by default) kubelet deletes
images — perhaps the ones just preloaded, which the agent then restores: GC thrash. The budget
(80 by default) is checked before every pull against the filesystem the runtime keeps images
on (its mountpoint from CRI ImageFsInfo, measured with statvfs as kubelet measures it), counting
the pulls already admitted but not finished. The check is pure; DiskGuard does the measuring."""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DiskUsage:
    total: int
    available: int

    @property
    def used(self) -> int:
        return self.total - self.available

    @property
    def percent(self) -> float:
        return 100.0 * self.used / self.total if self.total else 0.0


def over_budget(usage: DiskUsage, reserved: int, incoming: int, budget: float) -> str | None:
    """Why a pull of `incoming` bytes must wait, or None. `reserved`: bytes of pulls admitted
    and not finished yet. `incoming` is the image's compressed size, a lower bound of what it
    takes (unpacked layers take more): the check errs towards pulling."""
    if usage.total <= 0:
        return None
    after = 100.0 * (usage.used + reserved + incoming) / usage.total
    if after <= budget:
        return None
    now = 100.0 * (usage.used + reserved) / usage.total
    return (
        f"over disk budget: {now:.0f}% used, budget {budget:g}% "
        f"(this image would take it to {after:.0f}%)"
    )


def usage_of(path: str) -> DiskUsage:
    """The filesystem holding `path`, as statvfs (and kubelet) see it; OSError if not visible."""
    stats = os.statvfs(path)
    return DiskUsage(stats.f_blocks * stats.f_frsize, stats.f_bavail * stats.f_frsize)


class DiskGuard:
    """Admits pulls within the budget. The image filesystem is asked of the runtime once; if
    the agent cannot see it (a pod without the hostPath mount), the budget is not enforced and
    that is said once, and in `problem`."""

    def __init__(
        self,
        mountpoint: Callable[[], Awaitable[str | None]],
        measure: Callable[[str], DiskUsage] = usage_of,
    ) -> None:
        self._mountpoint = mountpoint
        self._measure = measure
        self._path: str | None = None
        self._reserved = 0
        self.last: DiskUsage | None = None
        self.problem: str | None = None
        """Why the budget cannot be checked, if it cannot."""

    async def admit(self, incoming: int, budget: float) -> str | None:
        """Reserve `incoming` bytes and return None, or say why the pull must wait."""
        usage = await self._usage()
        if usage is not None:
            reason = over_budget(usage, self._reserved, incoming, budget)
            if reason is not None:
                return reason
        self._reserved += incoming
        return None

    async def look(self) -> DiskUsage | None:
        """The image filesystem now (None if it cannot be measured: `problem` says why)."""
        return await self._usage()

    def release(self, incoming: int) -> None:
        """The pull admitted with `incoming` bytes is over: statvfs now counts what it wrote."""
        self._reserved = max(0, self._reserved - incoming)

    async def _usage(self) -> DiskUsage | None:
        if self._path is None:
            self._path = await self._mountpoint()
            if self._path is None:
                self._cannot("the runtime does not say where it keeps images")
                return None
        try:
            self.last = self._measure(self._path)
        except OSError as exc:
            self._cannot(f"cannot measure {self._path}: {exc.strerror or exc}")
            return None
        self.problem = None
        return self.last

    def _cannot(self, why: str) -> None:
        if self.problem != why:
            log.warning("disk budget not enforced: %s", why)
        self.problem = why
        return None
