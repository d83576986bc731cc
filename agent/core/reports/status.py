"""What the node holds of its list, across passes: per-image state, readiness, evictions. Pure."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import Any

from agent.core.images.platform import Platform
from agent.core.lists.config import ImageEntry
from agent.core.ports import Deferral, Outcome, Status
from agent.core.reports.progress import Progress


class State(StrEnum):
    """Where one listed image stands on this node, across passes."""

    PENDING = "pending"
    """Not checked yet."""
    PULLING = "pulling"
    PRESENT = "present"
    FAILED = "failed"
    REFUSED = "refused"
    """Not for this node's platform; nothing was pulled."""
    DEFERRED = "deferred"
    """Not pulled yet: over the disk budget (tried again every pass), or waiting for the
    node's moment in a rollout."""
    SKIPPED = "skipped"
    """Listed for other platforms."""


_STATE_OF = {
    Status.HIT: State.PRESENT,
    Status.PULLED: State.PRESENT,
    Status.BOUND: State.PRESENT,
    Status.FAILED: State.FAILED,
    Status.REFUSED: State.REFUSED,
    Status.DEFERRED: State.DEFERRED,
    Status.SKIPPED: State.SKIPPED,
}


@dataclasses.dataclass
class ImageReport:
    image: str
    """As written in the config: the name dashboards and operators know it by."""
    state: State = State.PENDING
    digest: str | None = None
    bytes: int = 0
    last_pull_seconds: float | None = None
    last_error: str | None = None
    pinned: bool = False
    """The runtime reports the image pinned: kubelet's image GC will not evict it."""
    permanent: bool = False
    """Failed in a way no retry fixes (not found, denied, wrong platform): readiness reports
    it but does not wait for it (unless strict)."""
    deferred: Deferral | None = None
    """Why it waits (DEFERRED only): the disk budget, or its moment in a rollout."""
    held: bool = dataclasses.field(default=False, repr=False)
    """The last pass left it present and correct: if it is absent later, it was evicted."""


@dataclasses.dataclass(frozen=True)
class PassSummary:
    evicted: tuple[str, ...]
    """Images present after the last pass and gone before this one."""
    converged: bool


