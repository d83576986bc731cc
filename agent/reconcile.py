"""Carry out a plan on one node: resolve tags, pull, bind, pin, with bounded concurrency."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterable, Sequence
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from agent.config import ImageEntry, Kind, PreloadConfig, format_duration
from agent.credentials import Credential
from agent.disk import (
    GZIP_LAYERS,
    ZSTD_HEADER_BYTES,
    ZSTD_LAYERS,
    DiskGuard,
    Layer,
    footprint,
    gzip_unpacked,
    zstd_unpacked,
)
from agent.errors import (
    AgentError,
    ImageError,
    InputError,
    RegistryError,
    RuntimeUnavailable,
    TagBindingUnsupported,
    TransientRegistryError,
)
from agent.manifest import Descriptor, Manifest, Resolution, manifest_blobs
from agent.plan import Action, NodeImage, NodeState, Seen, Step, inputs, plan_one, plan_seen
from agent.platform import Platform
from agent.progress import Progress, format_bytes
from agent.reference import Reference
from agent.rollout import Rollout

# After a bind, CRI learns of the new tag from containerd's event stream, a moment later.
BIND_VISIBLE_TIMEOUT = 10.0
BIND_POLL_INTERVAL = 0.05
# All registry work for one image (tag lookup, platform check) must end within this; a registry
# that accepts connections and never answers then costs its own images a minute, not a pass.
LOOKUP_DEADLINE = 60.0
PIN_VISIBLE_TIMEOUT = 2.0
# How long an entry ready to take room waits for earlier entries still looking up their
# registry (seconds): list order within it, a dead registry's images never hold up the rest.
TURN_PATIENCE = 5.0
log = logging.getLogger(__name__)
T = TypeVar("T")


class ImageRuntime(Protocol):
    """What reconciling needs of CRI (agent.cri.CriClient implements it)."""

    endpoint: str

    async def list_images(self) -> list[NodeImage]: ...
    async def image_status(self, reference: str) -> NodeImage | None: ...
    async def pull(self, reference: str, credential: Credential | None = None) -> str: ...


class TagBinder(Protocol):
    """Points a tag at present content, and labels images (agent.containerd.ContainerdImages)."""

    async def bind_tag(
        self, tag_name: str, content_name: str, *, pin: Collection[str] = ()
    ) -> None: ...
    async def pin(self, names: Sequence[str]) -> list[str]: ...
    async def release(self, keep: Collection[str]) -> list[str]: ...


class Resolver(Protocol):
    """What reconciling needs of a registry (agent.registry.RegistryClient)."""

    async def head_digest(self, ref: Reference) -> tuple[str, str]: ...
    async def resolve(self, ref: Reference, platform: Platform) -> Resolution: ...
    async def fetch_manifest(self, ref: Reference, target: str | None = None) -> Manifest: ...
    async def blob_range(self, ref: Reference, digest: str, byte_range: str) -> bytes | None: ...


class Status(StrEnum):
    """What became of one image in a pass."""

    HIT = "hit"
    PULLED = "pulled"
    BOUND = "bound"
    """The content was present; the tag was pointed at it."""
    SKIPPED = "skipped"
    """Listed for other platforms."""
    REFUSED = "refused"
    """The content is not for this node's platform; nothing was pulled."""
    DEFERRED = "deferred"
    """Not pulled yet: it would take the image filesystem past the disk budget (agent.disk), or
    its new content waits for this node's moment in a rollout (agent.rollout)."""
    FAILED = "failed"


