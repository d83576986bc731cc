"""The disk budget: never let preloading fill the image filesystem past `maxDiskUsagePercent`.

Past kubelet's image GC threshold (imageGCHighThresholdPercent, 85 by default) kubelet deletes
images — perhaps the ones just preloaded, which the agent then restores: GC thrash. The budget
(80 by default) is checked before every pull against the filesystem the runtime keeps images
on (its mountpoint from CRI ImageFsInfo, measured with statvfs as kubelet measures it), counting
what the pulls admitted and not finished will take. An image takes its compressed blobs (the
content store keeps them) plus its unpacked layers (the snapshots): the unpacked size of a
layer is read from the registry before the pull where the format carries it (gzip's trailer,
a zstd frame header), else estimated. All of it is pure: the measuring (statvfs) is injected,
agent.adapters.disk.usage_of in the agent."""

from __future__ import annotations

import logging
import struct
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

# Layer media types by how their unpacked size can be learnt (image-spec layer.md; Docker's).
GZIP_LAYERS = frozenset(
    {
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    }
)
ZSTD_LAYERS = frozenset({"application/vnd.oci.image.layer.v1.tar+zstd"})
COMPRESSED_LAYERS = GZIP_LAYERS | ZSTD_LAYERS
PLAIN_LAYERS = frozenset(
    {"application/vnd.oci.image.layer.v1.tar", "application/vnd.docker.image.rootfs.diff.tar"}
)
# Unpacked ÷ compressed for a layer whose size cannot be read, until this node has measured
# layers of its own: container layers compress 2-4x; erring high defers, erring low overfills.
DEFAULT_UNPACK_RATIO = 4.0
MAX_UNPACK_RATIO = 20.0
ZSTD_MAGIC = 0xFD2FB528
# The most a zstd frame header can take: magic, descriptor, window, dictionary id, content size.
ZSTD_HEADER_BYTES = 18


def gzip_unpacked(trailer: bytes, compressed: int) -> int | None:
    """The unpacked size of a gzip layer from its last 4 bytes (ISIZE, RFC 1952: the size mod
    2^32, little-endian). ISIZE wraps at 4 GiB: the smallest size consistent with it and with
    deflate (which never shrinks data by more than a little) is taken. A layer of several gzip
    members reports its last member's size: never less than the compressed size is counted."""
    if len(trailer) != 4:
        return None
    size: int = struct.unpack("<I", trailer)[0]
    floor = compressed - compressed // 1000 - 1024
    while size < floor:
        size += 1 << 32
    return max(size, compressed)


def zstd_unpacked(header: bytes) -> int | None:
    """Frame_Content_Size from a zstd frame header (RFC 8878 3.1.1.1), if the frame carries
    it; None otherwise. A layer of several frames reports its first frame's size."""
    if len(header) < 6 or struct.unpack("<I", header[:4])[0] != ZSTD_MAGIC:
        return None
    descriptor = header[4]
    fcs_flag, single_segment, dictionary_flag = descriptor >> 6, descriptor >> 5 & 1, descriptor & 3
    field_size = (1 if single_segment else 0) if fcs_flag == 0 else (2, 4, 8)[fcs_flag - 1]
    if field_size == 0:
        return None
    at = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[dictionary_flag]
    raw = header[at : at + field_size]
    if len(raw) != field_size:
        return None
    value = int.from_bytes(raw, "little")
    return value + 256 if field_size == 2 else value


@dataclass(frozen=True)
class Layer:
    media_type: str
    compressed: int
    unpacked: int | None = None
    """As read from the registry; None when it could not be."""


def footprint(blobs: Sequence[Layer], ratio: float) -> tuple[int, int]:
    """(bytes an image takes on the image filesystem, of which estimated): every blob
    compressed, plus each layer unpacked — read, or the compressed size times `ratio`."""
    total = estimated = 0
    for blob in blobs:
        total += blob.compressed
        if blob.media_type in PLAIN_LAYERS:
            total += blob.compressed
        elif blob.unpacked is not None:
            total += blob.unpacked
        elif blob.media_type in COMPRESSED_LAYERS or "layer" in blob.media_type:
            guess = int(blob.compressed * ratio)
            total += guess
            estimated += guess
    return total, estimated


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
    """Why a pull taking `incoming` bytes (footprint()) must wait, or None. `reserved`: what
    the pulls admitted and not finished yet will take."""
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


class DiskGuard:
    """Admits pulls within the budget. The image filesystem is asked of the runtime once; if
    the agent cannot see it (a pod without the hostPath mount), the budget is not enforced and
    that is said once, and in `problem`."""

    def __init__(
        self,
        mountpoint: Callable[[], Awaitable[str | None]],
        measure: Callable[[str], DiskUsage],
    ) -> None:
        self._mountpoint = mountpoint
        self._measure = measure
        self._path: str | None = None
        self._reserved = 0
        self._measured = (0, 0)
        """(compressed, unpacked) bytes of the layers whose unpacked size was read: the ratio
        this node has seen, used for layers whose size cannot be read."""
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

    def learn(self, layers: Sequence[Layer]) -> None:
        """Remember what the layers whose unpacked size was read unpack to."""
        compressed, unpacked = self._measured
        for layer in layers:
            if layer.unpacked is not None and layer.media_type not in PLAIN_LAYERS:
                compressed += layer.compressed
                unpacked += layer.unpacked
        self._measured = (compressed, unpacked)

    @property
    def ratio(self) -> float:
        """Unpacked ÷ compressed for layers of unknown size: what this node measured (within
        [1, MAX_UNPACK_RATIO]), else DEFAULT_UNPACK_RATIO."""
        compressed, unpacked = self._measured
        if compressed <= 0:
            return DEFAULT_UNPACK_RATIO
        return min(MAX_UNPACK_RATIO, max(1.0, unpacked / compressed))

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