class NodeReport:
    def __init__(
        self, node: Platform | None, *, strict: bool = False, progress: Progress | None = None
    ) -> None:
        self.node = node
        """None until the runtime has said which platform it pulls for."""
        self.progress = progress
        """The pulls in flight, for the bytes each has downloaded so far."""
        self.strict = strict
        """Readiness waits for permanently failed images too."""
        self.runtime: dict[str, object] = {}
        self.kubelet: dict[str, object] | None = None
        """What the kubelet makes of the list (its config file and the findings), when asked."""
        self.disk: dict[str, Any] | None = None
        """The disk budget: budget, image filesystem use, why it cannot be checked."""
        self.released_pins: dict[str, Any] | None = None
        """The last pins this agent took back (images that left the list) and when."""
        self.gate: dict[str, Any] | None = None
        """The readiness gate's state (agent.core.reports.gate.NodeGate), when it is on."""
        self.images: dict[str, ImageReport] = {}
        self._recorded: dict[str, Outcome] = {}
        self._evicted: list[str] = []
        """Images found evicted in the pass under way."""
        self._this_pass: set[str] = set()
        """Images settled in the pass under way."""
        """The outcome each image's report was last set from. A steady pass hands back the
        same outcome objects (core.engine.reconcile reuses what it settled): they change nothing."""
        self.last_reconcile: float | None = None
        """Unix time the last pass finished."""
        self.last_error: str | None = None
        """Why the last pass could not run at all (runtime unreachable), if it could not."""
        self.passes = 0
        self._entries: list[ImageEntry] = []
        self.config: dict[str, Any] = {}
        """The list in force (file, images, loaded_at, digest) and, if the file now on disk was
        rejected, why and since when."""
        self.list_digest: str | None = None
        """What the list in force asks for (list_digest)."""
        self.served_digest: str | None = None
        """The list the last pass that left the node complete served: during a rollout of a
        new list, nodes not there yet still serve the old one."""
        self._served_images: frozenset[str] = frozenset()
        """The images (as written) of the served list meant for this node."""
        self.converging_since: float | None = None
        """Unix time a node serving a complete list was given another, until it completes it."""
        self.converge_deadline: float | None = None
        """Seconds a converging node may take before it is reported overdue (it stays ready)."""

    def configure(self, entries: Iterable[ImageEntry]) -> None:
        """Adopt a (new) list: keep what is known of images still listed, forget the rest."""
        self._entries = list(entries)
        self.list_digest = list_digest(self._entries)
        self._recorded.clear()
        images = {}
        for entry in self._entries:
            known = self.images.get(entry.written)
            if self.node is not None and not entry.applies_to(self.node):
                images[entry.written] = ImageReport(entry.written, state=State.SKIPPED)
            elif known is None or known.state == State.SKIPPED:
                images[entry.written] = ImageReport(entry.written)
            else:
                images[entry.written] = known
        self.images = images

    def config_loaded(self, source: str, images: int, when: float) -> None:
        if self.served_digest is None or self.list_digest == self.served_digest:
            self.converging_since = None
        elif self.converging_since is None:
            self.converging_since = when
        self.config = {
            "file": source,
            "images": images,
            "loaded_at": when,
            "digest": self.list_digest,
            "rejected": None,
        }

    def config_rejected(self, error: str, when: float) -> None:
        previous = self.config.get("rejected")
        since = previous["since"] if previous and previous["error"] == error else when
        self.config["rejected"] = {"error": error, "since": since}

    def located(self, node: Platform) -> None:
        """The node's platform is known now: entries for other platforms become skipped."""
        if node != self.node:
            self.node = node
            self.configure(self._entries)

    def pulling(self, entry: ImageEntry) -> None:
        report = self.images.get(entry.written)
        if report is not None:
            report.state = State.PULLING
            self._recorded.pop(entry.written, None)

    def settle(self, outcome: Outcome) -> bool:
        """One image's outcome, as soon as it is known (the pass goes on): /status, readiness
        and the gate see it at once. False if this very outcome was recorded already."""
        image = outcome.entry.written
        if self._recorded.get(image) is outcome:
            return False
        self._recorded[image] = outcome
        report = self.images.setdefault(image, ImageReport(image))
        # Evicted: this agent saw it present and correct, and now it is gone. (A moved tag
        # is drift; an image that never arrived, or is new to the list, was never held.)
        # Once per pass: the same image settled again (its pin read back) is not evicted.
        if outcome.was_absent and report.held and image not in self._this_pass:
            self._evicted.append(report.image)
        self._this_pass.add(image)
        report.state = _STATE_OF[outcome.status]
        report.held = report.state == State.PRESENT
        report.permanent = outcome.permanent
        report.deferred = outcome.deferred
        report.pinned = outcome.pinned
        if outcome.converged:
            report.digest = outcome.digest or report.digest
            report.bytes = outcome.size or report.bytes
            report.last_error = None
        else:
            report.last_error = outcome.detail
        if outcome.pull_attempted:
            report.last_pull_seconds = outcome.seconds
        return True

    def record(self, outcomes: Sequence[Outcome], finished_at: float) -> PassSummary:
        """The pass is over: every outcome settled (those not settled as they came, and pins
        as read back at the end), the pass counted."""
        for outcome in outcomes:
            self.settle(outcome)
        evicted, self._evicted = tuple(self._evicted), []
        self._this_pass.clear()
        self.passes += 1
        self.last_reconcile = finished_at
        self.last_error = None
        if self.complete:
            self.served_digest = self.list_digest
            self._served_images = frozenset(r.image for r in self.desired)
            self.converging_since = None
        return PassSummary(evicted, all(o.converged for o in outcomes))

    @property
    def desired(self) -> list[ImageReport]:
        return [r for r in self.images.values() if r.state != State.SKIPPED]

    @property
    def missing(self) -> list[ImageReport]:
        return [r for r in self.desired if r.state != State.PRESENT]

    @property
    def waiting_for(self) -> list[ImageReport]:
        """What readiness waits for: every missing image that can still arrive (with `strict`,
        the permanently failed ones too)."""
        return [r for r in self.missing if self.strict or not r.permanent]

    @property
    def complete(self) -> bool:
        """A pass has completed and every image of the list in force meant for this node is
        present, except those that failed permanently (reported, not waited for) unless
        readiness is strict."""
        return self.passes > 0 and not self.waiting_for

    @property
    def converging(self) -> bool:
        """Serving a complete list while working toward a newer one: all it waits for is new
        to the list (an image of the served list gone missing is not converging)."""
        return (
            self.converging_since is not None
            and not self.complete
            and all(r.image not in self._served_images for r in self.waiting_for)
        )

    @property
    def ready(self) -> bool:
        """The one definition of ready (/readyz, the condition, metrics, `once`'s exit, fleet):
        the node serves a complete list — the one in force, or, while it converges to that
        one, the one it served before. Only a node that never served a complete list (since
        the agent started) is not ready, or one that lost an image of the list it serves."""
        return self.complete or self.converging

    def overdue(self, now: float) -> bool:
        """Converging for longer than the deadline: reported (alert, fleet), still ready."""
        since, deadline = self.converging_since, self.converge_deadline
        return (
            self.converging and since is not None and deadline is not None
            and now - since > deadline
        )  # fmt: skip

    def converging_json(self, now: float) -> dict[str, Any] | None:
        """/status's `converging`: from which list to which, since when, how far, overdue."""
        if not self.converging:
            return None
        desired = self.desired
        return {
            "from": self.served_digest,
            "to": self.list_digest,
            "since": self.converging_since,
            "present": len(desired) - len(self.missing),
            "desired": len(desired),
            "waiting": [r.image for r in self.waiting_for[:20]],
            "deadline_seconds": self.converge_deadline,
            "overdue": self.overdue(now),
        }

    def to_json(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        return {
            "node_platform": str(self.node) if self.node else None,
            "runtime": dict(self.runtime),
            "kubelet": self.kubelet,
            "disk": self.disk,
            "gate": self.gate,
            "released_pins": self.released_pins,
            "ready": self.ready,
            "converging": self.converging_json(now),
            "strict_readiness": self.strict,
            "config": dict(self.config),
            "served_list": self.served_digest,
            "last_reconcile": self.last_reconcile,
            "last_error": self.last_error,
            "images": [self._image_json(r) for r in self.images.values()],
        }

    def _image_json(self, report: ImageReport) -> dict[str, Any]:
        document = dataclasses.asdict(report)
        view = self.progress.view(report.image) if self.progress is not None else None
        document["pull"] = None
        if view is not None and report.state == State.PULLING:
            document["pull"] = {
                "bytes_done": view.done,
                "bytes_total": view.total,
                "seconds": round(view.seconds, 3),
                "bytes_per_second": round(view.rate),
            }
        return document


def list_digest(entries: Iterable[ImageEntry]) -> str:
    """What a list asks nodes to hold, as one digest: each entry as written, with the platforms
    it is for, in name order — the same for a list reordered or recommented, another when an
    entry, a pin or a platform changes. Nodes serving different digests are mid-rollout."""
    lines = sorted(f"{e.written} {','.join(map(str, e.platforms))}".rstrip() for e in entries)
    return "sha256:" + hashlib.sha256("\n".join(lines).encode()).hexdigest()
