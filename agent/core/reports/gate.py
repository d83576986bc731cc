"""Keep pods off a node until its list is preloaded: a node condition saying whether it is, and
the removal of a startup taint once it is (or once waiting has taken too long). The decisions
are pure; NodeGate carries them out through a NodeApi (agent.adapters.kube.node implements it)."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from agent.core.errors import Conflict, MalformedNode
from agent.core.reports.events import NORMAL, WARNING, EventSink, NodeEvent

# Domain-prefixed, as the Node Readiness Controller (kubernetes-sigs/node-readiness-controller)
# expects of conditions reported for it (`projectcalico.org/CalicoReady`).
CONDITION_TYPE = "prepull.io/PrepullReady"
LEGACY_CONDITION_TYPE = "PrepullReady"
"""What agents before 0.2 called it: removed at the first write, so that nothing reads a
condition no one keeps any more."""
# Written again at least this often when nothing changed, as that controller's reporters do:
# a condition whose heartbeat stops says its reporter stopped.
HEARTBEAT_SECONDS = 300.0
# A taint the agent could remove twice in a row without seeing it again is a conflict with
# another writer each time: a few tries, then the next sync tries again.
TAINT_ATTEMPTS = 5
MAX_NAMED = 5
"""Images a condition's message names before it says how many more."""
log = logging.getLogger(__name__)


class NodeApi(Protocol):
    """What the gate needs of the Kubernetes API, for its own Node only."""

    async def get_node(self) -> dict[str, Any]: ...
    async def patch_status(self, patch: dict[str, Any]) -> None: ...
    async def json_patch(self, operations: list[dict[str, Any]]) -> None: ...


class GateApi(NodeApi, EventSink, Protocol):
    """The gate's whole use of the API: its Node, and Events about it (adapters.kube.node)."""


@dataclass(frozen=True)
class Verdict:
    ready: bool
    reason: str
    message: str
    release: bool
    """Whether the startup taint may go: ready, or waited for longer than the timeout."""


def verdict(
    ready: bool,
    waiting: Sequence[str],
    present: int,
    *,
    passes: int,
    waited: float,
    timeout: float | None,
    failed: Sequence[str] = (),
    converging_to: str | None = None,
) -> Verdict:
    """The node's preload state, in the words a condition carries. `ready` and `waiting` are
    /readyz's rule (core.reports.status.NodeReport); `converging_to`: the list a ready node works
    toward while it serves the one before (ready, reason Converging)."""
    if ready and converging_to is not None:
        message = f"serving the list before while converging to {converging_to[:19]}: "
        message += f"waiting for {_images(len(waiting), 'new ')}: {_named(waiting)}"
        return Verdict(True, "Converging", message, release=True)
    if ready:
        # Ready with permanent failures (reported, not waited for): the message names them.
        broken = f"; {len(failed)} failed for good: {_named(failed)}" if failed else ""
        return Verdict(True, "Preloaded", f"{_images(present)} present{broken}", release=True)
    message = f"waiting for {_images(len(waiting))}: {_named(waiting)}" if waiting else ""
    if passes == 0:
        message = "; ".join(filter(None, ["the first pass has not finished", message]))
    if timeout is not None and waited >= timeout:
        return Verdict(
            False,
            "ReadyTimeout",
            f"released after {timeout:.0f}s without the list preloaded; {message}",
            release=True,
        )
    return Verdict(False, "Preloading", message, release=False)


def _images(count: int, kind: str = "") -> str:
    """`1 image`, `3 images`, `2 new images`."""
    return f"{count} {kind}image{'' if count == 1 else 's'}"


def _named(images: Sequence[str]) -> str:
    named = ", ".join(images[:MAX_NAMED])
    more = len(images) - MAX_NAMED
    return f"{named} and {more} more" if more > 0 else named