@dataclasses.dataclass(slots=True)
class Outcome:
    """Built once per image per pass and never changed (dataclasses.replace makes a new one);
    not frozen, as a frozen dataclass's __init__ costs 5x and lists run to thousands."""

    entry: ImageEntry
    status: Status
    detail: str = ""
    digest: str | None = None
    image_id: str | None = None
    size: int = 0
    seconds: float = 0.0
    drift: bool = False
    action: Action | None = None
    """What the plan said to do; None when the image failed before it could be planned."""
    pinned: bool = False
    """The runtime reports the image pinned against kubelet's image GC."""
    pull_attempted: bool = False
    """A PullImage call was made for it in this pass (what pull metrics count)."""
    permanent: bool = False
    """Failed or refused in a way no retry fixes (not found, denied, wrong platform)."""

    @property
    def converged(self) -> bool:
        return self.status not in (Status.FAILED, Status.REFUSED, Status.DEFERRED)

    @property
    def was_absent(self) -> bool:
        """The node did not have this image at all (as opposed to a moved tag)."""
        return self.action is Action.PULL and not self.drift


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
        """New content is pulled at the node's moment within this many seconds (agent.rollout)."""
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
    ) -> None:
        self._runtime = runtime
        self._registry = registry
        self._binder = binder
        self._node = node
        self._clock = clock
        self._on_start = on_start
        self._stopping = stopping
        self._credentials = credentials
        self._pins_honoured = pins_honoured
        """The runtime reports our pin label (agent.runtimes): worth reading back."""
        self._progress = progress
        """Where pulls in flight are followed (the bytes they have downloaded), if anywhere."""
        self._disk = disk
        """The disk budget pulls are admitted by, if any."""
        self._rollout = rollout
        """Where new content waits for this node's moment (daemon mode), if anywhere."""
        self._released_for: tuple[PreloadConfig, frozenset[str]] | None = None
        """The list, and the records it owned, when this agent's pins were last released:
        released again only when the records change (a steady pass costs no call, and the
        same list object not even the set)."""
        self.released: list[str] = []
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
    ) -> list[Outcome]:
        """One pass over the list; RuntimeUnavailable if the runtime cannot be asked at all.
        `on_outcome` hears of each image as soon as it is done (pins are read back after).
        `listed`: the node's images, asked for earlier (else they are listed now)."""
        state = await self.snapshot(listed)
        slots = PullSlots.of(config)
        outcomes = [self.settled(e, state) for e in config.images]
        for outcome in outcomes:
            if outcome is not None:
                on_outcome(outcome)

        async def reported(entry: ImageEntry) -> Outcome:
            outcome = await self.converge_entry(entry, state, slots, pin=config.pin)
            on_outcome(outcome)
            return outcome

        todo = [i for i, outcome in enumerate(outcomes) if outcome is None]
        slots.expect(config.images[i] for i in todo)
        done = await _gather_in_order([reported(config.images[i]) for i in todo])
        for i, outcome in zip(todo, done, strict=True):
            outcomes[i] = outcome
        return await self.finish(config, [o for o in outcomes if o is not None])

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
                resolution = await _within_deadline(self._check(entry.reference, step))
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
            if _owns_records(outcome):
                all_pinned = all_pinned and outcome.pinned
                if self._rollout is not None and outcome.digest:
                    self._rollout.present(outcome.digest)
        if self._binder is None:
            return outcomes
        self.released = await self._release(self._binder, config)
        if not config.pin:
            return outcomes
        if self._pins_honoured and all_pinned:
            return outcomes
        labelled = await self._pin(self._binder, outcomes)
        # Read pins back only when this pass labelled something (here, or binding as it
        # went): a runtime that does not report our label would otherwise be asked for two
        # seconds on every pass.
        fresh = any(o.status in (Status.PULLED, Status.BOUND) for o in outcomes)
        if self._pins_honoured and (labelled or fresh):
            return await self._with_pins(outcomes)
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
            outcome = await self._carry_out(step, slots, _pin_names(entry) if pin else ())
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
            digest, _ = await _within_deadline(self._registry.head_digest(entry.reference))
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
        assert step.pull_ref is not None
        waiting = self._rollout_wait(step, slots.rollout_spread)
        if waiting is not None:
            return Outcome(entry, Status.DEFERRED, waiting)
        disk = self._disk if slots.disk_budget < 100 else None
        async with slots.checking(entry.reference.domain):
            resolution = await _within_deadline(self._check(entry.reference, step))
            refusal = resolution.refusal()
            if refusal:
                return Outcome(entry, Status.REFUSED, refusal, permanent=True)
            sized = self._progress is not None or disk is not None
            blobs = await self._blobs(resolution) if sized else ()
            if disk is None:
                await slots.pulls.acquire()
        incoming = 0
        if disk is not None:
            # Outside the check slot: an earlier entry may still need one to reach its turn.
            layers = await _within_deadline(self._layers(resolution.reference, blobs, disk))
            incoming, estimated = footprint(layers, disk.ratio)
            await slots.turn(entry)
            over = await self._admit(entry, disk, slots, incoming, estimated)
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
                image_id = await self._pull(step.pull_ref, entry.reference)
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

    def _rollout_wait(self, step: Step, spread: float) -> str | None:
        """Why new content waits for this node's moment in the rollout, or None to pull now.
        Decided before any registry request: a waiting node costs the registry nothing."""
        if self._rollout is None or step.digest is None:
            return None
        due = self._rollout.not_before(step.digest, spread)
        if due is None:
            return None
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(due))
        return (
            f"waiting for its rollout slot until {when} (rollout.spread {format_duration(spread)})"
        )

    async def _pull(self, pull_ref: str, ref: Reference) -> str:
        """Pull with each matching credential in turn, as kubelet does; anonymously if none.
        Returns the image id."""
        candidates: list[Credential | None] = [*self._credentials(ref)] or [None]
        for credential in candidates[:-1]:
            try:
                return await self._runtime.pull(pull_ref, credential)
            except ImageError:
                pass
        return await self._runtime.pull(pull_ref, candidates[-1])

    async def _check(self, ref: Reference, step: Step) -> Resolution:
        """What the content is, to check it against this node's platform before pulling."""
        target = ref.pinned(step.digest) if step.digest else ref
        return await self._registry.resolve(target, self._node)

    async def _blobs(self, resolution: Resolution) -> tuple[Descriptor, ...]:
        """The blobs a pull of `resolution` downloads, for following its progress and for the
        disk budget: a multi-platform image's costs one more small request (its platform's
        manifest). Unknown (none) if that fails: no reason to fail a pull."""
        found = resolution.blobs
        if not found and resolution.is_index and resolution.chosen is not None:
            try:
                document = await _within_deadline(
                    self._registry.fetch_manifest(resolution.reference, resolution.chosen.digest)
                )
            except AgentError as exc:
                log.debug("%s: blob sizes unknown: %s", resolution.reference, exc)
                return ()
            found = manifest_blobs(document)
        return found

    async def _layers(
        self, ref: Reference, blobs: Sequence[Descriptor], disk: DiskGuard
    ) -> list[Layer]:
        """Each blob with the unpacked size its format carries, read with one small Range
        request per compressed layer (gzip: the last 4 bytes; zstd: the frame header)."""

        async def one(blob: Descriptor) -> Layer:
            unpacked = None
            if blob.media_type in GZIP_LAYERS:
                tail = await self._registry.blob_range(ref, blob.digest, "-4")
                unpacked = gzip_unpacked(tail, blob.size) if tail is not None else None
            elif blob.media_type in ZSTD_LAYERS:
                head = await self._registry.blob_range(
                    ref, blob.digest, f"0-{ZSTD_HEADER_BYTES - 1}"
                )
                unpacked = zstd_unpacked(head) if head is not None else None
            return Layer(blob.media_type, blob.size, unpacked)

        layers = list(await asyncio.gather(*(one(blob) for blob in blobs)))
        disk.learn(layers)
        return layers

    async def _admit(
        self, entry: ImageEntry, disk: DiskGuard, slots: PullSlots, need: int, estimated: int
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
            )
        over = await disk.admit(need, slots.disk_budget)
        if over is None:
            return None
        slots.blocked = entry.written
        if estimated:
            over += f"; {format_bytes(estimated)} of it estimated (layer sizes not readable)"
        return Outcome(entry, Status.DEFERRED, over, permanent=True)

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
        await self._binder.bind_tag(tag, ref.by_digest(), pin=pin)
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
            await asyncio.sleep(BIND_POLL_INTERVAL)

    async def _pin(self, binder: TagBinder, outcomes: Sequence[Outcome]) -> bool:
        """Label what we preloaded so kubelet's image GC keeps it (containerd 1.6.22+, 1.7.3+);
        True if any label was added."""
        names = [name for o in outcomes for name in _names(o)]
        try:
            return bool(await binder.pin(names))
        except AgentError as exc:
            # Pinning protects against GC; failing to pin does not make the node wrong.
            log.warning("could not label images as pinned: %s", exc)
            return False

    async def _release(self, binder: TagBinder, config: PreloadConfig) -> list[str]:
        """Take this agent's pins off records the list no longer owns (every pin, with `pin:
        false`), so kubelet's image GC may reclaim them: a list that changes must not leak
        disk on every node. Entries that failed this pass still own their records."""
        if self._released_for is not None and self._released_for[0] is config:
            return []
        owned = frozenset(
            name for entry in config.images for name in _pin_names(entry) if config.pin
        )
        if self._released_for is not None and self._released_for[1] == owned:
            self._released_for = (config, owned)
            return []
        try:
            released = await binder.release(owned)
        except AgentError as exc:
            log.warning("could not release the pins of images no longer listed: %s", exc)
            return []
        self._released_for = (config, owned)
        return released

    async def _with_pins(self, outcomes: list[Outcome]) -> list[Outcome]:
        """The outcomes with `pinned` as CRI reports it now that the labels are on. CRI learns
        of the label from containerd's event stream, a moment after the update: look again
        briefly until every preloaded image shows it."""
        wanted = {o.image_id for o in outcomes if o.converged and o.image_id}
        deadline = self._clock() + PIN_VISIBLE_TIMEOUT
        while True:
            pinned = {image.id for image in await self._runtime.list_images() if image.pinned}
            if wanted <= pinned or self._clock() > deadline:
                break
            await asyncio.sleep(BIND_POLL_INTERVAL)
        return [
            dataclasses.replace(o, pinned=o.image_id in pinned) if o.image_id else o
            for o in outcomes
        ]


