"""The pass driver: one pass over the list on one node, with bounded concurrency — the images
the node's state settles decided on the spot, the others each through an ImagePipeline
(agent.core.engine.pipeline), a list adopted mid-pass followed, pins kept and released after."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from agent.core.engine.claims import Released
from agent.core.engine.deadline import within_deadline
from agent.core.engine.disk import DiskGuard
from agent.core.engine.pins import PinKeeper, owns_records
from agent.core.engine.pipeline import ImagePipeline, present
from agent.core.engine.plan import (
    Action,
    NodeImage,
    NodeState,
    Seen,
    Step,
    inputs,
    plan_seen,
)
from agent.core.engine.rollout import Rollout, holds_any
from agent.core.engine.slots import PullSlots, all_done, deciding, raise_runtime_unavailable
from agent.core.errors import (
    AgentError,
)
from agent.core.images.platform import Platform
from agent.core.images.reference import Reference
from agent.core.lists.config import ImageEntry, Kind, PreloadConfig
from agent.core.lists.credentials import Credential
from agent.core.ports import ContentSeeder, ImageRuntime, Outcome, Resolver, Status, TagBinder
from agent.core.reports.progress import Progress

log = logging.getLogger(__name__)
Follow = Callable[[set[asyncio.Task["Outcome"]]], Awaitable[PreloadConfig | None]]
"""Waits for the images in flight: None when they are done, or a list adopted meanwhile."""


class Reconciler:
    def __init__(
        self,
        runtime: ImageRuntime,
        registry: Resolver,
        binder: TagBinder | None,
        node: Platform,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_start: Callable[[ImageEntry], None] = lambda entry: None,
        stopping: Callable[[], bool] = lambda: False,
        credentials: Callable[[Reference], Sequence[Credential]] = lambda ref: (),
        pins_honoured: bool = True,
        progress: Progress | None = None,
        disk: DiskGuard | None = None,
        rollout: Rollout | None = None,
        seeder: ContentSeeder | None = None,
        owner: str = "",
    ) -> None:
        self._runtime = runtime
        self._node = node
        self._pins_honoured = pins_honoured
        """The runtime reports our pin label (agent.core.runtimes): worth reading back."""
        self._rollout = rollout
        """Where new content waits for this node's moment (daemon mode), if anywhere."""
        self._pins = PinKeeper(binder, runtime, clock, owner) if binder is not None else None
        """Whose pins this reconciler claims and releases: `owner`'s (agent.core.engine.claims)."""
        self._image = ImagePipeline(
            runtime,
            registry,
            binder,
            node,
            credentials,
            seeder,
            self._pins,
            clock=clock,
            on_start=on_start,
            stopping=stopping,
            progress=progress,
            disk=disk,
            rollout=rollout,
            owner=owner,
        )
        self.released: list[Released] = []
        """Records whose pin the last pass took back: they left the list."""
        self._settled_before: dict[ImageEntry, tuple[Seen, Outcome]] = {}
        self._settled_now: dict[ImageEntry, tuple[Seen, Outcome]] = {}
        """Settled outcomes by entry, with the node images they were decided on: the last
        pass's (reused when the same images are seen again) and this pass's."""

    async def converge(
        self,
        config: PreloadConfig,
        on_outcome: Callable[[Outcome], None] = lambda o: None,
        listed: Awaitable[list[NodeImage]] | None = None,
        follow: Follow | None = None,
    ) -> list[Outcome]:
        """One pass over the list — the one pass driver, for `once` and the daemon alike;
        RuntimeUnavailable if the runtime cannot be asked at all. `on_outcome` hears of each
        image as soon as it is done (pins are read back after). `listed`: the node's images,
        asked for earlier (else they are listed now). `follow` waits for the images in flight
        and may hand back a list adopted meanwhile (the daemon's): images no longer listed are
        cancelled (their pulls too), new ones start, the rest go on undisturbed."""
        state = await self.snapshot(listed)
        if self._pins is not None:
            self._pins.new_pass()
        if self._rollout is not None:
            if not self._rollout.looked:  # once: a walk of thousands of entries is hot
                self._rollout.first_look(holds_any(config.images, self._node, state))
            self._rollout.spread_first_fill = config.rollout_spread_first_fill
        slots = PullSlots.of(config)
        settled: dict[Reference, Outcome] = {}
        running: dict[Reference, asyncio.Task[Outcome]] = {}
        try:
            while True:
                wanted = {e.reference: e for e in config.images}
                for ref, task in list(running.items()):
                    if ref not in wanted:
                        task.cancel()
                        del running[ref]
                for ref, entry in wanted.items():
                    if ref in running or ref in settled:
                        continue
                    # Present images are decided on the spot: no task per image.
                    quick = self.settled(entry, state)
                    if quick is not None:
                        settled[ref] = quick
                        on_outcome(quick)
                        continue
                    slots.expect([entry])
                    work = self._reported(entry, state, slots, config, on_outcome)
                    running[ref] = task = asyncio.create_task(work)
                    # Also when cancelled before it ever ran (a list change mid-pass): a task
                    # that never started never reaches the pipeline's own `finally`.
                    task.add_done_callback(deciding(slots, entry))
                if not running:
                    break
                adopted = await (follow or all_done)(set(running.values()))
                raise_runtime_unavailable(running.values())
                if adopted is None:
                    break
                config = adopted
                state = await self.snapshot()
                log.info("new list adopted mid-pass", extra={"event": "config_applied"})
            outcomes = [
                settled.get(e.reference) or running[e.reference].result() for e in config.images
            ]
        finally:
            for task in running.values():
                task.cancel()
            await asyncio.gather(*running.values(), return_exceptions=True)
        return await self.finish(config, outcomes)

    async def _reported(
        self,
        entry: ImageEntry,
        state: NodeState,
        slots: PullSlots,
        config: PreloadConfig,
        on_outcome: Callable[[Outcome], None],
    ) -> Outcome:
        outcome = await self._image.converge(entry, state, slots, config)
        on_outcome(outcome)
        return outcome

    def settled(self, entry: ImageEntry, state: NodeState) -> Outcome | None:
        """The outcome of an entry decided by the node's state alone, with no call (present
        pinned or digest entries, entries for other platforms); None if it needs work. A
        converged pass over thousands of images then costs no task or call per image."""
        if entry.kind is Kind.TAG and entry.applies_to(self._node):
            return None
        seen = inputs(entry, state)
        before = self._settled_before.get(entry)
        if before is not None and before[0] == seen:
            outcome: Outcome | None = before[1]
        else:
            outcome = self._settle(entry, seen)
        if outcome is not None:
            self._settled_now[entry] = (seen, outcome)
        return outcome

    def _settle(self, entry: ImageEntry, seen: Seen) -> Outcome | None:
        step = plan_seen(entry, self._node, seen, None)
        if step.action is Action.SKIP:
            return Outcome(entry, Status.SKIPPED, step.reason, action=step.action)
        if step.action is Action.HIT:
            assert step.present is not None
            return present(entry, Status.HIT, step.reason, step.digest, step.present, step.action)
        return None

    async def plan(
        self, config: PreloadConfig, listed: Awaitable[list[NodeImage]] | None = None
    ) -> list[Step | Outcome]:
        """What a pass would do, doing none of it (`once --dry-run`): a step per image, or the
        failure that kept a tag from resolving. Reads the node and the registry only."""
        state = await self.snapshot(listed)

        async def one(entry: ImageEntry) -> Step | Outcome:
            try:
                step = await self._image.step(entry, state)
                if step.action is not Action.PULL:
                    return step
                # The platform check a pass makes before pulling: read-only, so made here too.
                resolution = await within_deadline(self._image.check(entry.reference, step))
                refusal = resolution.refusal()
            except AgentError as exc:
                return Outcome(entry, Status.FAILED, str(exc))
            return Outcome(entry, Status.REFUSED, refusal, permanent=True) if refusal else step

        return list(await asyncio.gather(*(one(e) for e in config.images)))

    async def snapshot(self, listed: Awaitable[list[NodeImage]] | None = None) -> NodeState:
        """What the node holds now: `listed`, the images asked for earlier, else one
        ListImages call."""
        return NodeState(await (listed if listed is not None else self._runtime.list_images()))

    async def finish(self, config: PreloadConfig, outcomes: list[Outcome]) -> list[Outcome]:
        """After the images: pin what is not pinned yet (what was present before the pass, and
        digest pulls; binds pin as they go), and report pins as CRI now sees them. A converged
        node whose runtime reports every pin costs no call here."""
        self._settled_before, self._settled_now = self._settled_now, {}
        all_pinned = True
        for outcome in outcomes:
            if owns_records(outcome):
                all_pinned = all_pinned and outcome.pinned
                if self._rollout is not None and outcome.digest:
                    self._rollout.present(outcome.digest)
        if self._pins is None:
            return outcomes
        self.released = await self._pins.release(config)
        if not config.pin:
            return outcomes
        labelled = await self._pins.pin(outcomes, reported=self._pins_honoured and all_pinned)
        # Read pins back only when this pass labelled something (here, or binding as it
        # went): a runtime that does not report our label would otherwise be asked for two
        # seconds on every pass.
        fresh = any(o.status in (Status.PULLED, Status.BOUND) for o in outcomes)
        if self._pins_honoured and (labelled or fresh):
            return await self._pins.read_back(outcomes)
        return outcomes
