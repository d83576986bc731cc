"""Locking a preload list: resolve every tag to its current digest, concurrently."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Protocol

from agent.config import ImageEntry
from agent.errors import AgentError
from agent.reference import Reference

DEFAULT_CONCURRENCY = 16
"""HEADs in flight to one registry: cheap for a registry, and hundreds of tags lock in seconds."""
MAX_CONCURRENCY = 256


class TagResolver(Protocol):
    async def head_digest(self, ref: Reference) -> tuple[str, str]: ...


async def resolve_tags(
    registry: TagResolver, entries: Iterable[ImageEntry], concurrency: int = DEFAULT_CONCURRENCY
) -> dict[ImageEntry, str | AgentError]:
    """The current digest of every unpinned entry, or the error that kept it from resolving."""
    limit = asyncio.Semaphore(concurrency)

    async def pin(entry: ImageEntry) -> str | AgentError:
        async with limit:
            try:
                digest, _ = await registry.head_digest(entry.reference)
                return digest
            except AgentError as exc:
                return exc

    tags = [e for e in entries if e.reference.digest is None]
    results = await asyncio.gather(*(pin(e) for e in tags))
    return dict(zip(tags, results, strict=True))
