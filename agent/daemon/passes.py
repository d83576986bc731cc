"""The pass loop: a pass at start, every jittered resync, at once on a new list, and at this
node's moment in a rollout; what each pass found goes to /status, the metrics and the log."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from agent.core.engine.claims import Released, released_text
from agent.core.engine.reconcile import Reconciler
from agent.core.errors import RuntimeUnavailable
from agent.core.images.platform import Platform
from agent.core.lists.config import ImageEntry, PreloadConfig
from agent.core.ports import Deferral, Outcome, Status
from agent.core.reports.events import WARNING, NodeEvent
from agent.daemon.metrics import observe_images, observe_outcome, observe_pass
from agent.daemon.state import Shared, first_of

if TYPE_CHECKING:
    from agent.core.ports import Resolver
    from agent.wiring import NodeRuntime

log = logging.getLogger(__name__)
# ±10% around `resync`, so a fleet started together does not hit registries in lockstep.
RESYNC_JITTER = 0.1
# The per-image gauges walk the whole list: while images finish, at most this often.
GAUGE_INTERVAL = 0.5
_EVENT_REASONS = {Status.FAILED: "PreloadFailed", Status.REFUSED: "PreloadRefused"}


class PassLoop:
    def __init__(self, shared: Shared, rng: Callable[[], float]) -> None:
        self._shared = shared
        self._rng = rng
        self._reconciler: tuple[tuple[object, ...], Reconciler] | None = None
        self._node: Platform | None = shared.settings.node
        self._runtime_seen: tuple[str, str] | None = None
        self._gauges_at = 0.0

    async def run(self, runtime: NodeRuntime, registry: Resolver) -> None:
        while not self._shared.stop.is_set():
            self._shared.list_changed.clear()
            await self._pass(runtime, registry)
            if self._shared.stop.is_set():
                return
            config = self._shared.current()
            resync = jittered(config.resync_seconds, self._rng)
            # New content waiting for this node's moment in a rollout: look again at that moment.
            due = self._shared.rollout.next_due()
            if due is not None:
                resync = min(resync, max(0.1, due))
            await first_of(
                self._shared.stop.wait(), self._shared.list_changed.wait(), seconds=resync
            )

    async def _pass(self, runtime: NodeRuntime, registry: Resolver) -> None:
        """One pass, driven by Reconciler.converge (the same driver as `once`), following the
        list: one adopted meanwhile takes effect at once."""
        shared = self._shared
        started = time.monotonic()
        config = shared.current()

        async def follow(tasks: set[asyncio.Task[Outcome]]) -> PreloadConfig | None:
            nonlocal config
            if await self._until_done_or_new_list(tasks):
                return None
            shared.list_changed.clear()
            config = shared.current()
            return config

        try:
            node = await self._meet_runtime(runtime)
            reconciler = self._reconciler_for(runtime, registry, node)
            outcomes = await reconciler.converge(config, self._settled, follow=follow)
        except RuntimeUnavailable as exc:
            shared.report.last_error = str(exc)
            log.error("pass skipped: %s", exc, extra={"event": "runtime_unavailable"})
            return
        summary = shared.report.record(outcomes, time.time())
        if shared.report.ready:
            shared.rollout.ready()
        self._report_released(reconciler.released)
        await self._report_disk(runtime, config.max_disk_usage_percent)
        seconds = time.monotonic() - started
        observe_pass(shared.metrics, outcomes, shared.report, summary, seconds, time.time())
        _log_pass(outcomes, len(shared.report.desired), time.monotonic() - started)
        _log_converging(shared.report.converging_json(time.time()))
        shared.report_changed.set()
        # The registries this pass pulled from, for the doctor loop's Range probe.
        for outcome in outcomes:
            if outcome.converged and outcome.pull_attempted:
                shared.pulled_from.setdefault(
                    outcome.entry.reference.domain, outcome.entry.reference
                )
        shared.pass_done.set()
        for image in summary.evicted:
            log.warning(
                "%s was evicted from the node and restored",
                image,
                extra={"event": "eviction", "image": image},
            )

    def _settled(self, outcome: Outcome) -> None:
        """One image is done, the pass goes on: /status, the log, its metrics and (through
        report_changed) the node condition say so now, not when the slowest pull ends."""
        shared = self._shared
        if shared.settings.node_events and outcome.status in _EVENT_REASONS:
            # Every failure, repeats too: a repeat raises the Event's count (core.reports.events).
            reason = _EVENT_REASONS[outcome.status]
            message = f"{outcome.entry.written}: {outcome.detail}"
            shared.node_events.append(NodeEvent(WARNING, reason, message))
        if not shared.report.settle(outcome):
            return  # the same outcome as last pass (a steady hit): nothing changed
        _log_outcome(outcome)
        observe_outcome(shared.metrics, outcome)
        now = time.monotonic()
        if now - self._gauges_at >= GAUGE_INTERVAL:  # one walk of the list: not per image
            self._gauges_at = now
            observe_images(shared.metrics, shared.report)
        shared.report_changed.set()

    def _report_released(self, released: Sequence[Released]) -> None:
        """Claims let go of this pass: the images left the list. A pin no one else holds is
        gone (kubelet's GC may take the image); one others hold stays, and says for whom."""
        if not released:
            return
        unpinned = [r.name for r in released if not r.kept_by]
        self._shared.metrics.unpinned.inc(len(unpinned))
        self._shared.report.released_pins = {
            "images": unpinned,
            "kept": {r.name: list(r.kept_by) for r in released if r.kept_by},
            "owner": self._shared.settings.owner,
            "at": time.time(),
        }
        for r in released:
            log.info(
                "%s: %s",
                r.name,
                released_text(r),
                extra={"event": "pin_released", "image": r.name, "kept_by": list(r.kept_by)},
            )

    async def _report_disk(self, runtime: NodeRuntime, budget: float) -> None:
        usage = await runtime.disk.look()
        if usage is not None:
            self._shared.metrics.image_fs_used_percent.set(usage.percent)
        self._shared.report.disk = {
            "budget_percent": budget,
            "used_percent": round(usage.percent, 1) if usage is not None else None,
            "problem": runtime.disk.problem,
        }

    async def _until_done_or_new_list(self, tasks: set[asyncio.Task[Outcome]]) -> bool:
        """Wait for the images: True when all are done; False at once when a new list is
        adopted. On shutdown, the images in flight get the grace period, then are cancelled."""
        stop = asyncio.ensure_future(self._shared.stop.wait())
        changed = asyncio.ensure_future(self._shared.list_changed.wait())
        try:
            everything = asyncio.ensure_future(asyncio.wait(tasks))
            await asyncio.wait({everything, stop, changed}, return_when=asyncio.FIRST_COMPLETED)
            everything.cancel()
            if all(t.done() for t in tasks):
                return True
            if stop.done():
                await self._finish_in_grace(tasks)
                return True
            return False
        finally:
            for waiter in (stop, changed):
                waiter.cancel()
            await asyncio.gather(stop, changed, return_exceptions=True)

    async def _finish_in_grace(self, tasks: set[asyncio.Task[Outcome]]) -> None:
        """Shutdown: no new pulls start; in-flight ones get the grace period, then are cancelled."""
        grace = self._shared.settings.shutdown_grace
        log.info("shutting down; waiting up to %.0fs for pulls in flight", grace)
        await asyncio.wait(tasks, timeout=grace)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _reconciler_for(
        self, runtime: NodeRuntime, registry: Resolver, node: Platform
    ) -> Reconciler:
        """One reconciler while the node, the runtime's features and the registry client stay
        the same: it keeps what it settled last pass, so a steady pass over thousands of images
        re-decides none."""
        key = (node, runtime.features, registry)
        if self._reconciler is None or self._reconciler[0] != key:
            reconciler = runtime.reconciler(
                registry,
                node,
                self._shared.credentials,
                owner=self._shared.settings.owner,
                on_start=self._started,
                stopping=self._shared.stop.is_set,
                progress=self._shared.progress,
                rollout=self._shared.rollout,
            )
            self._reconciler = (key, reconciler)
        return self._reconciler[1]

    def _started(self, entry: ImageEntry) -> None:
        """An image's pull (or tag bind) begins: /status says pulling, and the log says so."""
        self._shared.report.pulling(entry)
        log.info(
            "%s: started", entry.written, extra={"event": "image_started", "image": entry.written}
        )

    async def _meet_runtime(self, runtime: NodeRuntime) -> Platform:
        """Learn the runtime behind the socket (again: it may have been upgraded) and, once,
        the platform it pulls for; say once what it cannot do."""
        info = await runtime.meet()
        if self._node is None:
            self._node = await runtime.node(None)
            self._shared.report.located(self._node)
            log.info("node platform %s", self._node, extra={"event": "platform"})
        if self._runtime_seen != (info.name, info.version):
            self._runtime_seen = (info.name, info.version)
            self._shared.metrics.runtime_is(info.name, info.version)
            limitations = runtime.features.limitations()
            log.info(
                "runtime %s %s (CRI %s)",
                info.name,
                info.version,
                info.api_version,
                extra={"event": "runtime"},
            )
            for note in limitations:
                log.warning("%s", note, extra={"event": "runtime_limitation"})
            # Updated, not replaced: the doctor loop's findings (pull_path, range) stay beside.
            self._shared.report.runtime.update(
                {
                    **runtime.features.as_dict,
                    "cri_version": info.api_version,
                    "limitations": limitations,
                }
            )
        return self._node


def _log_pass(outcomes: Sequence[Outcome], desired: int, seconds: float) -> None:
    """One line per pass: what an operator reads first in the agent's log."""
    counts = dict.fromkeys(Status, 0)
    over_budget = 0
    for outcome in outcomes:
        counts[outcome.status] += 1
        over_budget += outcome.deferred is Deferral.DISK_BUDGET
    waiting = counts[Status.DEFERRED] - over_budget
    ready = counts[Status.HIT] + counts[Status.PULLED] + counts[Status.BOUND]
    log.info(
        "pass done in %.1fs: %d desired, %d ready, %d pulled, %d bound, %d failed, %d refused, "
        "%d over the disk budget, %d waiting for their rollout moment",
        seconds,
        desired,
        ready,
        counts[Status.PULLED],
        counts[Status.BOUND],
        counts[Status.FAILED],
        counts[Status.REFUSED],
        over_budget,
        waiting,
        extra={
            "event": "pass",
            "duration_seconds": round(seconds, 3),
            "counts": {
                "desired": desired,
                "ready": ready,
                **{str(s): n for s, n in counts.items()},
                "over_disk_budget": over_budget,
                "waiting_for_rollout": waiting,
            },
        },
    )


def _log_converging(converging: dict[str, Any] | None) -> None:
    """A ready node still converging to a newer list says so after each pass."""
    if converging is None:
        return
    log.log(
        logging.WARNING if converging["overdue"] else logging.INFO,
        "converging to list %s: %d of %d present, still serving list %s (ready)%s",
        converging["to"],
        converging["present"],
        converging["desired"],
        converging["from"],
        "; overdue" if converging["overdue"] else "",
        extra={"event": "converging", "converging": converging},
    )


def _log_outcome(outcome: Outcome) -> None:
    if outcome.status not in (Status.FAILED, Status.PULLED, Status.BOUND):
        return  # a steady pass over thousands of hits logs (and builds) nothing per image
    fields = {
        "image": outcome.entry.written,
        "digest": outcome.digest,
        "duration_seconds": round(outcome.seconds, 3),
        "outcome": outcome.status,
        "bytes": outcome.size,
    }
    if outcome.status == Status.FAILED:
        log.warning(
            "%s failed: %s",
            outcome.entry.written,
            outcome.detail,
            extra={**fields, "error": outcome.detail},
        )
    elif outcome.status in (Status.PULLED, Status.BOUND):
        log.info("%s %s", outcome.entry.written, outcome.status, extra=fields)


def jittered(resync: float, rng: Callable[[], float]) -> float:
    """`resync` ± RESYNC_JITTER, uniformly."""
    return resync * (1 + RESYNC_JITTER * (2 * rng() - 1))
