"""Carry out a plan on one node: resolve tags, pull, bind, pin, with bounded concurrency."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence

from agent.core import room
from agent.core.claims import Released
from agent.core.config import ImageEntry, Kind, PreloadConfig
from agent.core.credentials import Credential
from agent.core.deadline import within_deadline
from agent.core.disk import DiskGuard, footprint
from agent.core.errors import (
    AgentError,
    ImageError,
    InputError,
    RegistryError,
    RuntimeUnavailable,
    TagBindingUnsupported,
    TransientRegistryError,
)
from agent.core.manifest import Resolution
from agent.core.pins import CRI_POLL_INTERVAL, PinKeeper, owns_records, pin_names
from agent.core.plan import Action, NodeImage, NodeState, Seen, Step, inputs, plan_one, plan_seen
from agent.core.platform import Platform
from agent.core.ports import ContentSeeder, ImageRuntime, Outcome, Resolver, Status, TagBinder
from agent.core.progress import Progress
from agent.core.pulling import Puller
from agent.core.reference import Reference
from agent.core.rollout import Rollout, holds_any, waiting_for_slot
from agent.core.slots import PullSlots, all_done, deciding, raise_runtime_unavailable

# After a bind, CRI learns of the new tag from containerd's event stream, a moment later.
BIND_VISIBLE_TIMEOUT = 10.0
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
        self._registry = registry
        self._binder = binder
        self._node = node
        self._clock = clock
        self._on_start = on_start
        self._stopping = stopping
        self._puller = Puller(runtime, credentials, seeder)
        self._pins_honoured = pins_honoured
        """The runtime reports our pin label (agent.core.runtimes): worth reading back."""
        self._progress = progress
        """Where pulls in flight are followed (the bytes they have downloaded), if anywhere."""
        self._disk = disk
        """The disk budget pulls are admitted by, if any."""
        self._rollout = rollout
        """Where new content waits for this node's moment (daemon mode), if anywhere."""
        self._pins = PinKeeper(binder, runtime, clock, owner) if binder is not None else None
        self._owner = owner
        """Whose pins this reconciler claims and releases (agent.core.claims)."""
        self.released: list[Released] = []
        """Records whose pin the last pass took back: they left the list."""
        self._config: PreloadConfig | None = None
        """The list of the pass under way."""
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
        self._config = config
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
                    work = self._reported(entry, state, slots, config.pin, on_outcome)
                    running[ref] = task = asyncio.create_task(work)
                    # Also when cancelled before it ever ran (a list change mid-pass): a task
                    # that never started never reaches converge_entry's own `finally`.
                    task.add_done_callback(deciding(slots, entry))
                if not running:
                    break
                adopted = await (follow or all_done)(set(running.values()))
                raise_runtime_unavailable(running.values())
                if adopted is None:
                    break
                config = self._config = adopted
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
        pin: bool,
        on_outcome: Callable[[Outcome], None],
    ) -> Outcome:
        outcome = await self.converge_entry(entry, state, slots, pin=pin)
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
            return _present(entry, Status.HIT, step.reason, step.digest, step.present, step.action)
        return None

    async def plan(
        self, config: PreloadConfig, listed: Awaitable[list[NodeImage]] | None = None
    ) -> list[Step | Outcome]:
        """What a pass would do, doing none of it (`once --dry-run`): a step per image, or the
        failure that kept a tag from resolving. Reads the node and the registry only."""
        state = await self.snapshot(listed)

        async def one(entry: ImageEntry) -> Step | Outcome:
            try:
                step = await self._step(entry, state)
                if step.action is not Action.PULL:
                    return step
                # The platform check a pass makes before pulling: read-only, so made here too.
                resolution = await within_deadline(self._check(entry.reference, step))
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

    async def converge_entry(
        self, entry: ImageEntry, state: NodeState, slots: PullSlots, *, pin: bool
    ) -> Outcome:
        """One image: plan, check, pull, bind (and, with `pin`, label what it binds)."""
        try:
            return await self._converge_entry(entry, state, slots, pin=pin)
        finally:
            slots.decided(entry)  # whatever became of it, later entries may have their turn

    async def _converge_entry(
        self, entry: ImageEntry, state: NodeState, slots: PullSlots, *, pin: bool
    ) -> Outcome:
        quick = self.settled(entry, state)
        if quick is not None:
            return quick
        started = self._clock()
        step: Step | None = None
        if self._stopping():
            return Outcome(entry, Status.FAILED, "not started: the agent is shutting down")
        try:
            step = await self._step(entry, state)
            outcome = await self._carry_out(step, slots, pin_names(entry) if pin else ())
        except RuntimeUnavailable:
            raise
        except ImageError as exc:
            # The output line already names the image: say only what went wrong.
            outcome = Outcome(entry, Status.FAILED, exc.reason, permanent=exc.permanent)
        except (RegistryError, InputError) as exc:
            # A registry's 4xx, a TLS or content error, a bad pull secret: an operator must act.
            permanent = not isinstance(exc, TransientRegistryError)
            outcome = Outcome(entry, Status.FAILED, str(exc), permanent=permanent)
        except AgentError as exc:
            outcome = Outcome(entry, Status.FAILED, str(exc))
        return dataclasses.replace(
            outcome,
            seconds=self._clock() - started,
            action=step.action if step else None,
            drift=step.drift if step else False,
            digest=outcome.digest or (step.digest if step else None),
        )

    async def _step(self, entry: ImageEntry, state: NodeState) -> Step:
        """The plan for one entry; a tag entry for this node first asks the registry where its
        tag points now."""
        digest = None
        if entry.kind == Kind.TAG and entry.applies_to(self._node):
            digest, _ = await within_deadline(self._registry.head_digest(entry.reference))
        return plan_one(entry, self._node, state, digest)

    async def _carry_out(self, step: Step, slots: PullSlots, pin: Collection[str]) -> Outcome:
        entry = step.entry
        if step.action is Action.SKIP:
            return Outcome(entry, Status.SKIPPED, step.reason)
        if step.action is Action.HIT:
            assert step.present is not None
            return _present(entry, Status.HIT, step.reason, step.digest, step.present)
        if step.action is Action.BIND:
            assert step.bind_tag is not None and step.present is not None
            self._on_start(entry)
            bound = await self._bind(entry, step.bind_tag, step.present.id, pin)
            return _present(entry, Status.BOUND, step.reason, step.digest, bound)
        waiting = waiting_for_slot(self._rollout, step.digest, slots.rollout_spread)
        if waiting is not None:
            return Outcome(entry, Status.DEFERRED, waiting)
        async with contextlib.AsyncExitStack() as seeding:
            return await self._pull(step, slots, pin, seeding)

    async def _pull(
        self, step: Step, slots: PullSlots, pin: Collection[str], seeding: contextlib.AsyncExitStack
    ) -> Outcome:
        """Check, admit, pull, bind; the check's documents are seeded into `seeding`."""
        entry = step.entry
        assert step.pull_ref is not None
        disk = self._disk if slots.disk_budget < 100 else None
        if self._pins is not None and self._config is not None:
            await self._pins.before_pull(self._config)
        async with slots.checking(entry.reference.domain):
            resolution = await within_deadline(self._check(entry.reference, step))
            refusal = resolution.refusal()
            if refusal:
                return Outcome(entry, Status.REFUSED, refusal, permanent=True)
            if self._progress is not None or disk is not None:
                resolution = await room.blobs(self._registry, resolution)
            blobs = resolution.blobs
            await seeding.enter_async_context(self._puller.seeded(entry, resolution))
            if disk is None:
                await slots.pulls.acquire()
        incoming = 0
        if disk is not None:
            # Outside the check slot: an earlier entry may still need one to reach its turn.
            layers = await within_deadline(
                room.layers(self._registry, resolution.reference, blobs, disk)
            )
            incoming, estimated = footprint(layers, disk.ratio)
            await slots.turn(entry)
            over = await room.admit(entry, disk, slots, incoming, estimated)
            if over is not None:
                return over
        holding = disk is None  # then the pull slot was taken within the check slot
        try:
            if not holding:
                slots.decided(entry)
                await slots.pulls.acquire()
                holding = True
            if self._stopping():
                return Outcome(entry, Status.FAILED, "not started: the agent is shutting down")
            # Only now does the pull start: a deferred or refused image never says "started".
            self._on_start(entry)
            if self._progress is not None:
                self._progress.begin(entry.written, {b.digest: b.size for b in blobs})
            try:
                image_id = await self._puller.pull(step.pull_ref, entry)
            except ImageError as exc:
                return _failed_after_pull(entry, exc)
        finally:
            if self._progress is not None:
                self._progress.end(entry.written)
            if disk is not None:
                disk.release(incoming)  # statvfs counts what the pull wrote from now on
            if holding:
                slots.pulls.release()
        pulled: NodeImage | None
        if step.bind_tag is not None:
            # The bind reads the image back through CRI anyway: no status call of its own.
            try:
                pulled = await self._bind(entry, step.bind_tag, image_id, pin)
            except ImageError as exc:
                return _failed_after_pull(entry, exc)
        else:
            pulled = await self._runtime.image_status(step.pull_ref)
        if pulled is None:
            return Outcome(
                entry,
                Status.FAILED,
                f"pulled, but the runtime does not list {step.pull_ref}",
                pull_attempted=True,
            )
        digest = _recorded_digest(pulled, entry.reference, step.digest)
        return dataclasses.replace(
            _present(entry, Status.PULLED, step.reason, digest, pulled), pull_attempted=True
        )

    async def _check(self, ref: Reference, step: Step) -> Resolution:
        """What the content is, to check it against this node's platform before pulling."""
        target = ref.pinned(step.digest) if step.digest else ref
        return await self._registry.resolve(target, self._node)

    async def _bind(
        self, entry: ImageEntry, tag: str, image_id: str, pin: Collection[str]
    ) -> NodeImage:
        """Point `tag` at the present image `image_id`; return the image as CRI now sees it."""
        ref = entry.reference
        if self._binder is None:
            raise TagBindingUnsupported(
                tag,
                "this runtime is not containerd, so the tag cannot be bound to the pinned "
                f"digest; {ref.by_digest()} is preloaded, pods must reference the digest",
            )
        await self._binder.bind_tag(tag, ref.by_digest(), pin=pin, owner=self._owner)
        return await self._until_visible(tag, image_id)

    async def _until_visible(self, tag: str, image_id: str) -> NodeImage:
        deadline = self._clock() + BIND_VISIBLE_TIMEOUT
        while True:
            seen = await self._runtime.image_status(tag)
            if seen is not None and seen.id == image_id:
                return seen
            if self._clock() > deadline:
                raise ImageError(
                    tag,
                    f"bound in containerd, but CRI still reports "
                    f"{seen.id if seen else 'no image'} after {BIND_VISIBLE_TIMEOUT:.0f}s",
                )
            await asyncio.sleep(CRI_POLL_INTERVAL)


def _failed_after_pull(entry: ImageEntry, exc: ImageError) -> Outcome:
    return Outcome(entry, Status.FAILED, exc.reason, pull_attempted=True, permanent=exc.permanent)


def _present(
    entry: ImageEntry,
    status: Status,
    reason: str,
    digest: str | None,
    image: NodeImage,
    action: Action | None = None,
) -> Outcome:
    return Outcome(
        entry, status, reason, digest, image.id, image.size, action=action, pinned=image.pinned
    )


def _recorded_digest(image: NodeImage, ref: Reference, expected: str | None) -> str | None:
    """The digest the node now records for `ref`: `expected` if it is among them (a tag may
    have moved between resolving and pulling, then the node's own record wins)."""
    recorded = [d.partition("@")[2] for d in image.repo_digests if d.partition("@")[0] == ref.name]
    if expected in recorded or not recorded:
        return expected
    return recorded[0]