def condition(
    found: Verdict, now: datetime.datetime, previous: dict[str, Any] | None
) -> dict[str, Any]:
    """The PrepullReady condition for `found`; lastTransitionTime moves only when the status
    does (Kubernetes' convention for conditions)."""
    status = "True" if found.ready else "False"
    stamp = now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    since = stamp
    if previous is not None and previous.get("status") == status:
        kept = previous.get("lastTransitionTime")
        since = kept if isinstance(kept, str) else stamp
    return {
        "type": CONDITION_TYPE,
        "status": status,
        "reason": found.reason,
        "message": found.message,
        "lastHeartbeatTime": stamp,
        "lastTransitionTime": since,
    }


def checked_node(document: dict[str, Any]) -> dict[str, Any]:
    """`document` if it has a Node's shape where the gate reads it — `spec` and `status`
    objects (or null), `spec.taints` and `status.conditions` lists (or null) of objects, each
    taint's `key` and condition's `type` a string — else MalformedNode naming the field.
    Checked once, at the edge, so the decisions below can trust it."""
    for half, field, key in (("spec", "taints", "key"), ("status", "conditions", "type")):
        part = document.get(half)
        if part is None:
            continue
        if not isinstance(part, dict):
            raise MalformedNode(_shape(half, "an object", part))
        items = part.get(field)
        if items is None:
            continue
        if not isinstance(items, list):
            raise MalformedNode(_shape(f"{half}.{field}", "a list", items))
        for index, item in enumerate(items):
            where = f"{half}.{field}[{index}]"
            if not isinstance(item, dict):
                raise MalformedNode(_shape(where, "an object", item))
            if not isinstance(item.get(key), str):
                raise MalformedNode(_shape(f"{where}.{key}", "a string", item.get(key)))
    return document


def _shape(field: str, wanted: str, found: object) -> str:
    return f"the API server sent a Node whose {field} is {type(found).__name__}, not {wanted}"


def current_condition(node: dict[str, Any], kind: str = CONDITION_TYPE) -> dict[str, Any] | None:
    for item in (node.get("status") or {}).get("conditions") or []:
        if item.get("type") == kind:
            return dict(item)
    return None


def taint_removal(node: dict[str, Any], key: str) -> list[dict[str, Any]] | None:
    """A JSON patch removing every taint with `key`, guarded by a `test` of the whole taint
    list as read: if anyone changed the taints since, the API server refuses it (422) and
    nothing of theirs is lost. None if the node has no such taint. `node` is checked_node's."""
    taints = (node.get("spec") or {}).get("taints") or []
    found = [i for i, taint in enumerate(taints) if taint.get("key") == key]
    if not found:
        return None
    operations: list[dict[str, Any]] = [{"op": "test", "path": "/spec/taints", "value": taints}]
    # Highest index first: each removal leaves the indexes before it as they were.
    operations += [{"op": "remove", "path": f"/spec/taints/{i}"} for i in reversed(found)]
    return operations


