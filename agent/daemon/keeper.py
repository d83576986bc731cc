"""`from-cluster --watch`: the agents' ConfigMap kept current. List every kind, apply the list
(unchanged: nothing written; a drop past --max-drop: held), then watch each kind from the
version it was listed at (bookmarks move that version on) until something changes; a burst of
changes is one write (--debounce). A version the API server no longer keeps (410) lists again;
--resync lists again anyway (a PodTemplate a buffer names is not watched). A failure is said and
retried with backoff and jitter; it never ends the process. Metrics on --listen."""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from agent.core.errors import AgentError, KubeApiError
from agent.core.lists import config as configs
from agent.core.text import fit
from agent.daemon.settings import parse_listen

Reader = Callable[[argparse.Namespace, Any], Awaitable[tuple[str, dict[str, str]]]]
Applier = Callable[[Any, tuple[str, str], str, str, float], Awaitable[tuple[str, str]]]
EVENTS = {"wrote": ("Normal", "ListUpdated"), "held": ("Warning", "ListHeld")}
"""What each outcome says as an Event on the ConfigMap (unchanged says nothing)."""
log = logging.getLogger(__name__)
BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
WATCH_AGAIN = 0.5


class Keeper:
    def __init__(
        self,
        args: argparse.Namespace,
        api: Any,
        target: tuple[str, str],
        read: Reader,
        apply: Applier,
    ) -> None:
        self._args = args
        self._api = api
        self._target = target
        self._read = read
        self._apply = apply
        self._said: str | None = None
        """The last Event's message: the same outcome again is not said twice."""
        self.registry = CollectorRegistry()
        self.writes = Counter(
            "prepull_from_cluster_writes",
            "Lists computed and what became of each: wrote, unchanged, held (a drop past "
            "--max-drop), failed (the API server or a registry refused; retried).",
            ["result"],
            registry=self.registry,
        )
        self.relists = Counter(
            "prepull_from_cluster_relists",
            "Full reads of the cluster, by why: start, change (a watch saw one), expired (410: "
            "the watched version is gone), resync (--resync), retry (after a failure).",
            ["reason"],
            registry=self.registry,
        )
        self.images = Gauge(
            "prepull_from_cluster_images",
            "Images in the list last computed.",
            registry=self.registry,
        )
        self.last_write = Gauge(
            "prepull_from_cluster_last_write_timestamp_seconds",
            "When the ConfigMap was last written (0: not yet by this process).",
            registry=self.registry,
        )

    async def run(self) -> int:
        if self._args.listen:
            host, port = parse_listen(self._args.listen)
            start_http_server(port, host, registry=self.registry)
        reason, failures = "start", 0
        while True:
            self.relists.labels(reason).inc()
            try:
                versions = await self._converge()
                failures = 0
                reason = await self._until_changed(versions)
            except KubeApiError as exc:
                if exc.status == 410:
                    reason = "expired"
                    continue
                failures, reason = await self._failed(exc, failures)
            except AgentError as exc:
                failures, reason = await self._failed(exc, failures)
            except Exception as exc:
                log.exception("from-cluster: unexpected failure, retried")
                failures, reason = await self._failed(exc, failures)

    async def _failed(self, exc: Exception, failures: int) -> tuple[int, str]:
        self.writes.labels("failed").inc()
        pause = BACKOFF[min(failures, len(BACKOFF) - 1)] * random.uniform(0.8, 1.2)
        _say(f"from-cluster: {exc}; again in {pause:.0f}s")
        if failures == 0:
            await self._event("Warning", "ListFailed", f"the list could not be made: {exc}")
        await asyncio.sleep(pause)
        return failures + 1, "retry"

    async def _converge(self) -> dict[str, str]:
        text, versions = await self._read(self._args, self._api)
        self.images.set(len(configs.parse(text, "the cluster's list").images))
        done, said = await self._apply(
            self._api, self._target, self._args.key, text, self._args.max_drop
        )
        self.writes.labels(done).inc()
        if done == "wrote":
            self.last_write.set(time.time())
        if done in EVENTS:
            await self._event(*EVENTS[done], said)
        return versions

    async def _event(self, kind: str, reason: str, message: str) -> None:
        """An Event on the ConfigMap, best-effort (its failure is said, never fatal), and not
        the same message twice in a row."""
        if message == self._said:
            return
        self._said = message
        try:
            await self._api.record_event(*self._target, kind, reason, message)
        except AgentError as exc:
            _say(f"from-cluster: no Event recorded: {exc}")

    async def _until_changed(self, versions: dict[str, str]) -> str:
        """Why to list again: a change seen (after the debounce), or the resync period."""
        changed = asyncio.Event()
        namespace = None if self._args.all_namespaces else self._args.namespace
        watchers = [
            asyncio.create_task(self._watch(kind, namespace, version, changed))
            for kind, version in versions.items()
        ]
        waiting = asyncio.create_task(changed.wait())
        try:
            done, _ = await asyncio.wait(
                [waiting, *watchers],
                timeout=self._args.resync,
                return_when=asyncio.FIRST_COMPLETED,
            )
            for task in done:
                failed = task.exception() if task is not waiting else None
                if failed is not None:
                    raise failed
            if not changed.is_set():
                return "resync"
            await asyncio.sleep(self._args.debounce)  # a rollout's burst is one write
            return "change"
        finally:
            for task in (waiting, *watchers):
                task.cancel()
            await asyncio.gather(waiting, *watchers, return_exceptions=True)

    async def _watch(
        self, kind: str, namespace: str | None, version: str, changed: asyncio.Event
    ) -> None:
        """Watch `kind` from `version` for as long as it takes: a watch the API server ends is
        started again from the last version seen (a bookmark's)."""
        while True:
            async for seen in self._api.changes(
                kind, namespace, self._args.selector, self._args.field_selector, version
            ):
                if seen is None:
                    changed.set()
                    return
                version = seen
            await asyncio.sleep(WATCH_AGAIN)  # a server that ends watches at once is not spun on


def _say(text: str) -> None:
    print(fit(text), file=sys.stderr, flush=True)
