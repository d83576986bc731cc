"""How far the pulls in flight have got: the runtime's active downloads (containerd's ingests,
what `ctr pull` draws its bars from) added up per image, through the blobs each image is made
of. Pure: the caller lists the ingests (agent.adapters.runtime.containerd) and reads the result."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

from agent.core.errors import AgentError

_DIGEST_PREFIXES = ("sha256:", "sha512:")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ingest:
    """One download in progress, as the runtime reports it."""

    ref: str
    offset: int
    total: int = 0


@dataclass(frozen=True)
class PullView:
    """One image being pulled, at the last look."""

    image: str
    done: int
    """Bytes of its blobs downloaded so far (blobs it shares with content already present are
    never downloaded, so `done` may stay below `total`)."""
    total: int
    """Bytes of its config and layers; 0 when they are not known."""
    seconds: float

    @property
    def rate(self) -> float:
        """Bytes per second since the pull began."""
        return self.done / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        """`12.0 MB of 40.0 MB (30%), 2.1 MB/s, 6s`; without the total when it is unknown."""
        amount = f"{format_bytes(self.done)} of {format_bytes(self.total)}"
        if not self.total:
            amount = format_bytes(self.done)
        percent = f" ({100 * self.done // self.total}%)" if self.total else ""
        return f"{amount}{percent}, {format_bytes(int(self.rate))}/s, {self.seconds:.0f}s"


@dataclass
class _Pull:
    blobs: Mapping[str, int]
    started: float
    offsets: dict[str, int] = field(default_factory=dict)
    """Bytes of each blob seen downloading; a blob seen and now gone was committed whole."""
    finished: set[str] = field(default_factory=set)
    logged: float = 0.0


def ingest_digest(ref: str) -> str | None:
    """The blob an ingest downloads: containerd names a pull's ingests after the blob
    (`layer-sha256:<hex>`, `manifest-…`, `config-…`; containerd core/remotes/handlers.go)."""
    for prefix in _DIGEST_PREFIXES:
        at = ref.find(prefix)
        if at >= 0:
            return ref[at:]
    return None


class Progress:
    """The pulls this agent has in flight, and the bytes each has downloaded so far."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._pulls: dict[str, _Pull] = {}

    @property
    def active(self) -> bool:
        return bool(self._pulls)

    def begin(self, image: str, blobs: Mapping[str, int]) -> None:
        """`image` starts pulling; `blobs` (digest → bytes) is what it downloads, if known."""
        self._pulls[image] = _Pull(dict(blobs), self._clock())

    def end(self, image: str) -> None:
        self._pulls.pop(image, None)

    def observe(self, ingests: Iterable[Ingest]) -> None:
        """Take in the runtime's ingests now in progress."""
        offsets = {}
        for ingest in ingests:
            digest = ingest_digest(ingest.ref)
            if digest is not None:
                offsets[digest] = ingest.offset
        for pull in self._pulls.values():
            for digest in pull.blobs:
                if digest in offsets:
                    pull.offsets[digest] = offsets[digest]
                elif digest in pull.offsets:
                    pull.finished.add(digest)

    def views(self) -> list[PullView]:
        now = self._clock()
        return [self._view(image, pull, now) for image, pull in self._pulls.items()]

    def view(self, image: str) -> PullView | None:
        pull = self._pulls.get(image)
        return None if pull is None else self._view(image, pull, self._clock())

    def due(self, every: float) -> list[PullView]:
        """The pulls running `every` seconds or more since they began or were last returned
        here: what a periodic log line reports, so short pulls are never logged."""
        now = self._clock()
        due = []
        for image, pull in self._pulls.items():
            if now - max(pull.started, pull.logged) >= every:
                pull.logged = now
                due.append(self._view(image, pull, now))
        return due

    @staticmethod
    def _view(image: str, pull: _Pull, now: float) -> PullView:
        done = sum(
            size if digest in pull.finished else pull.offsets.get(digest, 0)
            for digest, size in pull.blobs.items()
        )
        return PullView(image, done, sum(pull.blobs.values()), now - pull.started)

    def bytes_in_flight(self) -> int:
        """Bytes downloaded so far by every pull still in progress."""
        return sum(view.done for view in self.views())


async def follow(
    progress: Progress,
    ingests: Callable[[], Awaitable[list[Ingest]]],
    interval: float,
    on_tick: Callable[[], None],
) -> None:
    """Until cancelled: every `interval` seconds while pulls are in flight, take in the
    runtime's ingests, then call `on_tick` (once more when the last pull ends). A runtime
    that cannot list them (not containerd) leaves the byte counts at zero; pulls go on."""
    failed = False
    was_active = False
    while True:
        await asyncio.sleep(interval)
        if progress.active:
            try:
                progress.observe(await ingests())
            except AgentError as exc:
                if not failed:
                    log.info("pull progress unavailable: %s", exc)
                failed = True
        elif not was_active:
            continue
        # One more tick after the last pull ends, so what shows the bytes can show none.
        was_active = progress.active
        on_tick()


def format_bytes(size: int) -> str:
    """Bytes in decimal units, as crictl and ctr print them: `512 B`, `3.4 MB`."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")
