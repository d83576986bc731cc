"""Pins: the label that keeps preloaded images from kubelet's image GC, claimed by the list's
owner on the records the list owns, let go of when it no longer owns them (the pin goes when no
one holds it: agent.core.engine.claims), and read back as CRI reports it."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Sequence

from agent.core.engine.claims import Released
from agent.core.errors import AgentError
from agent.core.lists.config import ImageEntry, Kind, PreloadConfig
from agent.core.ports import ImageRuntime, Outcome, Status, TagBinder

log = logging.getLogger(__name__)
# CRI learns of a label from containerd's event stream, a moment after the update.
PIN_VISIBLE_TIMEOUT = 2.0
CRI_POLL_INTERVAL = 0.05
"""How often to look whether CRI has caught up with a change made through containerd's API
(a pin here, a tag bound in agent.core.engine.reconcile)."""


class PinKeeper:
    """The pins of one owner (a list's identity, agent.core.engine.claims): claimed on what the list
    preloaded, let go of when the list drops it. Other owners' claims and pins set by anyone
    else are never released."""

    def __init__(
        self, binder: TagBinder, runtime: ImageRuntime, clock: Callable[[], float], owner: str
    ) -> None:
        self._binder = binder
        self._runtime = runtime
        self._clock = clock
        self.owner = owner
        self._released_for: tuple[PreloadConfig, frozenset[str]] | None = None
        """The list, and the records it owned, when this owner's pins were last released:
        released again only when the records change (a steady pass costs no call, and the
        same list object not even the set)."""
        self._claimed: frozenset[str] = frozenset()
        """Records this owner's claim was last seen written on."""
        self._before: asyncio.Task[dict[str, dict[str, str]]] | None = None
        """The pin labels of the list's records before the pass's first pull (a pull may
        rewrite them); taken once a pass, by the first pull."""

    def new_pass(self) -> None:
        """Forget what an earlier pass read before its pulls (a pass that ended early never
        used it): it is stale now."""
        if self._before is not None:
            self._before.cancel()
        self._before = None

    async def before_pull(self, config: PreloadConfig) -> None:
        """Before any pull of this pass: note who holds the pins of the list's records, so
        what the pull rewrites is written back (agent.core.engine.claims.claim)."""
        if not config.pin:
            return
        if self._before is None:
            names = [name for entry in config.images for name in pin_names(entry)]
            self._before = asyncio.ensure_future(self._binder.pin_labels(names))
        try:
            await asyncio.shield(self._before)
        except AgentError as exc:
            log.warning("could not read the pin labels before pulling: %s", exc)

    def _seen_before(self) -> dict[str, dict[str, str]]:
        task, self._before = self._before, None
        if task is None or not task.done() or task.cancelled() or task.exception() is not None:
            return {}
        return task.result()

    async def pin(self, outcomes: Sequence[Outcome], *, reported: bool) -> bool:
        """Claim the pins of what we preloaded so kubelet's image GC keeps it (containerd
        1.6.22+, 1.7.3+); True if any label changed. `reported`: the runtime reports every one
        pinned already, so a steady pass whose claims are known costs no call."""
        names = [name for o in outcomes for name in names_of(o)]
        before = self._seen_before()
        if reported and set(names) <= self._claimed and not before:
            return False
        try:
            labelled = await self._binder.pin(names, self.owner, before)
        except AgentError as exc:
            # Pinning protects against GC; failing to pin does not make the node wrong.
            log.warning("could not label images as pinned: %s", exc)
            return False
        self._claimed = frozenset(names)
        return bool(labelled)

    async def release(self, config: PreloadConfig) -> list[Released]:
        """Take this owner off the pins of records its list no longer owns (every one, with
        `pin: false`), so kubelet's image GC may reclaim what nobody else holds: a list that
        changes must not leak disk on every node. Entries that failed this pass still own
        their records."""
        if self._released_for is not None and self._released_for[0] is config:
            return []
        owned = frozenset(
            name for entry in config.images for name in pin_names(entry) if config.pin
        )
        if self._released_for is not None and self._released_for[1] == owned:
            self._released_for = (config, owned)
            return []
        try:
            released = await self._binder.release(self.owner, owned)
        except AgentError as exc:
            log.warning("could not release the pins of images no longer listed: %s", exc)
            return []
        self._released_for = (config, owned)
        self._claimed &= owned
        return released

    async def read_back(self, outcomes: list[Outcome]) -> list[Outcome]:
        """The outcomes with `pinned` as CRI reports it now that the labels are on. CRI learns
        of the label from containerd's event stream, a moment after the update: look again
        briefly until every preloaded image shows it."""
        wanted = {o.image_id for o in outcomes if o.converged and o.image_id}
        deadline = self._clock() + PIN_VISIBLE_TIMEOUT
        while True:
            pinned = {image.id for image in await self._runtime.list_images() if image.pinned}
            if wanted <= pinned or self._clock() > deadline:
                break
            await asyncio.sleep(CRI_POLL_INTERVAL)
        return [
            dataclasses.replace(o, pinned=o.image_id in pinned) if o.image_id else o
            for o in outcomes
        ]


def owns_records(outcome: Outcome) -> bool:
    """Whether the entry was preloaded, so its record is ours to pin."""
    return outcome.converged and outcome.status is not Status.SKIPPED


def names_of(outcome: Outcome) -> list[str]:
    """The records a converged, preloaded entry owns (what pinning labels)."""
    return pin_names(outcome.entry) if owns_records(outcome) else []


def pin_names(entry: ImageEntry) -> list[str]:
    """The containerd image record an entry owns: its tag if it has one, else its digest.

    CRI reports an image pinned while any of its records is labelled (containerd
    internal/cri/store/image), so one label is enough; and labelling only the tag means that
    when the tag moves to new content, the old content is no longer pinned and kubelet's image
    GC may reclaim it."""
    ref = entry.reference
    return [ref.tagged] if entry.kind in (Kind.TAG, Kind.PINNED) else [ref.by_digest()]
