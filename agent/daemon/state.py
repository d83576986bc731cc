"""What the daemon's loops share: its settings, what it reports, the list it runs, and the
events by which the loops tell each other what happened."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass, field

from agent.core.engine.rollout import Rollout
from agent.core.images.reference import Reference
from agent.core.lists.config import PreloadConfig
from agent.core.lists.credentials import Credential, CredentialFiles
from agent.core.reports.events import NodeEvent
from agent.core.reports.progress import Progress
from agent.core.reports.status import NodeReport
from agent.daemon.metrics import Metrics, one_series
from agent.daemon.settings import DaemonSettings

log = logging.getLogger(__name__)


@dataclass
class Shared:
    settings: DaemonSettings
    metrics: Metrics
    progress: Progress
    report: NodeReport
    rollout: Rollout
    """This node's place in rollouts: when it first wanted new content, what it held."""
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    reload_requested: asyncio.Event = field(default_factory=asyncio.Event)
    """SIGHUP: read the config again."""
    list_changed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set by the config loop when it adopts a new list; the pass loop clears it."""
    report_changed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when an image is done and after every pass, for the readiness gate to look."""
    node_events: deque[NodeEvent] = field(default_factory=lambda: deque(maxlen=1000))
    """Images that failed, for the gate's loop to record as Events on the Node (if it does)."""
    pass_done: asyncio.Event = field(default_factory=asyncio.Event)
    """Set by the pass loop after each pass, for the doctor loop to look again."""
    pulled_from: dict[str, Reference] = field(default_factory=dict)
    """Each registry a pass pulled from, with its first image pulled (the doctor's Range probe)."""
    config: PreloadConfig | None = None
    credential_files: CredentialFiles = field(default_factory=lambda: CredentialFiles(()))

    def current(self) -> PreloadConfig:
        assert self.config is not None, "a list is adopted before any loop starts"
        return self.config

    def credentials(self, ref: Reference) -> list[Credential]:
        return self.credential_files.lookup(ref)

    def adopt(self, config: PreloadConfig) -> None:
        self.config = config
        self.credential_files = CredentialFiles(config.credential_paths())
        self.report.configure(config.images)
        # A rollout spread makes converging take that long by design: the deadline is beyond it.
        self.report.converge_deadline = self.settings.converge_deadline + config.rollout_spread
        self.report.config_loaded(config.source, len(config.images), time.time())
        self.metrics.config_last_reload_successful.set(1)
        if self.report.list_digest is not None:
            one_series(self.metrics.list_info, self.report.list_digest)
        if self.report.converging:
            log.info(
                "converging to list %s while serving list %s: the node stays ready",
                self.report.list_digest,
                self.report.served_digest,
                extra={"event": "converging", "to": self.report.list_digest},
            )


async def first_of(*waits: Awaitable[object], seconds: float) -> None:
    """Return when the first of `waits` completes or `seconds` pass; cancel the rest."""
    futures = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(futures, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future in futures:
            future.cancel()
        await asyncio.gather(*futures, return_exceptions=True)
