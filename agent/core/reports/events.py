"""Events on the agent's own Node, so that `kubectl describe node` says why a node is held: which
images fail, when the gate keeps or releases it. Aggregated and rate-limited by the rules
kubelet's events follow (client-go, tools/record/events_cache.go): a repeat of an event raises
its count instead of making a new one; more than 10 events of one reason with different messages
within 10 minutes become one "(combined from similar events)" event; and a token bucket (25,
refilled one every 5 minutes) drops the rest, so an always-failing list cannot flood etcd.
Pure: EventBook decides, the caller writes (agent.adapters.kube.node)."""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from agent.core.errors import AgentError
from agent.core.text import fit

COMPONENT = "prepull-agent"
BURST = 25
REFILL_SECONDS = 300.0
SIMILAR_MAX = 10
SIMILAR_WINDOW = 600.0
COMBINED = "(combined from similar events): "
MAX_MESSAGE = 1024
"""What the events.k8s.io API allows a note: longer messages are cut."""
REMEMBERED = 4096
"""Series the book keeps (least recently seen go first), as client-go's LRU does."""

PENDING = 100
"""Writes kept for another try while the API server fails; the oldest go first."""
ATTEMPTS = 3
"""Tries per write (one per look of the gate's loop, seconds apart) before it is dropped:
events are best-effort, as kubelet's are."""
NORMAL = "Normal"
WARNING = "Warning"
log = logging.getLogger(__name__)


class EventSink(Protocol):
    """What recording Events needs of the Kubernetes API (adapters.kube.node implements it)."""

    async def create_event(self, event: dict[str, Any]) -> None: ...
    async def patch_event(self, name: str, patch: dict[str, Any]) -> bool:
        """False if there is no such Event (it expired: the API server keeps them an hour)."""
        ...


@dataclasses.dataclass(frozen=True)
class NodeEvent:
    type: str
    """Normal or Warning."""
    reason: str
    """UpperCamelCase, what `kubectl get events` shows in REASON."""
    message: str


@dataclasses.dataclass(frozen=True)
class EventWrite:
    """What to send: a new Event (`patch` None), or a patch raising an existing one's count.
    `event` is the whole Event either way: if the patched one has expired (404), create it."""

    event: dict[str, Any]
    patch: dict[str, Any] | None

    @property
    def name(self) -> str:
        return str(self.event["metadata"]["name"])


@dataclasses.dataclass
class _Series:
    event: dict[str, Any]


class EventBook:
    """Turns the agent's NodeEvents into Event writes for one Node."""

    def __init__(
        self,
        node: str,
        namespace: str,
        clock: Callable[[], float],
        wall_clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self._node = node
        self._namespace = namespace
        self._clock = clock
        self._wall_clock = wall_clock
        self._series: OrderedDict[tuple[str, str, str], _Series] = OrderedDict()
        self._similar: dict[tuple[str, str], list[tuple[float, str]]] = {}
        self._tokens = float(BURST)
        self._filled_at = clock()
        self._named = 0
        self.dropped = 0
        """Events the rate limit dropped: what /status reports."""

    def record(self, event: NodeEvent) -> EventWrite | None:
        """The write for `event`, or None if the rate limit drops it."""
        if not self._take_token():
            self.dropped += 1
            return None
        message = fit(self._aggregated(event), MAX_MESSAGE)[:MAX_MESSAGE]
        key = (event.type, event.reason, message)
        stamp = _stamp(self._wall_clock())
        series = self._series.get(key)
        if series is not None:
            self._series.move_to_end(key)
            series.event["count"] += 1
            series.event["lastTimestamp"] = stamp
            patch = {"count": series.event["count"], "lastTimestamp": stamp}
            return EventWrite(dict(series.event), patch)
        created = self._event(event.type, event.reason, message, stamp)
        self._series[key] = _Series(created)
        if len(self._series) > REMEMBERED:
            self._series.popitem(last=False)
        return EventWrite(dict(created), None)

    def _take_token(self) -> bool:
        now = self._clock()
        self._tokens = min(BURST, self._tokens + (now - self._filled_at) / REFILL_SECONDS)
        self._filled_at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def _aggregated(self, event: NodeEvent) -> str:
        """The message, or the combined one once a reason has had more than SIMILAR_MAX
        different messages in SIMILAR_WINDOW: 200 failing images make one event, not 200."""
        now = self._clock()
        seen = [
            (at, message)
            for at, message in self._similar.get((event.type, event.reason), [])
            if now - at < SIMILAR_WINDOW and message != event.message
        ]
        seen.append((now, event.message))
        self._similar[(event.type, event.reason)] = seen
        if len(seen) > SIMILAR_MAX:
            return COMBINED + event.message
        return event.message

    def _event(self, kind: str, reason: str, message: str, stamp: str) -> dict[str, Any]:
        # kubelet's node events name the Node by name and use the name as its uid: that is what
        # `kubectl describe node` searches for (kubectl, describe.go, NodeDescriber).
        # Named by the moment, as kubelet's are; never twice the same name.
        nanos = max(int(self._wall_clock().timestamp() * 1e9), self._named + 1)
        self._named = nanos
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{self._node}.{nanos:x}", "namespace": self._namespace},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Node",
                "name": self._node,
                "uid": self._node,
            },
            "type": kind,
            "reason": reason,
            "message": message,
            "count": 1,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "source": {"component": COMPONENT, "host": self._node},
            "reportingComponent": COMPONENT,
            "reportingInstance": self._node,
        }


def _stamp(now: datetime.datetime) -> str:
    return now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventRecorder:
    """Sends what an EventBook decides, best-effort: a write that fails is tried again at the
    next flush (ATTEMPTS in all), and an error is logged once while it lasts."""

    def __init__(self, book: EventBook, sink: EventSink) -> None:
        self._book = book
        self._sink = sink
        self._pending: deque[tuple[EventWrite, int]] = deque(maxlen=PENDING)
        self._failing: str | None = None
        self.sent = 0
        self.failed = 0
        """Writes dropped after ATTEMPTS failures."""

    def to_json(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "rate_limited": self._book.dropped,
            "failed": self.failed,
            "error": self._failing,
        }

    async def flush(self, events: Iterable[NodeEvent]) -> None:
        for event in events:
            write = self._book.record(event)
            if write is not None:
                self._pending.append((write, 0))
        while self._pending:
            write, tries = self._pending[0]
            try:
                await self._send(write)
            except AgentError as exc:
                if str(exc) != self._failing:
                    log.warning("node event not recorded: %s", exc, extra={"event": "event_error"})
                self._failing = str(exc)
                self._pending.popleft()
                if tries + 1 < ATTEMPTS:
                    self._pending.appendleft((write, tries + 1))
                else:
                    self.failed += 1
                return  # the API server is failing: the next flush tries again
            self._pending.popleft()
            self._failing = None
            self.sent += 1

    async def _send(self, write: EventWrite) -> None:
        if write.patch is not None and await self._sink.patch_event(write.name, write.patch):
            return
        await self._sink.create_event(write.event)
