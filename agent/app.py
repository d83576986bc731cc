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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry

from agent import config as configs
from agent import rpc
from agent.config import PreloadConfig
from agent.containerd import ContainerdImages, node_platform
from agent.credentials import CredentialFiles
from agent.cri import CriClient
from agent.errors import AgentError, ConfigError, InputError, RuntimeUnavailable
from agent.hosts import HostsDirectory, resolver
from agent.metrics import Metrics, observe_pass
from agent.platform import Platform
from agent.reconcile import Outcome, Reconciler
from agent.registry import RegistryClient, open_session
from agent.server import make_app
from agent.starts import arrivals, classify
from agent.status import NodeReport

log = logging.getLogger("prepull-agent")
# ±10% around `resync`, so a fleet started together does not hit registries in lockstep.
RESYNC_JITTER = 0.1
HEALTH_TIMEOUT = 2.0


def jittered(resync: float, rng: Callable[[], float]) -> float:
    """`resync` ± RESYNC_JITTER, uniformly."""
    return resync * (1 + RESYNC_JITTER * (2 * rng() - 1))


@dataclass(frozen=True)
class DaemonSettings:
    config_path: Path
    endpoint: str
    node: Platform | None
    """None: the platform containerd's CRI plugin pulls for (uname if it does not say)."""
    listen: tuple[str, int]
    shutdown_grace: float = 20.0
    """Seconds in-flight pulls get to finish after SIGTERM; keep below the pod's grace period."""
    watch_interval: float = 2.0
    """Seconds between looks at the config file (a ConfigMap update lands within a minute)."""
    hosts_dir: Path | None = None
    """containerd's registry hosts directory (certs.d), for the same mirrors, TLS and HTTP."""
    strict_readiness: bool = False
    """/readyz waits for permanently failed images too (a broken entry then blocks rollouts)."""
    container_scan_interval: float = 10.0
    """Seconds between looks for new containers, to count pod starts that hit or missed. The
    verdict comes from timestamps, so a slower scan is as accurate, only later."""


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
        self.report = NodeReport(settings.node, strict=settings.strict_readiness)
        self._rng = rng
        self._stop = asyncio.Event()
        self._reload_requested = asyncio.Event()
        self._config: PreloadConfig | None = None
        self._credential_files = CredentialFiles(())
        self._node: Platform | None = settings.node
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
        channel = rpc.open_channel(self.settings.endpoint)
        cri = CriClient(channel, self.settings.endpoint)
        runner = web.AppRunner(
            make_app(
                self.report, self.metrics.registry, lambda: self._health(cri), self._stop.is_set
            ),
            handle_signals=False,
        )
        try:
            await runner.setup()
            host, port = self.settings.listen
            try:
                await web.TCPSite(runner, host, port).start()
            except OSError as exc:
                raise InputError(f"cannot serve on {host}:{port}: {exc}") from None
            log.info("serving on %s:%d", host, port, extra={"event": "start"})
            async with open_session() as session:
                hosts = HostsDirectory(self.settings.hosts_dir)
                registry = RegistryClient(
                    session,
                    resolver(lambda host: self._current().registry(host), hosts),
                    observe=self._observe_request,
                    credentials=lambda ref: self._credential_files.lookup(ref),
                    concurrency=lambda domain: self._current().registry(domain).concurrency,
                    on_rate_limit=lambda host, left: (
                        self.metrics.registry_ratelimit_remaining.labels(host).set(left)
                    ),
                )
                binder = ContainerdImages(channel, self.settings.endpoint)
                await self._loop(watcher, cri, registry, binder, lambda: node_platform(channel))
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            await runner.cleanup()
            await channel.close()
        log.info("stopped", extra={"event": "stop"})
        return 0

    def _current(self) -> PreloadConfig:
        assert self._config is not None
        return self._config

    def _adopt(self, config: PreloadConfig) -> None:
        self._config = config
        self._credential_files = CredentialFiles(config.credential_paths())
        self.report.configure(config.images)
        self.report.config_loaded(config.source, len(config.images), time.time())
        self.metrics.config_last_reload_successful.set(1)

    async def _loop(
        self,
        watcher: ConfigWatcher,
        cri: CriClient,
        registry: RegistryClient,
        binder: ContainerdImages,
        locate: Callable[[], Awaitable[Platform]],
    ) -> None:
        next_pass = next_scan = time.monotonic()
        while not self._stop.is_set():
            hangup = self._reload_requested.is_set()
            self._reload_requested.clear()
            if (watcher.changed() or hangup) and self._reload():
                next_pass = time.monotonic()
            if time.monotonic() >= next_scan:
                await self._scan_starts(cri, binder)
                next_scan = time.monotonic() + self.settings.container_scan_interval
            if time.monotonic() >= next_pass:
                task = asyncio.create_task(self._pass(cri, registry, binder, locate))
                stopper = asyncio.create_task(self._stop.wait())
                await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await stopper
                if not task.done():
                    await self._finish_in_grace(task)
                    return
                task.result()
                next_pass = time.monotonic() + jittered(self._current().resync_seconds, self._rng)
            due = min(next_pass, next_scan) - time.monotonic()
            wait = min(self.settings.watch_interval, max(0.0, due))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=wait)

    async def _finish_in_grace(self, task: asyncio.Task[None]) -> None:
        """Shutdown: no new pulls start; in-flight ones get the grace period, then are cancelled."""
        grace = self.settings.shutdown_grace
        log.info("shutting down; waiting up to %.0fs for pulls in flight", grace)
        done, _ = await asyncio.wait({task}, timeout=grace)
        if not done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _reload(self) -> bool:
        path = self.settings.config_path
        try:
            config = configs.load(path)
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
        log.info(
            "config reloaded: %d images", len(config.images), extra={"event": "config_reloaded"}
        )
        return True

    async def _meet_runtime(
        self, cri: CriClient, locate: Callable[[], Awaitable[Platform]]
    ) -> Platform:
        """Learn the runtime behind the socket (again: it may have been upgraded) and, once,
        the platform it pulls for; say once what it cannot do."""
        info = await cri.version()
        assert cri.features is not None
        if self._node is None:
            self._node = await locate()
            self.report.located(self._node)
            log.info("node platform %s", self._node, extra={"event": "platform"})
        if self._runtime_seen != (info.name, info.version):
            self._runtime_seen = (info.name, info.version)
            self.metrics.runtime_is(info.name, info.version)
            limitations = cri.features.limitations()
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
                **cri.features.as_dict,
                "cri_version": info.api_version,
                "limitations": limitations,
            }
        return self._node

    async def _pass(
        self,
        cri: CriClient,
        registry: RegistryClient,
        binder: ContainerdImages,
        locate: Callable[[], Awaitable[Platform]],
    ) -> None:
        config = self._current()
        started = time.monotonic()
        try:
            node = await self._meet_runtime(cri, locate)
            assert cri.features is not None
            reconciler = Reconciler(
                cri,
                registry,
                binder if cri.features.tag_binding else None,
                node,
                on_start=self.report.pulling,
                stopping=self._stop.is_set,
                credentials=self._credential_files.lookup,
                pins_honoured=cri.features.pins_honoured,
            )
            outcomes = await reconciler.converge(config)
        except RuntimeUnavailable as exc:
            self.report.last_error = str(exc)
            log.error("pass skipped: %s", exc, extra={"event": "runtime_unavailable"})
            return
        summary = self.report.record(outcomes, time.time())
        observe_pass(
            self.metrics, outcomes, self.report, summary, time.monotonic() - started, time.time()
        )
        for outcome in outcomes:
            _log_outcome(outcome)
        for image in summary.evicted:
            log.warning(
                "%s was evicted from the node and restored",
                image,
                extra={"event": "eviction", "image": image},
            )

    async def _scan_starts(self, cri: CriClient, binder: ContainerdImages) -> None:
        """Count new containers as hits or misses (needs containerd's image creation times)."""
        if self.report.runtime.get("name", "containerd") != "containerd":
            return
        try:
            containers = await cri.list_containers()
            if self._seen_containers is None:
                # Containers from before this agent started are not ours to judge.
                self._seen_containers = {c.id for c in containers}
                return
            if all(c.id in self._seen_containers for c in containers):
                self._seen_containers = {c.id for c in containers}
                return
            arrived = arrivals(await cri.list_images(), await binder.created_ns())
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

    def _observe_request(self, host: str, method: str, status: str, seconds: float) -> None:
        self.metrics.registry_request_duration.labels(host, method, status).observe(seconds)

    async def _health(self, cri: CriClient) -> str | None:
        try:
            await cri.ping(HEALTH_TIMEOUT)
        except RuntimeUnavailable as exc:
            return str(exc)
        return None


def _log_outcome(outcome: Outcome) -> None:
    fields = {
        "image": outcome.entry.written,
        "digest": outcome.digest,
        "duration_seconds": round(outcome.seconds, 3),
        "outcome": outcome.status,
        "bytes": outcome.size,
    }
    if outcome.status == "failed":
        log.warning(
            "%s failed: %s",
            outcome.entry.written,
            outcome.detail,
            extra={**fields, "error": outcome.detail},
        )
    elif outcome.status in ("pulled", "bound"):
        log.info("%s %s", outcome.entry.written, outcome.status, extra=fields)