class NodeGate:
    """The daemon's side of the readiness gate, synced after every look at readiness."""

    def __init__(
        self,
        api: NodeApi,
        *,
        condition: bool,
        taint_key: str | None,
        timeout: float | None,
        clock: Callable[[], float],
        wall_clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
        on_event: Callable[[NodeEvent], None] = lambda event: None,
    ) -> None:
        self._api = api
        self._on_event = on_event
        """Told the gate's decisions, for Events on the Node (agent.core.reports.events)."""
        self._condition = condition
        self._taint_key = taint_key
        self._timeout = timeout
        self._clock = clock
        self._wall_clock = wall_clock
        self._started = clock()
        self._written: tuple[str, str, str] | None = None
        """The condition's status, reason and message as last written."""
        self._written_at = 0.0
        self.released: str | None = None
        """Why the startup taint is gone ("ready", "timeout", "absent"), once it is."""
        self.last: Verdict | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "condition": CONDITION_TYPE if self._condition else None,
            "startup_taint": self._taint_key,
            "ready_timeout_seconds": self._timeout,
            "reason": self.last.reason if self.last else None,
            "message": self.last.message if self.last else None,
            "taint_released": self.released,
        }

    async def sync(
        self,
        ready: bool,
        waiting: Sequence[str],
        present: int,
        passes: int,
        failed: Sequence[str] = (),
        converging_to: str | None = None,
    ) -> None:
        """Bring the node's condition and taint in line with the readiness now. Writes only
        what changed; a failed write is tried again at the next sync (AgentError surfaces).
        The taint goes once, at bootstrap: a list change later never brings it back."""
        found = verdict(
            ready,
            waiting,
            present,
            passes=passes,
            waited=self._clock() - self._started,
            timeout=self._timeout,
            failed=failed,
            converging_to=converging_to,
        )
        self.last = found
        if self._condition:
            await self._write_condition(found)
        if self._taint_key is not None and self.released is None and found.release:
            await self._release(self._taint_key, found)

    async def _write_condition(self, found: Verdict) -> None:
        status = "True" if found.ready else "False"
        fresh = self._clock() - self._written_at < HEARTBEAT_SECONDS
        if self._written == (status, found.reason, found.message) and fresh:
            return
        node = await self._api.get_node()
        written = condition(found, self._wall_clock(), current_condition(node))
        # Strategic merge keyed by `type`: the kubelet's own conditions stay as they are.
        conditions: list[dict[str, Any]] = [written]
        legacy = current_condition(node, LEGACY_CONDITION_TYPE) is not None
        if legacy:
            conditions.append({"type": LEGACY_CONDITION_TYPE, "$patch": "delete"})
        await self._api.patch_status({"status": {"conditions": conditions}})
        if legacy:
            log.info("removed the %s condition an earlier agent wrote", LEGACY_CONDITION_TYPE)
        unchanged = self._written == (status, found.reason, found.message)
        if self._written is None or self._written[:2] != (status, found.reason):
            self._on_event(_condition_event(found))
        self._written = (status, found.reason, found.message)
        self._written_at = self._clock()
        if unchanged:
            return  # a heartbeat: lastHeartbeatTime moved, nothing else
        log.info(
            "node condition %s=%s (%s): %s",
            CONDITION_TYPE,
            status,
            found.reason,
            found.message,
            extra={"event": "node_condition"},
        )

    async def _release(self, key: str, found: Verdict) -> None:
        why = "ready" if found.ready else "timeout"
        for _ in range(TAINT_ATTEMPTS):
            operations = taint_removal(await self._api.get_node(), key)
            if operations is None:
                self.released = self.released or "absent"
                log.info("startup taint %s is not on the node: nothing to remove", key)
                return
            try:
                await self._api.json_patch(operations)
            except Conflict:
                continue  # someone else changed the taints: read them again
            self.released = why
            self._on_event(_release_event(key, found))
            if found.ready:
                log.info("removed the startup taint %s: %s", key, found.message)
            else:
                log.warning("removed the startup taint %s anyway: %s", key, found.message)
            return
        log.warning("startup taint %s: the node kept changing; trying again later", key)


def _condition_event(found: Verdict) -> NodeEvent:
    """What `kubectl describe node` shows when the condition's status or reason changes."""
    if found.reason == "Converging":
        return NodeEvent(NORMAL, "ConvergingToNewList", found.message)
    if found.ready:
        return NodeEvent(NORMAL, "ImagesPreloaded", found.message)
    if found.reason == "ReadyTimeout":
        return NodeEvent(WARNING, "PreloadTimedOut", found.message)
    return NodeEvent(NORMAL, "PreloadingImages", found.message or "preloading the list")


def _release_event(key: str, found: Verdict) -> NodeEvent:
    if found.ready:
        return NodeEvent(NORMAL, "StartupTaintRemoved", f"removed {key}: {found.message}")
    return NodeEvent(WARNING, "StartupTaintRemoved", f"removed {key} anyway: {found.message}")
