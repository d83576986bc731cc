"""Room on disk for a pull: the blobs it downloads, the unpacked size of its layers (read with a
small Range request where the format carries it), and its admission under the disk budget in
list order (agent.core.engine.disk holds the arithmetic)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence

from agent.core.engine.deadline import within_deadline
from agent.core.engine.disk import (
    GZIP_LAYERS,
    ZSTD_HEADER_BYTES,
    ZSTD_LAYERS,
    DiskGuard,
    Layer,
    gzip_unpacked,
    zstd_unpacked,
)
from agent.core.engine.slots import PullSlots
from agent.core.errors import AgentError
from agent.core.images.manifest import Descriptor, Resolution, manifest_blobs
from agent.core.images.reference import Reference
from agent.core.lists.config import ImageEntry
from agent.core.ports import Deferral, Outcome, Resolver, Status
from agent.core.reports.progress import format_bytes

log = logging.getLogger(__name__)


async def blobs(registry: Resolver, resolution: Resolution) -> Resolution:
    """`resolution` with the blobs its pull downloads, for following its progress and for
    the disk budget: a multi-platform image's costs one more small request (its platform's
    manifest, kept with the documents the pull need not fetch again). Unknown (none) if that
    fails: no reason to fail a pull."""
    if resolution.blobs or not resolution.is_index or resolution.chosen is None:
        return resolution
    try:
        document = await within_deadline(
            registry.fetch_manifest(resolution.reference, resolution.chosen.digest)
        )
    except AgentError as exc:
        log.debug("%s: blob sizes unknown: %s", resolution.reference, exc)
        return resolution
    return dataclasses.replace(
        resolution,
        blobs=manifest_blobs(document),
        documents=(*resolution.documents, (document.digest, document.body)),
    )


async def layers(
    registry: Resolver, ref: Reference, blobs: Sequence[Descriptor], disk: DiskGuard
) -> list[Layer]:
    """Each blob with the unpacked size its format carries, read with one small Range
    request per compressed layer (gzip: the last 4 bytes; zstd: the frame header)."""

    async def one(blob: Descriptor) -> Layer:
        unpacked = None
        if blob.media_type in GZIP_LAYERS:
            tail = await registry.blob_range(ref, blob.digest, "-4")
            unpacked = gzip_unpacked(tail, blob.size) if tail is not None else None
        elif blob.media_type in ZSTD_LAYERS:
            head = await registry.blob_range(ref, blob.digest, f"0-{ZSTD_HEADER_BYTES - 1}")
            unpacked = zstd_unpacked(head) if head is not None else None
        return Layer(blob.media_type, blob.size, unpacked)

    layers = list(await asyncio.gather(*(one(blob) for blob in blobs)))
    disk.learn(layers)
    return layers


async def admit(
    entry: ImageEntry, disk: DiskGuard, slots: PullSlots, need: int, estimated: int
) -> Outcome | None:
    """Room for `entry` on the image filesystem, in list order; the deferral if there is
    none (or an earlier entry was deferred: what is preloaded is a prefix of the list)."""
    if slots.blocked is not None:
        return Outcome(
            entry,
            Status.DEFERRED,
            f"over disk budget: behind {slots.blocked} in the list, which does not fit "
            f"(maxDiskUsagePercent {slots.disk_budget:g}%)",
            permanent=True,
            deferred=Deferral.DISK_BUDGET,
        )
    over = await disk.admit(need, slots.disk_budget)
    if over is None:
        return None
    slots.blocked = entry.written
    if estimated:
        over += f"; {format_bytes(estimated)} of it estimated (layer sizes not readable)"
    return Outcome(entry, Status.DEFERRED, over, permanent=True, deferred=Deferral.DISK_BUDGET)
