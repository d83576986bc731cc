"""Locking a preload list: resolve every tag to its current digest, concurrently."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from agent.config import ImageEntry, Kind
from agent.errors import AgentError
from agent.reference import Reference

DEFAULT_CONCURRENCY = 16
"""HEADs in flight to one registry: cheap for a registry, and hundreds of tags lock in seconds."""
MAX_CONCURRENCY = 256


class TagResolver(Protocol):
    async def head_digest(self, ref: Reference) -> tuple[str, str]: ...


async def resolve_tags(
    registry: TagResolver,
    entries: Iterable[ImageEntry],
    concurrency: int = DEFAULT_CONCURRENCY,
    *,
    pinned_too: bool = False,
) -> dict[ImageEntry, str | AgentError]:
    """The digest the tag of every unpinned entry (with `pinned_too`, of pinned ones as well)
    names now, or the error that kept it from resolving."""
    limit = asyncio.Semaphore(concurrency)

    async def pin(entry: ImageEntry) -> str | AgentError:
        ref = entry.reference
        async with limit:
            try:
                digest, _ = await registry.head_digest(Reference(ref.domain, ref.path, ref.tag))
                return digest
            except AgentError as exc:
                return exc

    def wanted(entry: ImageEntry) -> bool:
        if entry.reference.digest is None:
            return True
        return pinned_too and entry.kind is Kind.PINNED

    tags = [e for e in entries if wanted(e)]
    results = await asyncio.gather(*(pin(e) for e in tags))
    return dict(zip(tags, results, strict=True))


def stale(
    listed: Sequence[ImageEntry], now: Mapping[ImageEntry, str], locked: Sequence[ImageEntry]
) -> list[str]:
    """Why a lock no longer serves its list, one line per entry (empty: it does). `now` holds
    the digest each tag of the list names in the registry today (pinned entries' tags too)."""
    problems = []
    in_lock = {_key(e.reference): e for e in locked}
    for entry in listed:
        ref = entry.reference
        lock_entry = in_lock.pop(_key(ref), None)
        if entry.kind is Kind.PINNED and now.get(entry) not in (None, ref.digest):
            problems.append(
                f"{entry.written} (line {entry.line}): the tag moved in the registry to "
                f"{now[entry]}"
            )
            continue
        expected = ref.digest or now.get(entry)
        if lock_entry is None:
            problems.append(f"{entry.written} (line {entry.line}): not in the lock")
        elif lock_entry.reference.digest != expected:
            problems.append(
                f"{entry.written} (line {entry.line}): the lock has "
                f"{lock_entry.reference.digest}, the registry {expected}"
            )
    for lock_entry in in_lock.values():
        problems.append(
            f"{lock_entry.written} (lock line {lock_entry.line}): in the lock, not in the list"
        )
    return problems


def _key(ref: Reference) -> tuple[str, str | None, str | None]:
    """How a list entry and its lock entry are matched: by name and tag (a digest-only entry,
    which has no tag, by its digest)."""
    return (ref.name, ref.tag, None) if ref.tag is not None else (ref.name, None, ref.digest)
