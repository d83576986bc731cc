"""The config loop: adopts a changed preload list (a ConfigMap update, SIGHUP) and keeps the
last good one when an update is bad."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

from agent.core.errors import ConfigError
from agent.core.files import Signature, signature
from agent.core.lists import config as configs
from agent.daemon.state import Shared

log = logging.getLogger(__name__)


class ConfigWatcher:
    """Notices a changed config file, including kubelet's ConfigMap update: a `..data` symlink
    swapped to a new directory, which changes the resolved file but maybe not its mtime."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: Signature | None = signature(path)

    def changed(self) -> bool:
        now = signature(self.path)
        if now == self._seen:
            return False
        self._seen = now
        return True


class ConfigLoop:
    def __init__(self, shared: Shared, watcher: ConfigWatcher) -> None:
        self._shared = shared
        self._watcher = watcher

    async def run(self) -> None:
        shared = self._shared
        while True:
            hangup = shared.reload_requested.is_set()
            shared.reload_requested.clear()
            if self._watcher.changed() or hangup:
                await self.reload()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    shared.reload_requested.wait(), timeout=shared.settings.watch_interval
                )

    async def reload(self) -> bool:
        shared = self._shared
        path = shared.settings.config_path
        try:
            # Parsing thousands of entries takes a while: off the loop that answers probes.
            config = await asyncio.to_thread(configs.load, path)
        except ConfigError as exc:
            # The last good list keeps running; the agent stays healthy.
            shared.metrics.config_reload_errors.inc()
            shared.metrics.config_last_reload_successful.set(0)
            shared.report.config_rejected(str(exc), time.time())
            log.error(
                "config update rejected, keeping the last good list: %s",
                exc,
                extra={"event": "config_rejected", "error": str(exc)},
            )
            return False
        shared.adopt(config)
        shared.list_changed.set()
        log.info(
            "config reloaded: %d images", len(config.images), extra={"event": "config_reloaded"}
        )
        return True
