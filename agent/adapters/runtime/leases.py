"""One containerd lease shared by every pull in flight, for the documents seeded before them.

A lease's create and its delete are each a metadata transaction containerd syncs to disk: one
lease per pull put two of them on every small image's critical path. Shared, a pass of 128 small
images pays for one pair. A lease is renewed (a new one for new pulls, the old one deleted when
its last pull is done) well before its expiry label would let containerd collect what it holds
mid-pull."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable


class SharedLease:
    def __init__(
        self,
        create: Callable[[], Awaitable[str | None]],
        delete: Callable[[str], Awaitable[None]],
        renew_after: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._create = create
        """A new lease's id, or None when there is none to be had (seeding is best-effort)."""
        self._delete = delete
        self._renew_after = renew_after
        self._clock = clock
        self._current: str | None = None
        self._created = 0.0
        self._users: dict[str, int] = {}
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[str | None]:
        """A lease held while the context lasts, or None if none could be created."""
        lease = await self._join()
        try:
            yield lease
        finally:
            if lease is not None:
                await self._leave(lease)

    async def _join(self) -> str | None:
        async with self._lock:
            if self._current is None or self._clock() - self._created > self._renew_after:
                fresh = await self._create()
                if fresh is None:
                    return None
                self._current, self._created = fresh, self._clock()
            self._users[self._current] = self._users.get(self._current, 0) + 1
            return self._current

    async def _leave(self, lease: str) -> None:
        async with self._lock:
            self._users[lease] -= 1
            if self._users[lease]:
                return
            del self._users[lease]
            if lease == self._current:
                self._current = None
        await self._delete(lease)
