"""The doctor loop: how containerd pulls for CRI (wiring.checkup, what `prepull-agent doctor`
prints) in /status, the metrics and one log line whenever it changes — read again when a new
containerd process serves the socket, and when a registry the list pulled from is found to
ignore HTTP Range (containerd's chunked fetch is unsafe with it). With --kubelet-config, what the
kubelet makes of the list (wiring.kubelet_checkup) the same way, judged again when its file or the
list changes. Apart from the pass loop: a pass never waits for it, and it never fails a pass."""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import TYPE_CHECKING

from agent.core.engine import room
from agent.core.engine.deadline import within_deadline
from agent.core.errors import AgentError, RuntimeUnavailable
from agent.core.files import Signature, signature
from agent.core.images.platform import Platform
from agent.core.images.reference import Reference
from agent.core.runtimes import CONTAINERD
from agent.daemon.state import Shared, first_of

if TYPE_CHECKING:
    from agent.core.ports import Resolver
    from agent.wiring import NodeRuntime, Wiring

log = logging.getLogger(__name__)
# Without a pass to look after, the loop looks again this often (a containerd restarted between
# passes is seen within a minute).
LOOK_SECONDS = 60.0


class DoctorLoop:
    def __init__(self, shared: Shared, wiring: Wiring) -> None:
        self._shared = shared
        self._wiring = wiring
        self._started: tuple[str, int | None] | None = None
        """The containerd version and pid last diagnosed."""
        self._range: dict[str, bool | None] = {}
        """Per registry of the list, probed once: whether it honours Range (None: unknown)."""
        self._kubelet_seen: tuple[Signature | None, object, bool] | None = None
        """The kubelet file, the list and the runtime's pinning last judged."""

    async def run(self, runtime: NodeRuntime, registry: Resolver) -> None:
        shared = self._shared
        while not shared.stop.is_set():
            try:
                await self._look(runtime, registry)
            except RuntimeUnavailable as exc:
                # The pass loop says so (pass skipped); the doctor looks again after a pass.
                log.debug("the doctor could not ask the runtime: %s", exc)
            await first_of(shared.stop.wait(), shared.pass_done.wait(), seconds=LOOK_SECONDS)
            shared.pass_done.clear()

    async def _look(self, runtime: NodeRuntime, registry: Resolver) -> None:
        info = await runtime.meet()
        features = runtime.features
        await self._judge_kubelet(features.pins_honoured if features is not None else True)
        if info.name != CONTAINERD or runtime.introspection is None:
            return
        # containerd reads its config when it starts: read it again when a new process serves
        # (1.6 does not say its pid: read it each time, say it when what it says changes).
        pid = await runtime.introspection.server_pid()
        changed = pid is None or (info.version, pid) != self._started
        self._started = (info.version, pid)
        node = self._shared.report.node
        if node is not None and await self._probe_range(registry, node):
            changed = True
        if changed:
            await self._diagnose(info.version)

    async def _probe_range(self, registry: Resolver, node: Platform) -> bool:
        """Once per registry the passes pulled from, through its first image pulled: whether it
        honours Range, which containerd's chunked fetch needs. One resolve and one ranged GET
        of a small blob per registry; a warm node asks its registries nothing."""
        probed = False
        for domain, ref in list(self._shared.pulled_from.items()):
            if domain in self._range:
                continue
            self._range[domain] = await _honours_range(registry, ref, node)
            probed = True
            if self._range[domain] is False:
                log.warning(
                    "%s ignores HTTP Range: containerd's chunked fetch is unsafe with it",
                    domain,
                    extra={"event": "range_probe", "registry": domain},
                )
        return probed

    async def _diagnose(self, version: str) -> None:
        """A config that cannot be read is reported, never fatal. The files and /proc are read
        in a thread: a pass's calls go on meanwhile."""
        shared = self._shared
        report = shared.report.runtime
        ignoring = [domain for domain, honours in self._range.items() if honours is False]
        try:
            checked = await asyncio.to_thread(
                self._wiring.checkup,
                shared.settings.endpoint,
                version,
                shared.settings.containerd_config,
                ignoring,
            )
            found = checked.diagnosis
        except AgentError as exc:
            if report.get("pull_path") != {"error": str(exc)}:
                report["pull_path"] = {"error": str(exc)}
                log.warning(
                    "cannot say how containerd pulls: %s", exc, extra={"event": "pull_path"}
                )
            return
        if self._range:
            report["range"] = dict(self._range)
        said = found.to_json()
        if report.get("pull_path") == said:
            return
        report["pull_path"] = said
        shared.metrics.pull_path_is(found.transfer_service, found.findings)
        path = "the transfer service" if found.transfer_service else "its old path"
        forced = f", forced by {', '.join(found.forced_by)}" if found.forced_by else ""
        say = log.warning if found.traps else log.info
        say(
            "containerd pulls for CRI through %s%s; %d findings (prepull-agent doctor)",
            path,
            forced,
            len(found.findings),
            extra={"event": "pull_path", "findings": [f.setting for f in found.findings]},
        )

    async def _judge_kubelet(self, pins_honoured: bool) -> None:
        """What the kubelet makes of the list, once per kubelet file and list seen; a file that
        cannot be read is reported, never fatal."""
        shared = self._shared
        path = shared.settings.kubelet_config
        if path is None:
            return
        seen = (signature(path), shared.config, pins_honoured)
        if seen == self._kubelet_seen:
            return
        self._kubelet_seen = seen
        try:
            found = await asyncio.to_thread(
                functools.partial(
                    self._wiring.kubelet_checkup,
                    path,
                    shared.config,
                    multi_tenant=shared.settings.multi_tenant,
                    pins_honoured=pins_honoured,
                )
            )
        except AgentError as exc:
            shared.report.kubelet = {"config": str(path), "error": str(exc)}
            shared.metrics.kubelet_says(())
            log.warning("cannot judge the kubelet's settings: %s", exc, extra={"event": "kubelet"})
            return
        shared.report.kubelet = found.to_json()
        shared.metrics.kubelet_says(found.findings)
        say = log.warning if found.actionable else log.info
        say(
            "the kubelet (%s) and the list: %d findings (prepull-agent doctor --config)",
            found.source,
            len(found.findings),
            extra={"event": "kubelet", "findings": [f.setting for f in found.findings]},
        )


async def _honours_range(registry: Resolver, ref: Reference, node: Platform) -> bool | None:
    """Whether `ref`'s registry serves a byte range of the image's config (the smallest blob
    a pull fetches, found as the disk budget finds blobs); None when it cannot tell. Costs the
    resolve's manifest GETs and one ranged GET."""
    try:
        found = await room.blobs(registry, await within_deadline(registry.resolve(ref, node)))
    except AgentError as exc:  # a registry, manifest or platform error
        log.debug("%s: cannot tell whether Range is honoured: %s", ref, exc)
        return None
    return await registry.serves_range(ref, found.blobs[0].digest) if found.blobs else None
