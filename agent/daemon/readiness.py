"""The readiness gate's loop: keeps the node's condition and startup taint (core.reports.gate) in
line with /readyz, and records Events on the Node (agent.core.reports.events) for failing images and
the gate's decisions, through the Kubernetes API (agent.adapters.kube.node)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

from agent.core.errors import AgentError
from agent.core.reports.events import EventBook, EventRecorder
from agent.core.reports.gate import NodeGate
from agent.core.reports.status import State
from agent.daemon.settings import GateSettings
from agent.daemon.state import Shared, first_of

if TYPE_CHECKING:
    from agent.core.reports.gate import GateApi
    from agent.wiring import ClusterAccess

log = logging.getLogger(__name__)
# The gate looks again when an image is done or a pass ends, and at least this often (the
# ready timeout must fire while a pull hangs); it writes to the API only when something changed.
GATE_INTERVAL = 5.0
GATE_BATCH = 0.5
# What a ready node's condition names as failed for good (reported, not waited for).
FAILED = (State.FAILED, State.REFUSED)


class GateLoop:
    def __init__(self, shared: Shared) -> None:
        self._shared = shared

    async def run(
        self,
        settings: GateSettings,
        node_api: Callable[[ClusterAccess], AbstractAsyncContextManager[GateApi]],
    ) -> None:
        """Keep the node's condition and startup taint in line with /readyz's rule. An API
        error is logged (once while it lasts) and the next look tries again."""
        events = self._shared.node_events
        async with node_api(settings.access) as api:
            gate = NodeGate(
                api,
                condition=settings.condition,
                taint_key=settings.startup_taint,
                timeout=settings.ready_timeout,
                clock=time.monotonic,
                on_event=events.append if settings.events else lambda event: None,
            )
            book = EventBook(settings.access.node, settings.access.namespace, time.monotonic)
            recorder = EventRecorder(book, api)
            failing: str | None = None
            while True:
                self._shared.report_changed.clear()
                report = self._shared.report
                waiting = [r.image for r in report.waiting_for]
                present = len(report.desired) - len(report.missing)
                failed = [r.image for r in report.missing if r.permanent and r.state in FAILED]
                try:
                    toward = report.list_digest if report.converging else None
                    await gate.sync(
                        report.ready, waiting, present, report.passes, failed, converging_to=toward
                    )
                    failing = None
                except AgentError as exc:
                    if str(exc) != failing:
                        log.warning("readiness gate: %s", exc, extra={"event": "gate_error"})
                    failing = str(exc)
                sent = recorder.to_json() if settings.events else None
                report.gate = {**gate.to_json(), "error": failing, "events": sent}
                if settings.events:
                    drained = [events.popleft() for _ in range(len(events))]
                    await recorder.flush(drained)
                    report.gate["events"] = recorder.to_json()
                await first_of(self._shared.report_changed.wait(), seconds=GATE_INTERVAL)
                # Images that finish together are looked at together: one sync, not one each.
                await asyncio.sleep(GATE_BATCH)
