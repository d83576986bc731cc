"""Daemon mode: the composition root. Builds the adapters, converges at start, every jittered
resync and on config change, serves the probes, and owns shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from agent import config as configs
from agent import wiring
from agent.config import ImageEntry, PreloadConfig
from agent.credentials import CredentialFiles
from agent.errors import AgentError, ConfigError, InputError, RuntimeUnavailable
from agent.gate import NodeGate
from agent.kube import KubeApi
from agent.metrics import Metrics, observe_pass
from agent.platform import Platform
from agent.progress import Progress
from agent.reconcile import Outcome, PullSlots, Reconciler, Status
from agent.reference import Reference
from agent.registry import RegistryClient
from agent.retry import RetryPolicy
from agent.rollout import Rollout, holds_any
from agent.server import make_app
from agent.settings import DaemonSettings, GateSettings
from agent.starts import arrivals, classify
from agent.status import NodeReport

log = logging.getLogger("prepull-agent")
# ±10% around `resync`, so a fleet started together does not hit registries in lockstep.
RESYNC_JITTER = 0.1
HEALTH_TIMEOUT = 2.0
# How often the bytes of pulls in flight are read from containerd (/status, the gauge).
PROGRESS_INTERVAL = 1.0
# The readiness gate looks again after every pass, and at least this often (the ready timeout
# must fire while a pull hangs); it writes to the API server only when something changed.
GATE_INTERVAL = 5.0
# A loop that failed unexpectedly starts again after a jittered wait: 1 s, doubling, up to 60 s.
TASK_RETRY = RetryPolicy(base_delay=1.0, max_delay=60.0)


def jittered(resync: float, rng: Callable[[], float]) -> float:
    """`resync` ± RESYNC_JITTER, uniformly."""
    return resync * (1 + RESYNC_JITTER * (2 * rng() - 1))


class ConfigWatcher:
    """Notices a changed config file, including kubelet's ConfigMap update: a `..data` symlink
    swapped to a new directory, which changes the resolved file but maybe not its mtime."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen = self._signature()

    def _signature(self) -> tuple[object, ...] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (os.path.realpath(self.path), st.st_ino, st.st_mtime_ns, st.st_size)

    def changed(self) -> bool:
        signature = self._signature()
        if signature == self._seen:
            return False
        self._seen = signature
        return True