def _owns_records(outcome: Outcome) -> bool:
    """Whether the entry was preloaded, so its record is ours to pin."""
    return outcome.converged and outcome.status is not Status.SKIPPED


def _names(outcome: Outcome) -> list[str]:
    """The records a converged, preloaded entry owns (what pinning labels)."""
    return _pin_names(outcome.entry) if _owns_records(outcome) else []


def _pin_names(entry: ImageEntry) -> list[str]:
    """The containerd image record an entry owns: its tag if it has one, else its digest.

    CRI reports an image pinned while any of its records is labelled (containerd
    internal/cri/store/image), so one label is enough; and labelling only the tag means that
    when the tag moves to new content, the old content is no longer pinned and kubelet's image
    GC may reclaim it."""
    ref = entry.reference
    return [ref.tagged] if entry.kind in (Kind.TAG, Kind.PINNED) else [ref.by_digest()]


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


async def _within_deadline(work: Awaitable[T]) -> T:
    """Registry work for one image, cut at LOOKUP_DEADLINE with an error that says so."""
    try:
        async with asyncio.timeout(LOOKUP_DEADLINE):
            return await work
    except TimeoutError:
        raise AgentError(
            f"the registry did not answer within {LOOKUP_DEADLINE:.0f}s (lookup abandoned)"
        ) from None


async def _gather_in_order(jobs: Sequence[Coroutine[Any, Any, Outcome]]) -> list[Outcome]:
    """Run every job; a RuntimeUnavailable in one cancels the rest and surfaces."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(job) for job in jobs]
    except BaseExceptionGroup as failures:
        raise failures.exceptions[0] from None
    return [task.result() for task in tasks]
