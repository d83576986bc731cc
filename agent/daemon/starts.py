"""The container-start scanner: counts each new container as a cache hit or a miss (was its
image present before the pod started?), for the metrics."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from agent.core.errors import AgentError
from agent.core.reports.starts import arrivals, classify
from agent.daemon.state import Shared

if TYPE_CHECKING:
    from agent.wiring import NodeRuntime

log = logging.getLogger(__name__)


class StartScanner:
    def __init__(self, shared: Shared) -> None:
        self._shared = shared
        self._seen_containers: set[str] | None = None
        """Containers already judged; None until the baseline scan at start."""

    async def run(self, runtime: NodeRuntime) -> None:
        while True:
            await self._scan(runtime)
            await asyncio.sleep(self._shared.settings.container_scan_interval)

    async def _scan(self, runtime: NodeRuntime) -> None:
        """Count new containers as hits or misses (needs containerd's image creation times)."""
        introspection = runtime.introspection
        if self._shared.report.runtime.get("name", "containerd") != "containerd":
            return
        if introspection is None:
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
            arrived = arrivals(await cri.list_images(), await introspection.created_ns())
            started = classify(
                containers, await cri.sandbox_created(), arrived, self._seen_containers
            )
        except AgentError as exc:
            log.warning("could not check container starts: %s", exc)
            return
        self._seen_containers = {c.id for c in containers}
        for container, verdict in started:
            self._shared.metrics.container_starts.labels(verdict).inc()
            log.info(
                "container %s started: image %s",
                container.id[:12],
                verdict,
                extra={"event": "container_start", "outcome": verdict, "image": container.image_id},
            )
