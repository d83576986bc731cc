"""One image's way through a pass: plan it, check its content against the node's platform,
wait for admission (a pull slot; with a disk budget, its turn and room), pull, bind its tag.
The pass driver (reconcile.Reconciler) runs one per image that needs work."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Collection, Sequence

from agent.core.engine import room
from agent.core.engine.deadline import within_deadline
from agent.core.engine.disk import DiskGuard, footprint
from agent.core.engine.pins import CRI_POLL_INTERVAL, PinKeeper, pin_names
from agent.core.engine.plan import Action, NodeImage, NodeState, Step, plan_one
from agent.core.engine.pulling import Puller
from agent.core.engine.rollout import Rollout, waiting_for_slot
from agent.core.engine.slots import PullSlots
from agent.core.errors import (
    AgentError,
    ImageError,
    InputError,
    RegistryError,
    RuntimeUnavailable,
    TagBindingUnsupported,
    TransientRegistryError,
)
from agent.core.images.manifest import Resolution
from agent.core.images.platform import Platform
from agent.core.images.reference import Reference
from agent.core.lists.config import ImageEntry, Kind, PreloadConfig
from agent.core.lists.credentials import Credential
from agent.core.ports import (
    ContentSeeder,
    Deferral,
    ImageRuntime,
    Outcome,
    Resolver,
    Status,
    TagBinder,
)
from agent.core.reports.progress import Progress

# After a bind, CRI learns of the new tag from containerd's event stream, a moment later.
BIND_VISIBLE_TIMEOUT = 10.0
SHUTTING_DOWN = "not started: the agent is shutting down"


@dataclasses.dataclass
class ImagePipeline:
    """What one image's work needs of the pass: the runtime, the registry, the node, and the
    pass's shared parts (pins, progress, disk budget, rollout)."""

    runtime: ImageRuntime
    registry: Resolver
    binder: TagBinder | None
    node: Platform
    credentials: Callable[[Reference], Sequence[Credential]]
    seeder: ContentSeeder | None
    pins: PinKeeper | None
    clock: Callable[[], float] = time.monotonic
    on_start: Callable[[ImageEntry], None] = lambda entry: None
    stopping: Callable[[], bool] = lambda: False
    progress: Progress | None = None
    """Where pulls in flight are followed (the bytes they have downloaded), if anywhere."""
    disk: DiskGuard | None = None
    """The disk budget pulls are admitted by, if any."""
    rollout: Rollout | None = None
    """Where new content waits for this node's moment (daemon mode), if anywhere."""
    owner: str = ""
    """Whose pins the binds claim (agent.core.engine.claims)."""

    def __post_init__(self) -> None:
        self._puller = Puller(self.runtime, self.credentials, self.seeder)

    async def converge(
        self, entry: ImageEntry, state: NodeState, slots: PullSlots, config: PreloadConfig
    ) -> Outcome:
        """One image of `config`: plan, check, pull, bind (and, with `config.pin`, label what
        it binds). Whatever becomes of it, later entries may then have their turn."""
        started = self.clock()
        step: Step | None = None
        try:
            if self.stopping():
                return Outcome(entry, Status.FAILED, SHUTTING_DOWN)
            step = await self.step(entry, state)
            outcome = await self._carry_out(step, slots, config)
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
        finally:
            slots.decided(entry)
        return dataclasses.replace(
            outcome,
            seconds=self.clock() - started,
            action=step.action if step else None,
            drift=step.drift if step else False,
            digest=outcome.digest or (step.digest if step else None),
        )

    async def step(self, entry: ImageEntry, state: NodeState) -> Step:
        """The plan for one entry; a tag entry for this node first asks the registry where its
        tag points now."""
        digest = None
        if entry.kind == Kind.TAG and entry.applies_to(self.node):
            digest, _ = await within_deadline(self.registry.head_digest(entry.reference))
        return plan_one(entry, self.node, state, digest)

    async def check(self, ref: Reference, step: Step) -> Resolution:
        """What the content is, to check it against this node's platform before pulling."""
        target = ref.pinned(step.digest) if step.digest else ref
        return await self.registry.resolve(target, self.node)

    async def _carry_out(self, step: Step, slots: PullSlots, config: PreloadConfig) -> Outcome:
        entry = step.entry
        pin = pin_names(entry) if config.pin else ()
        if step.action is Action.SKIP:
            return Outcome(entry, Status.SKIPPED, step.reason)
        if step.action is Action.HIT:
            assert step.present is not None
            return present(entry, Status.HIT, step.reason, step.digest, step.present)
        if step.action is Action.BIND:
            assert step.bind_tag is not None and step.present is not None
            self.on_start(entry)
            bound = await self._bind(entry, step.bind_tag, step.present.id, pin)
            return present(entry, Status.BOUND, step.reason, step.digest, bound)
        waiting = waiting_for_slot(self.rollout, step.digest, slots.rollout_spread)
        if waiting is not None:
            return Outcome(entry, Status.DEFERRED, waiting, deferred=Deferral.ROLLOUT)
        if self.pins is not None:
            await self.pins.before_pull(config)
        return await self._pull(step, slots, pin)

    async def _pull(self, step: Step, slots: PullSlots, pin: Collection[str]) -> Outcome:
        """Admitted, pull; then bind (outside the pull slot)."""
        entry = step.entry
        assert step.pull_ref is not None
        async with self._admitted(step, slots) as admitted:
            if isinstance(admitted, Outcome):
                return admitted  # refused for this platform, or over the disk budget
            if self.stopping():
                return Outcome(entry, Status.FAILED, SHUTTING_DOWN)
            # Only now does the pull start: a deferred or refused image never says "started".
            self.on_start(entry)
            if self.progress is not None:
                self.progress.begin(entry.written, {b.digest: b.size for b in admitted.blobs})
            try:
                image_id = await self._puller.pull(step.pull_ref, entry)
            except ImageError as exc:
                return failed_after_pull(entry, exc)
            finally:
                if self.progress is not None:
                    self.progress.end(entry.written)
        pulled: NodeImage | None
        if step.bind_tag is not None:
            # The bind reads the image back through CRI anyway: no status call of its own.
            try:
                pulled = await self._bind(entry, step.bind_tag, image_id, pin)
            except ImageError as exc:
                return failed_after_pull(entry, exc)
        else:
            pulled = await self.runtime.image_status(step.pull_ref)
        if pulled is None:
            said = f"pulled, but the runtime does not list {step.pull_ref}"
            return Outcome(entry, Status.FAILED, said, pull_attempted=True)
        digest = recorded_digest(pulled, entry.reference, step.digest)
        return dataclasses.replace(
            present(entry, Status.PULLED, step.reason, digest, pulled), pull_attempted=True
        )

    @contextlib.asynccontextmanager
    async def _admitted(self, step: Step, slots: PullSlots) -> AsyncIterator[Resolution | Outcome]:
        """Admission, in one place: the platform check (in its registry's check slot, a few
        ahead of the pulls), the check's documents seeded for the pull, and a pull slot —
        taken within the check slot, or, with a disk budget, after this entry's turn and room
        (outside the check slot: an earlier entry may still need one to reach its turn). The
        resolution while admitted; the refusal or deferral instead if not. Everything held is
        let go on exit."""
        entry = step.entry
        disk = self.disk if slots.disk_budget < 100 else None
        async with contextlib.AsyncExitStack() as held:
            async with slots.checking(entry.reference.domain):
                resolution = await within_deadline(self.check(entry.reference, step))
                refusal = resolution.refusal()
                if refusal:
                    yield Outcome(entry, Status.REFUSED, refusal, permanent=True)
                    return
                if self.progress is not None or disk is not None:
                    resolution = await room.blobs(self.registry, resolution)
                await held.enter_async_context(self._puller.seeded(entry, resolution))
                if disk is None:
                    await held.enter_async_context(slots.pulls)
            if disk is not None:
                layers = await within_deadline(
                    room.layers(self.registry, resolution.reference, resolution.blobs, disk)
                )
                incoming, estimated = footprint(layers, disk.ratio)
                await slots.turn(entry)
                over = await room.admit(entry, disk, slots, incoming, estimated)
                if over is not None:
                    yield over
                    return
                # statvfs counts what the pull wrote from its end on: the reservation goes.
                held.callback(disk.release, incoming)
                slots.decided(entry)
                await held.enter_async_context(slots.pulls)
            yield resolution

    async def _bind(
        self, entry: ImageEntry, tag: str, image_id: str, pin: Collection[str]
    ) -> NodeImage:
        """Point `tag` at the present image `image_id`; return the image as CRI now sees it."""
        ref = entry.reference
        if self.binder is None:
            raise TagBindingUnsupported(
                tag,
                "this runtime is not containerd, so the tag cannot be bound to the pinned "
                f"digest; {ref.by_digest()} is preloaded, pods must reference the digest",
            )
        await self.binder.bind_tag(tag, ref.by_digest(), pin=pin, owner=self.owner)
        return await self._until_visible(tag, image_id)

    async def _until_visible(self, tag: str, image_id: str) -> NodeImage:
        deadline = self.clock() + BIND_VISIBLE_TIMEOUT
        while True:
            seen = await self.runtime.image_status(tag)
            if seen is not None and seen.id == image_id:
                return seen
            if self.clock() > deadline:
                raise ImageError(
                    tag,
                    f"bound in containerd, but CRI still reports "
                    f"{seen.id if seen else 'no image'} after {BIND_VISIBLE_TIMEOUT:.0f}s",
                )
            await asyncio.sleep(CRI_POLL_INTERVAL)


def failed_after_pull(entry: ImageEntry, exc: ImageError) -> Outcome:
    return Outcome(entry, Status.FAILED, exc.reason, pull_attempted=True, permanent=exc.permanent)


def present(
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


def recorded_digest(image: NodeImage, ref: Reference, expected: str | None) -> str | None:
    """The digest the node now records for `ref`: `expected` if it is among them (a tag may
    have moved between resolving and pulling, then the node's own record wins)."""
    recorded = [d.partition("@")[2] for d in image.repo_digests if d.partition("@")[0] == ref.name]
    if expected in recorded or not recorded:
        return expected
    return recorded[0]
