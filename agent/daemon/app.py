"""Daemon mode: builds the shared state and the adapters, runs the loops (one module each) in
one TaskGroup under a guard that restarts a loop that fails, serves the probes, owns shutdown.

  config   agent.daemon.watch      adopts a changed list
  passes   agent.daemon.passes     converges (agent.core.engine.reconcile), reports each pass
  doctor   agent.daemon.doctor     how containerd pulls, read again when it may have changed
  starts   agent.daemon.starts     counts container starts as cache hits or misses
  progress here                    follows the bytes of pulls in flight
  gate     agent.daemon.readiness  the node's condition and startup taint (opt-in)
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry

from agent.core.engine.rollout import Rollout
from agent.core.errors import InputError, RuntimeUnavailable
from agent.core.lists import config as configs
from agent.core.reports.progress import Progress
from agent.core.reports.status import NodeReport
from agent.core.retry import RetryPolicy
from agent.daemon.doctor import DoctorLoop
from agent.daemon.metrics import Metrics, follow_readiness
from agent.daemon.passes import PassLoop
from agent.daemon.readiness import GateLoop
from agent.daemon.server import make_app
from agent.daemon.settings import DaemonSettings
from agent.daemon.starts import StartScanner
from agent.daemon.state import Shared, first_of
from agent.daemon.watch import ConfigLoop, ConfigWatcher
from agent.wiring import WIRING, NodeRuntime, Wiring

if TYPE_CHECKING:
    from agent.core.ports import Resolver

log = logging.getLogger(__name__)
HEALTH_TIMEOUT = 2.0
# How often the bytes of pulls in flight are read from containerd (/status, the gauge).
PROGRESS_INTERVAL = 1.0
# A loop that failed unexpectedly starts again after a jittered wait: 1 s, doubling, up to 60 s.
TASK_RETRY = RetryPolicy(base_delay=1.0, max_delay=60.0)
# After the pulls' grace, requests in flight to /metrics and the probes get this long (at most
# the grace itself): SIGTERM to exit stays within --shutdown-grace plus a few seconds.
SERVER_DRAIN = 3.0


class Daemon:
    """The loops talk through small explicit state (agent.daemon.state.Shared): the HTTP server
    is started first and stopped last; the pass loop finishes its pass within the grace period
    by itself; the others are cancelled on shutdown."""

    def __init__(
        self,
        settings: DaemonSettings,
        wiring: Wiring = WIRING,
        *,
        registry: CollectorRegistry | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        """`wiring`: where the daemon's runtime, registry client and API client come from
        (tests give it fakes)."""
        progress = Progress()
        self.shared = Shared(
            settings=settings,
            metrics=Metrics(registry or CollectorRegistry()),
            progress=progress,
            report=NodeReport(settings.node, strict=settings.strict_readiness, progress=progress),
            rollout=Rollout(settings.node_name),
        )
        self.shared.metrics.start_time.set(time.time())
        follow_readiness(self.shared.metrics, self.shared.report)
        self._rng = rng
        self._wiring = wiring

    @property
    def report(self) -> NodeReport:
        return self.shared.report

    @property
    def metrics(self) -> Metrics:
        return self.shared.metrics

    def stop(self) -> None:
        self.shared.stop.set()

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT; a bad config at start is ConfigError (exit 2)."""
        shared, settings = self.shared, self.shared.settings
        # Watch first: an update landing while we read the file is then seen at the next look.
        watcher = ConfigWatcher(settings.config_path)
        shared.adopt(configs.load(settings.config_path))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        # SIGHUP (a terminal closing, `kill -HUP`) means "read the config again", not "die".
        loop.add_signal_handler(signal.SIGHUP, shared.reload_requested.set)
        try:
            async with self._wiring.runtime(settings.endpoint) as runtime:
                server = await self._serve(runtime)
                try:
                    async with self._wiring.registry_client(
                        lambda host: shared.current().registry(host),
                        settings.hosts_dir,
                        shared.credentials,
                        observer=shared.metrics,
                    ) as registry:
                        await self._run_loops(watcher, runtime, registry)
                finally:
                    await server.cleanup()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        log.info("stopped", extra={"event": "stop"})
        return 0

    async def _serve(self, runtime: NodeRuntime) -> web.AppRunner:
        shared = self.shared
        app = make_app(
            shared.report, shared.metrics.registry, lambda: _health(runtime), shared.stop.is_set
        )
        drain = min(SERVER_DRAIN, shared.settings.shutdown_grace)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=drain)
        await runner.setup()
        host, port = shared.settings.listen
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            await runner.cleanup()
            raise InputError(f"cannot serve on {host}:{port}: {exc}") from exc
        log.info("serving on %s:%d", host, port, extra={"event": "start"})
        return runner

    async def _run_loops(
        self, watcher: ConfigWatcher, runtime: NodeRuntime, registry: Resolver
    ) -> None:
        shared = self.shared
        helpers: dict[str, Callable[[], Awaitable[None]]] = {
            "config": ConfigLoop(shared, watcher).run,
            "starts": lambda: StartScanner(shared).run(runtime),
            "doctor": lambda: DoctorLoop(shared, self._wiring).run(runtime, registry),
            "progress": lambda: runtime.follow_pulls(
                shared.progress, PROGRESS_INTERVAL, self._pull_progress
            ),
        }
        gate = shared.settings.gate
        if gate is not None:
            helpers["gate"] = lambda: GateLoop(shared).run(gate, self._wiring.node_api)
        passes = PassLoop(shared, self._rng)
        async with asyncio.TaskGroup() as tasks:
            started = [tasks.create_task(self._guarded(n, loop)) for n, loop in helpers.items()]
            tasks.create_task(self._guarded("reconcile", lambda: passes.run(runtime, registry)))
            await shared.stop.wait()
            for helper in started:
                helper.cancel()

    async def _guarded(self, task: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Run one of the daemon's loops for as long as the daemon runs. An unexpected error
        (a bug, input no check foresaw) is logged with its traceback, counted, and the loop
        starts again after a backoff with full jitter: one failure never ends the process,
        which runs on every node of a fleet at once."""
        failures = 0
        while not self.shared.stop.is_set():
            try:
                await loop()
                return
            except Exception:
                failures += 1
                wait = TASK_RETRY.delay(min(failures - 1, 10), None, self._rng)
                self.shared.metrics.task_failures.labels(task).inc()
                log.exception(
                    "the %s loop failed; restarting it in %.1fs",
                    task,
                    wait,
                    extra={"event": "task_failed", "task": task},
                )
                await first_of(self.shared.stop.wait(), seconds=wait)

    def _pull_progress(self) -> None:
        """The pulls in flight have been looked at: the gauge says their bytes, and each pull
        running longer than the log interval says how far it has got."""
        shared = self.shared
        shared.metrics.pull_bytes_in_flight.set(shared.progress.bytes_in_flight())
        for view in shared.progress.due(shared.settings.progress_log_interval):
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


async def _health(runtime: NodeRuntime) -> str | None:
    try:
        await runtime.cri.ping(HEALTH_TIMEOUT)
    except RuntimeUnavailable as exc:
        return str(exc)
    return None
