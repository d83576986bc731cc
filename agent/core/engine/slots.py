"""What a pull waits for in one pass: a slot, room on disk, its turn in list order."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from agent.core.errors import RuntimeUnavailable
from agent.core.lists.config import ImageEntry, PreloadConfig
from agent.core.ports import Outcome

# How long an entry ready to take room waits for earlier entries still looking up their
# registry (seconds): list order within it, a dead registry's images never hold up the rest.
TURN_PATIENCE = 5.0


class PullSlots:
    """What a pull waits for in one pass: a slot (the pull concurrency; platform checks run a
    little ahead of it), room on disk, and its moment in a rollout.

    Checks go in list order, a few ahead of the pulls (per registry, so a registry that never
    answers holds back only its own images): the first pull starts after one check, not after
    every image's, and checks do not compete with the pulls for the registry all at once."""

    def __init__(
        self, concurrency: int, disk_budget: float = 100.0, rollout_spread: float = 0.0
    ) -> None:
        self.pulls = asyncio.Semaphore(concurrency)
        self.disk_budget = disk_budget
        """A pull that would take the image filesystem past this percentage waits (100: none)."""
        self.rollout_spread = rollout_spread
        """New content is pulled at the node's moment within this many seconds (core.rollout)."""
        self._ahead = 2 * concurrency
        self._checks: dict[str, asyncio.Semaphore] = {}
        self._order: dict[ImageEntry, int] = {}
        self._decided: list[asyncio.Event] = []
        self._cursor = 0
        """Admissions before this index are all decided."""
        self.blocked: str | None = None
        """The first entry the disk budget deferred in this pass: every later one waits too
        (the list is a priority order, and what is preloaded a prefix of it)."""

    @classmethod
    def of(cls, config: PreloadConfig) -> PullSlots:
        return cls(config.concurrency, config.max_disk_usage_percent, config.rollout_spread)

    def expect(self, entries: Iterable[ImageEntry]) -> None:
        """Entries that will be worked on in this pass, in list order (a list adopted mid-pass
        adds its new entries after the others)."""
        for entry in entries:
            if entry not in self._order:
                self._order[entry] = len(self._decided)
                self._decided.append(asyncio.Event())

    def decided(self, entry: ImageEntry) -> None:
        """`entry` needs no room, or its room is decided: later entries may have their turn."""
        index = self._order.get(entry)
        if index is not None:
            self._decided[index].set()

    async def turn(self, entry: ImageEntry) -> None:
        """Wait until every entry before `entry` has had its room decided, so admission goes
        in list order however the registry lookups before it interleave — but no longer than
        TURN_PATIENCE: an entry whose registry does not answer must not hold up the others (a
        dead registry costs only its own images; its entries may then find less room)."""
        index = self._order.get(entry, 0)
        while self._cursor < index and self._decided[self._cursor].is_set():
            self._cursor += 1
        deadline = asyncio.get_running_loop().time() + TURN_PATIENCE
        for earlier in self._decided[self._cursor : index]:
            try:
                async with asyncio.timeout_at(deadline):
                    await earlier.wait()
            except TimeoutError:
                return

    def checking(self, registry: str) -> asyncio.Semaphore:
        """The slot a platform check for an image of `registry` holds until its pull starts."""
        slot = self._checks.get(registry)
        if slot is None:
            slot = self._checks[registry] = asyncio.Semaphore(self._ahead)
        return slot


async def all_done(tasks: set[asyncio.Task[Outcome]]) -> None:
    """The follow of a pass whose list does not change (`once`'s): every image, no new
    list; a RuntimeUnavailable ends the wait at once."""
    await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)


def deciding(slots: PullSlots, entry: ImageEntry) -> Callable[[asyncio.Task[Outcome]], None]:
    """A done-callback marking `entry`'s room decided, however its task ended."""
    return lambda task: slots.decided(entry)


def raise_runtime_unavailable(tasks: Iterable[asyncio.Task[Outcome]]) -> None:
    """A pass cannot go on without the runtime: surface the first such failure."""
    for task in tasks:
        if task.done() and not task.cancelled():
            error = task.exception()
            if isinstance(error, RuntimeUnavailable):
                raise error