class Daemon:
    """The composition root of daemon mode: a few independent tasks in one TaskGroup, talking
    through small explicit state — the HTTP server (started first, stopped last), the config
    watcher (adopts a new list), the reconcile loop (passes; a new list takes effect within
    `--watch-interval`, even mid-pull) and the container-start scanner."""

    def __init__(
        self,
        settings: DaemonSettings,
        *,
        registry: CollectorRegistry | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.metrics = Metrics(registry or CollectorRegistry())
        self.metrics.start_time.set(time.time())
        self.progress = Progress()
        self.report = NodeReport(
            settings.node, strict=settings.strict_readiness, progress=self.progress
        )
        self._rng = rng
        self._stop = asyncio.Event()
        self._reload_requested = asyncio.Event()
        self._pass_done = asyncio.Event()
        """Set after every pass, for the readiness gate to look at once."""
        self._list_changed = asyncio.Event()
        """Set by the config watcher when it adopts a new list; the reconcile loop clears it."""
        self._config: PreloadConfig | None = None
        self._credential_files = CredentialFiles(())
        self._reconciler: tuple[tuple[object, ...], Reconciler] | None = None
        self._node: Platform | None = settings.node
        self._rollout = Rollout(settings.node_name)
        """This node's place in rollouts: when it first wanted new content, what it held."""
        self._runtime_seen: tuple[str, str] | None = None
        self._seen_containers: set[str] | None = None
        """Containers already judged; None until the baseline scan at start."""

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT; a bad config at start is ConfigError (exit 2)."""
        # Watch first: an update landing while we read the file is then seen at the next look.
        watcher = ConfigWatcher(self.settings.config_path)
        self._adopt(configs.load(self.settings.config_path))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        # SIGHUP (a terminal closing, `kill -HUP`) means "read the config again", not "die".
        loop.add_signal_handler(signal.SIGHUP, self._reload_requested.set)
        try:
            async with wiring.runtime(self.settings.endpoint) as runtime:
                server = await self._serve(runtime)
                try:
                    async with wiring.registry_client(
                        lambda host: self._current().registry(host),
                        self.settings.hosts_dir,
                        lambda ref: self._credential_files.lookup(ref),
                        observer=self.metrics,
                    ) as registry:
                        await self._run_tasks(watcher, runtime, registry)
                finally:
                    await server.cleanup()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        log.info("stopped", extra={"event": "stop"})
        return 0

    async def _serve(self, runtime: wiring.Runtime) -> web.AppRunner:
        app = make_app(
            self.report, self.metrics.registry, lambda: self._health(runtime), self._stop.is_set
        )
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        host, port = self.settings.listen
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            await runner.cleanup()
            raise InputError(f"cannot serve on {host}:{port}: {exc}") from None
        log.info("serving on %s:%d", host, port, extra={"event": "start"})
        return runner

    async def _run_tasks(
        self, watcher: ConfigWatcher, runtime: wiring.Runtime, registry: RegistryClient
    ) -> None:
        async with asyncio.TaskGroup() as tasks:
            helpers = [
                tasks.create_task(self._guarded("config", lambda: self._watch_config(watcher))),
                tasks.create_task(self._guarded("starts", lambda: self._scan_loop(runtime))),
                tasks.create_task(
                    self._guarded(
                        "progress",
                        lambda: runtime.follow_pulls(
                            self.progress, PROGRESS_INTERVAL, self._pull_progress
                        ),
                    )
                ),
            ]
            if self.settings.gate is not None:
                gate = self.settings.gate
                helpers.append(
                    tasks.create_task(self._guarded("gate", lambda: self._gate_loop(gate)))
                )
            tasks.create_task(
                self._guarded("reconcile", lambda: self._reconcile_loop(runtime, registry))
            )
            await self._stop.wait()
            # The reconcile loop finishes its pass within the grace period by itself.
            for helper in helpers:
                helper.cancel()

    async def _guarded(self, task: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Run one of the daemon's loops for as long as the daemon runs. An unexpected error
        (a bug, input no check foresaw) is logged with its traceback, counted, and the loop
        starts again after a backoff with full jitter: one failure never ends the process,
        which runs on every node of a fleet at once."""
        failures = 0
        while not self._stop.is_set():
            try:
                await loop()
                return
            except Exception:
                failures += 1
                wait = TASK_RETRY.delay(min(failures - 1, 10), None, self._rng)
                self.metrics.task_failures.labels(task).inc()
                log.exception(
                    "the %s loop failed; restarting it in %.1fs",
                    task,
                    wait,
                    extra={"event": "task_failed", "task": task},
                )
                await _first_of(self._stop.wait(), seconds=wait)

    def _current(self) -> PreloadConfig:
        assert self._config is not None
        return self._config

    def _adopt(self, config: PreloadConfig) -> None:
        self._config = config
        self._credential_files = CredentialFiles(config.credential_paths())
        self.report.configure(config.images)
        self.report.config_loaded(config.source, len(config.images), time.time())
        self.metrics.config_last_reload_successful.set(1)

    # -- config watcher ----------------------------------------------------------------------

    async def _watch_config(self, watcher: ConfigWatcher) -> None:
        while True:
            hangup = self._reload_requested.is_set()
            self._reload_requested.clear()
            if watcher.changed() or hangup:
                await self._reload()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._reload_requested.wait(), timeout=self.settings.watch_interval
                )

    async def _reload(self) -> bool:
        path = self.settings.config_path
        try:
            # Parsing thousands of entries takes a while: off the loop that answers probes.
            config = await asyncio.to_thread(configs.load, path)
        except ConfigError as exc:
            # The last good list keeps running; the agent stays healthy.
            self.metrics.config_reload_errors.inc()
            self.metrics.config_last_reload_successful.set(0)
            self.report.config_rejected(str(exc), time.time())
            log.error(
                "config update rejected, keeping the last good list: %s",
                exc,
                extra={"event": "config_rejected", "error": str(exc)},
            )
            return False
        self._adopt(config)
        self._list_changed.set()
        log.info(
            "config reloaded: %d images", len(config.images), extra={"event": "config_reloaded"}
        )
        return True

    # -- reconcile loop ------------------------------------------------------------------------

    async def _reconcile_loop(self, runtime: wiring.Runtime, registry: RegistryClient) -> None:
        while not self._stop.is_set():
            self._list_changed.clear()
            await self._pass(runtime, registry)
            if self._stop.is_set():
                return
            config = self._current()
            resync = jittered(config.resync_seconds, self._rng)
            # New content waiting for this node's moment in a rollout: look again at that moment.
            due = self._rollout.next_due()
            if due is not None:
                resync = min(resync, max(0.1, due))
            await _first_of(self._stop.wait(), self._list_changed.wait(), seconds=resync)

    async def _pass(self, runtime: wiring.Runtime, registry: RegistryClient) -> None:
        """One pass. A new list adopted meanwhile takes effect at once: images no longer listed
        are cancelled (their pulls too), new ones start, the rest go on undisturbed."""
        started = time.monotonic()
        try:
            node = await self._meet_runtime(runtime)
            reconciler = self._reconciler_for(runtime, registry, node)
            state = await reconciler.snapshot()
            config = self._current()
            if not self._rollout.looked:  # once: a pass over thousands of entries is hot
                self._rollout.first_look(holds_any(config.images, node, state))
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
                        quick = reconciler.settled(entry, state)
                        if quick is not None:
                            settled[ref] = quick
                            continue
                        slots.expect([entry])
                        work = reconciler.converge_entry(entry, state, slots, pin=config.pin)
                        running[ref] = asyncio.create_task(work)
                        # Also when cancelled before it ever ran (a list change mid-pass): a
                        # task that never started never reaches converge_entry's own `finally`.
                        running[ref].add_done_callback(_deciding(slots, entry))
                    if not running or await self._until_done_or_new_list(set(running.values())):
                        break
                    config = self._current()
                    self._list_changed.clear()
                    state = await reconciler.snapshot()
                    log.info("new list adopted mid-pass", extra={"event": "config_applied"})
                outcomes = [
                    settled.get(e.reference) or running[e.reference].result() for e in config.images
                ]
            finally:
                for task in running.values():
                    task.cancel()
                await asyncio.gather(*running.values(), return_exceptions=True)
            outcomes = await reconciler.finish(config, outcomes)
        except RuntimeUnavailable as exc:
            self.report.last_error = str(exc)
            log.error("pass skipped: %s", exc, extra={"event": "runtime_unavailable"})
            return
        summary = self.report.record(outcomes, time.time())
        if self.report.ready:
            self._rollout.ready()
        self._report_released(reconciler.released)
        await self._report_disk(runtime, config.max_disk_usage_percent)
        observe_pass(
            self.metrics, outcomes, self.report, summary, time.monotonic() - started, time.time()
        )
        for outcome in outcomes:
            _log_outcome(outcome)
        _log_pass(outcomes, len(self.report.desired), time.monotonic() - started)
        self._pass_done.set()
        for image in summary.evicted:
            log.warning(
                "%s was evicted from the node and restored",
                image,
                extra={"event": "eviction", "image": image},
            )

    def _report_released(self, released: Sequence[str]) -> None:
        """Pins taken back this pass: the images left the list, kubelet's GC may take them."""
        if not released:
            return
        self.metrics.unpinned.inc(len(released))
        self.report.released_pins = {"images": list(released), "at": time.time()}
        for name in released:
            log.info(
                "%s: pin released, no longer listed (kubelet's image GC may reclaim it)",
                name,
                extra={"event": "pin_released", "image": name},
            )

    async def _report_disk(self, runtime: wiring.Runtime, budget: float) -> None:
        usage = await runtime.disk.look()
        if usage is not None:
            self.metrics.image_fs_used_percent.set(usage.percent)
        self.report.disk = {
            "budget_percent": budget,
            "used_percent": round(usage.percent, 1) if usage is not None else None,
            "problem": runtime.disk.problem,
        }

    async def _until_done_or_new_list(self, tasks: set[asyncio.Task[Outcome]]) -> bool:
        """Wait for the images: True when all are done; False at once when a new list is
        adopted. On shutdown, the images in flight get the grace period, then are cancelled."""
        stop = asyncio.ensure_future(self._stop.wait())
        changed = asyncio.ensure_future(self._list_changed.wait())
        try:
            everything = asyncio.ensure_future(asyncio.wait(tasks))
            await asyncio.wait({everything, stop, changed}, return_when=asyncio.FIRST_COMPLETED)
            everything.cancel()
            if all(t.done() for t in tasks):
                _raise_runtime_unavailable(tasks)
                return True
            if stop.done():
                await self._finish_in_grace(tasks)
                _raise_runtime_unavailable(tasks)
                return True
            return False
        finally:
            for waiter in (stop, changed):
                waiter.cancel()
            await asyncio.gather(stop, changed, return_exceptions=True)

    async def _finish_in_grace(self, tasks: set[asyncio.Task[Outcome]]) -> None:
        """Shutdown: no new pulls start; in-flight ones get the grace period, then are cancelled."""
        grace = self.settings.shutdown_grace
        log.info("shutting down; waiting up to %.0fs for pulls in flight", grace)
        await asyncio.wait(tasks, timeout=grace)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _reconciler_for(
        self, runtime: wiring.Runtime, registry: RegistryClient, node: Platform
    ) -> Reconciler:
        """One reconciler while the node, the runtime's features and the registry client stay
        the same: it keeps what it settled last pass, so a steady pass over thousands of images
        re-decides none."""
        key = (node, runtime.features, registry)
        if self._reconciler is None or self._reconciler[0] != key:
            reconciler = runtime.reconciler(
                registry,
                node,
                lambda ref: self._credential_files.lookup(ref),
                on_start=self._started,
                stopping=self._stop.is_set,
                progress=self.progress,
                rollout=self._rollout,
            )
            self._reconciler = (key, reconciler)
        return self._reconciler[1]

    def _started(self, entry: ImageEntry) -> None:
        """An image's pull (or tag bind) begins: /status says pulling, and the log says so."""
        self.report.pulling(entry)
        log.info(
            "%s: started", entry.written, extra={"event": "image_started", "image": entry.written}
        )

    def _pull_progress(self) -> None:
        """The pulls in flight have been looked at: the gauge says their bytes, and each pull
        running longer than the log interval says how far it has got."""
        self.metrics.pull_bytes_in_flight.set(self.progress.bytes_in_flight())
        for view in self.progress.due(self.settings.progress_log_interval):
            log.info(
                "%s: pulling, %s",
                view.image,
                view.describe(),
                extra={
                    "event": "image_progress",
                    "image": view.image,
                    "bytes_done": view.done,
                    "bytes_total": view.total,
                },
            )

    async def _meet_runtime(self, runtime: wiring.Runtime) -> Platform:
        """Learn the runtime behind the socket (again: it may have been upgraded) and, once,
        the platform it pulls for; say once what it cannot do."""
        info = await runtime.meet()
        if self._node is None:
            self._node = await runtime.node(None)
            self.report.located(self._node)
            log.info("node platform %s", self._node, extra={"event": "platform"})
        if self._runtime_seen != (info.name, info.version):
            self._runtime_seen = (info.name, info.version)
            self.metrics.runtime_is(info.name, info.version)
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
            self.report.runtime = {
                **runtime.features.as_dict,
                "cri_version": info.api_version,
                "limitations": limitations,
            }
        return self._node

    # -- container-start scanner -------------------------------------------------------------

    async def _scan_loop(self, runtime: wiring.Runtime) -> None:
        while True:
            await self._scan_starts(runtime)
            await asyncio.sleep(self.settings.container_scan_interval)

    async def _scan_starts(self, runtime: wiring.Runtime) -> None:
        """Count new containers as hits or misses (needs containerd's image creation times)."""
        if self.report.runtime.get("name", "containerd") != "containerd":
            return
        cri = runtime.cri
        try:
            containers = await cri.list_containers()
            if self._seen_containers is None:
                # Containers from before this agent started are not ours to judge.
                self._seen_containers = {c.id for c in containers}
                return
            if all(c.id in self._seen_containers for c in containers):
                self._seen_containers = {c.id for c in containers}
                return
            arrived = arrivals(await cri.list_images(), await runtime.images.created_ns())
            started = classify(
                containers, await cri.sandbox_created(), arrived, self._seen_containers
            )
        except AgentError as exc:
            log.warning("could not check container starts: %s", exc)
            return
        self._seen_containers = {c.id for c in containers}
        for container, verdict in started:
            self.metrics.container_starts.labels(verdict).inc()
            log.info(
                "container %s started: image %s",
                container.id[:12],
                verdict,
                extra={"event": "container_start", "outcome": verdict, "image": container.image_id},
            )

    # -- readiness gate --------------------------------------------------------------------------

    async def _gate_loop(self, settings: GateSettings) -> None:
        """Keep the node's condition and startup taint in line with /readyz's rule. An API
        error is logged (once while it lasts) and the next look tries again."""
        async with aiohttp.ClientSession() as session:
            gate = NodeGate(
                KubeApi(session, settings.access),
                condition=settings.condition,
                taint_key=settings.startup_taint,
                timeout=settings.ready_timeout,
                clock=time.monotonic,
            )
            failing: str | None = None
            while True:
                self._pass_done.clear()
                report = self.report
                waiting = [r.image for r in report.waiting_for]
                present = len(report.desired) - len(report.missing)
                try:
                    await gate.sync(report.ready, waiting, present, report.passes)
                    failing = None
                except AgentError as exc:
                    if str(exc) != failing:
                        log.warning("readiness gate: %s", exc, extra={"event": "gate_error"})
                    failing = str(exc)
                report.gate = {**gate.to_json(), "error": failing}
                await _first_of(self._pass_done.wait(), seconds=GATE_INTERVAL)

    async def _health(self, runtime: wiring.Runtime) -> str | None:
        try:
            await runtime.cri.ping(HEALTH_TIMEOUT)
        except RuntimeUnavailable as exc:
            return str(exc)
        return None


async def _first_of(*waits: Awaitable[object], seconds: float) -> None:
    """Return when the first of `waits` completes or `seconds` pass; cancel the rest."""
    futures = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(futures, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future in futures:
            future.cancel()
        await asyncio.gather(*futures, return_exceptions=True)


def _deciding(slots: PullSlots, entry: ImageEntry) -> Callable[[asyncio.Task[Outcome]], None]:
    """A done-callback marking `entry`'s room decided, however its task ended."""
    return lambda task: slots.decided(entry)


def _raise_runtime_unavailable(tasks: set[asyncio.Task[Outcome]]) -> None:
    """A pass cannot go on without the runtime: surface the first such failure."""
    for task in tasks:
        if task.done() and not task.cancelled():
            error = task.exception()
            if isinstance(error, RuntimeUnavailable):
                raise error


def _log_pass(outcomes: Sequence[Outcome], desired: int, seconds: float) -> None:
    """One line per pass: what an operator reads first in the agent's log."""
    counts = dict.fromkeys(Status, 0)
    over_budget = 0
    for outcome in outcomes:
        counts[outcome.status] += 1
        # A deferral by the disk budget is permanent until room appears; a rollout wait is not.
        over_budget += outcome.status is Status.DEFERRED and outcome.permanent
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
