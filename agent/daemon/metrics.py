"""Every Prometheus metric of the agent, declared once; the names are a contract (README)."""

from __future__ import annotations

import dataclasses
import platform as _host
import time
from collections.abc import Iterator, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

from agent import __version__
from agent.core.doctor.pullpath import Finding
from agent.core.ports import Deferral, Outcome, Status
from agent.core.reports.status import NodeReport, PassSummary, State

# 0.1 s to 30 min: a cached small image up to a multi-GB pull on a slow link.
PULL_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800)
REGISTRY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
RECONCILE_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600)


class ImageGauges:
    """prepull_image_ready and prepull_image_pinned, one series per configured image, rendered
    at scrape time from the last pass's states. At thousands of images a labelled Gauge keeps
    an object and two locks per series (1.3 MB at 1000 images, measured with tracemalloc); the
    states are a dict the pass builds anyway."""

    def __init__(self) -> None:
        self.states: Mapping[str, tuple[bool, bool]] = {}
        """Image → (ready, pinned), replaced whole after every pass (scrapes see one pass)."""

    def collect(self) -> Iterator[Metric]:
        states = self.states
        ready = GaugeMetricFamily(
            "prepull_image_ready",
            "1 if the configured image is present and correct, else 0 (entries meant for this "
            "node's platform; entries for other platforms have no series).",
            labels=["image"],
        )
        pinned = GaugeMetricFamily(
            "prepull_image_pinned",
            "1 if the runtime reports the image pinned against kubelet image GC, else 0.",
            labels=["image"],
        )
        for image, (is_ready, is_pinned) in states.items():
            ready.add_metric([image], is_ready)
            pinned.add_metric([image], is_pinned)
        yield ready
        yield pinned


@dataclasses.dataclass(frozen=True)
class Spec:
    """One metric as declared: its kind, name, help and labels; `series`: label values whose
    series exist from the start (at 0), so a rate() over them never starts from nothing."""

    kind: type[Counter] | type[Gauge] | type[Histogram]
    name: str
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] | None = None
    series: tuple[str, ...] = ()

    def build(self, registry: CollectorRegistry) -> Counter | Gauge | Histogram:
        metric: Counter | Gauge | Histogram
        if self.kind is Histogram:
            buckets = self.buckets or Histogram.DEFAULT_BUCKETS
            metric = Histogram(
                self.name, self.help, self.labels, registry=registry, buckets=buckets
            )
        else:
            metric = self.kind(self.name, self.help, self.labels, registry=registry)
        for value in self.series:
            metric.labels(value)
        return metric


METRICS: dict[str, Spec] = {
    "cache_hits": Spec(
        Counter,
        "prepull_cache_hits",
        "Desired images already present with the right digest when checked.",
    ),
    "cache_misses": Spec(
        Counter,
        "prepull_cache_misses",
        "Desired images that had to be pulled or re-tagged when checked.",
    ),
    "pull_duration": Spec(
        Histogram,
        "prepull_pull_duration_seconds",
        "Time to pull one image, successful or not.",
        buckets=PULL_BUCKETS,
    ),
    "pulls": Spec(
        Counter,
        "prepull_pulls",
        "Image pulls by result.",
        labels=("result",),
        series=("success", "failure"),
    ),
    "pulled_bytes": Spec(
        Counter,
        "prepull_pulled_bytes",
        "Bytes of images pulled (image size as the runtime reports it).",
    ),
    "pull_bytes_in_flight": Spec(
        Gauge,
        "prepull_pull_bytes_in_flight",
        "Bytes downloaded so far by the pulls in progress (containerd's active downloads).",
    ),
    "images_over_disk_budget": Spec(
        Gauge,
        "prepull_images_over_disk_budget",
        "Desired images not pulled because they would take the image filesystem past "
        "maxDiskUsagePercent (tried again every pass).",
    ),
    "images_waiting_for_rollout": Spec(
        Gauge,
        "prepull_images_waiting_for_rollout",
        "Desired images whose new content waits for this node's moment in the rollout "
        "(rollout.spread); /status says until when.",
    ),
    "image_fs_used_percent": Spec(
        Gauge,
        "prepull_image_fs_used_percent",
        "How full the image filesystem is (statvfs, as kubelet's image GC measures it).",
    ),
    "images_desired": Spec(
        Gauge, "prepull_images_desired", "Images in the list meant for this node's platform."
    ),
    "images_ready": Spec(
        Gauge, "prepull_images_ready", "Desired images present and correct on this node."
    ),
    "node_ready": Spec(
        Gauge,
        "prepull_node_ready",
        "1 if /readyz says ready: the node serves a complete list (every image meant for it "
        "present, except those failed permanently unless strict) — the list in force, or "
        "while it converges to that one, the one it served before.",
    ),
    "images_failed_permanently": Spec(
        Gauge,
        "prepull_images_failed_permanently",
        "Desired images that failed in a way no retry fixes (not found, denied, refused for "
        "this platform): an operator must act.",
    ),
    "refusals": Spec(
        Counter,
        "prepull_refusals",
        "Images refused before any pull: the content is not for this node's platform.",
    ),
    "start_time": Spec(
        Gauge,
        "prepull_start_time_seconds",
        "Unix time the agent started (alerts tell 'never converged' from 'stale' with it).",
    ),
    "tag_drift": Spec(
        Counter,
        "prepull_tag_drift",
        "A tag on the node named other content than the registry or the pin says.",
    ),
    "evictions": Spec(
        Counter,
        "prepull_evictions",
        "Preloaded images that disappeared from the node (image GC, crictl rmi) and came back.",
    ),
    "config_reload_errors": Spec(
        Counter,
        "prepull_config_reload_errors",
        "Config updates rejected; the last good list keeps running.",
    ),
    "config_last_reload_successful": Spec(
        Gauge,
        "prepull_config_last_reload_successful",
        "1 if the preload list file as it is now was accepted, 0 if it is rejected (the "
        "last good list keeps running).",
    ),
    "registry_request_duration": Spec(
        Histogram,
        "prepull_registry_request_duration_seconds",
        "Registry API requests by outcome.",
        labels=("registry", "method", "status"),
        buckets=REGISTRY_BUCKETS,
    ),
    "registry_ratelimit_remaining": Spec(
        Gauge,
        "prepull_registry_ratelimit_remaining",
        "Pulls left in the registry's rate-limit window, from its RateLimit-Remaining header.",
        labels=("registry",),
    ),
    "reconcile_duration": Spec(
        Histogram,
        "prepull_reconcile_duration_seconds",
        "Time of one pass over the preload list.",
        buckets=RECONCILE_BUCKETS,
    ),
    "last_success": Spec(
        Gauge,
        "prepull_last_reconcile_success_timestamp_seconds",
        "Unix time of the last pass that left every desired image ready.",
    ),
    "container_starts": Spec(
        Counter,
        "prepull_container_starts",
        "New containers whose image was on the node before their pod started (hit) or "
        "arrived after (miss: pulled for that pod).",
        labels=("cache",),
        series=("hit", "miss"),
    ),
    "converging": Spec(
        Gauge,
        "prepull_converging",
        "1 while the node, serving a complete list, works toward a newer one (it stays "
        "ready: prepull_node_ready counts it).",
    ),
    "converging_since": Spec(
        Gauge,
        "prepull_converging_since_timestamp_seconds",
        "Unix time the node, serving a complete list, was given the one it converges to; "
        "0 when not converging.",
    ),
    "converging_overdue": Spec(
        Gauge,
        "prepull_converging_overdue",
        "1 while the node has been converging for longer than --converge-deadline plus the "
        "list's rollout.spread: it is still ready, but something holds the new list back.",
    ),
    "list_info": Spec(
        Gauge,
        "prepull_list_info",
        "Always 1; `digest` names the preload list in force (core.reports.status.list_digest).",
        labels=("digest",),
    ),
    "served_list_info": Spec(
        Gauge,
        "prepull_served_list_info",
        "Always 1; `digest` names the list the last pass that left the node complete served: "
        "nodes of a fleet that differ from the list in force are mid-rollout.",
        labels=("digest",),
    ),
    "build_info": Spec(
        Gauge,
        "prepull_build_info",
        "Always 1; labels say which agent this is.",
        labels=("version", "python"),
    ),
    "runtime_info": Spec(
        Gauge,
        "prepull_runtime_info",
        "Always 1; labels name the container runtime the agent last spoke to.",
        labels=("runtime_name", "runtime_version"),
    ),
    "task_failures": Spec(
        Counter,
        "prepull_task_failures",
        "Unexpected failures of one of the daemon's loops; the loop is restarted after a "
        "backoff, the daemon keeps running (the log has the traceback).",
        labels=("task",),
    ),
    "pull_path": Spec(
        Gauge,
        "prepull_runtime_transfer_service",
        "1 when containerd pulls for CRI through its transfer service, 0 on its old path "
        "(before 2.1, or forced by a CRI setting: prepull-agent doctor names it).",
    ),
    "runtime_findings": Spec(
        Gauge,
        "prepull_runtime_finding",
        "One series per finding about how containerd pulls (prepull-agent doctor); "
        "change=1 when the finding recommends a change.",
        labels=("setting", "change"),
    ),
    "kubelet_findings": Spec(
        Gauge,
        "prepull_kubelet_finding",
        "One series per finding about what the kubelet makes of the list (its credential "
        "verification, image GC, pull settings: prepull-agent doctor --config); change=1 when "
        "the finding recommends a change.",
        labels=("setting", "change"),
    ),
    "unpinned": Spec(
        Counter,
        "prepull_images_unpinned",
        "Image records this agent had pinned and released because they left the list "
        "(kubelet's image GC may reclaim them now).",
    ),
}
"""Every metric but the per-image gauges (ImageGauges), by the Metrics attribute it is."""


class Metrics:
    """The metrics of METRICS as typed attributes, the per-image gauges, and the build."""

    cache_hits: Counter
    cache_misses: Counter
    pull_duration: Histogram
    pulls: Counter
    pulled_bytes: Counter
    pull_bytes_in_flight: Gauge
    images_over_disk_budget: Gauge
    images_waiting_for_rollout: Gauge
    image_fs_used_percent: Gauge
    images_desired: Gauge
    images_ready: Gauge
    node_ready: Gauge
    images_failed_permanently: Gauge
    refusals: Counter
    start_time: Gauge
    tag_drift: Counter
    evictions: Counter
    config_reload_errors: Counter
    config_last_reload_successful: Gauge
    registry_request_duration: Histogram
    registry_ratelimit_remaining: Gauge
    reconcile_duration: Histogram
    last_success: Gauge
    container_starts: Counter
    converging: Gauge
    converging_since: Gauge
    converging_overdue: Gauge
    list_info: Gauge
    served_list_info: Gauge
    build_info: Gauge
    runtime_info: Gauge
    task_failures: Counter
    pull_path: Gauge
    runtime_findings: Gauge
    kubelet_findings: Gauge
    unpinned: Counter
    images: ImageGauges

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        for attribute, spec in METRICS.items():
            setattr(self, attribute, spec.build(registry))
        self.images = ImageGauges()
        registry.register(self.images)
        self.build_info.labels(__version__, _host.python_version()).set(1)

    def registry_request(self, host: str, method: str, status: str, seconds: float) -> None:
        self.registry_request_duration.labels(host, method, status).observe(seconds)

    def registry_rate_limit(self, host: str, remaining: float) -> None:
        self.registry_ratelimit_remaining.labels(host).set(remaining)

    def pull_path_is(self, transfer_service: bool, findings: Sequence[Finding]) -> None:
        """The runtime's pull path and findings as last read (a restart may change them)."""
        self.pull_path.set(1 if transfer_service else 0)
        _findings(self.runtime_findings, findings)

    def kubelet_says(self, findings: Sequence[Finding]) -> None:
        """What the kubelet makes of the list, as last judged (its file or the list changed)."""
        _findings(self.kubelet_findings, findings)

    def runtime_is(self, name: str, version: str) -> None:
        """One series: the runtime now behind the socket (an upgrade replaces it)."""
        self.runtime_info.clear()
        self.runtime_info.labels(name, version).set(1)


def observe_outcome(metrics: Metrics, outcome: Outcome) -> None:
    """One image's work, counted as soon as it is done (hits are counted per pass: a steady
    pass over thousands of them makes one call, not one each)."""
    status = outcome.status
    if status is Status.HIT:
        return
    if outcome.pull_attempted or status is Status.BOUND:
        metrics.cache_misses.inc()
    if status is Status.REFUSED:
        metrics.refusals.inc()
    if outcome.pull_attempted:
        # Only pulls that happened: a refusal or a failed lookup pulled nothing.
        result = "success" if status is Status.PULLED else "failure"
        metrics.pulls.labels(result).inc()
        metrics.pull_duration.observe(outcome.seconds)
        if status is Status.PULLED:
            metrics.pulled_bytes.inc(outcome.size)
    if outcome.drift:
        metrics.tag_drift.inc()


def observe_pass(
    metrics: Metrics,
    outcomes: Sequence[Outcome],
    report: NodeReport,
    summary: PassSummary,
    seconds: float,
    now: float,
) -> None:
    """The pass is over: its hits, evictions and duration, the images' gauges, and — when the
    node is ready by /readyz's rule (agent.core.reports.status.NodeReport.ready, the one definition
    every signal uses) — the moment of the last successful pass."""
    metrics.cache_hits.inc(sum(o.status is Status.HIT for o in outcomes))
    metrics.evictions.inc(len(summary.evicted))
    observe_images(metrics, report)
    metrics.reconcile_duration.observe(seconds)
    if report.ready:
        metrics.last_success.set(now)
    if report.served_digest is not None:
        one_series(metrics.served_list_info, report.served_digest)


def one_series(info: Gauge, value: str) -> None:
    """An info gauge naming one thing: the series before it goes (a list changed)."""
    info.clear()
    info.labels(value).set(1)


def observe_images(metrics: Metrics, report: NodeReport) -> None:
    """The gauges of the listed images as the report has them now: one walk of the list."""
    states: dict[str, tuple[bool, bool]] = {}
    failed_permanently = over_budget = waiting_for_rollout = 0
    for image in report.desired:
        state = image.state
        states[image.image] = (state is State.PRESENT, image.pinned)
        if state is State.DEFERRED:
            over_budget += image.deferred is Deferral.DISK_BUDGET
            waiting_for_rollout += image.deferred is Deferral.ROLLOUT
        elif image.permanent and state is not State.PRESENT:
            failed_permanently += 1
    metrics.images_desired.set(len(states))
    metrics.images_ready.set(sum(ready for ready, _ in states.values()))
    metrics.images_failed_permanently.set(failed_permanently)
    metrics.images_over_disk_budget.set(over_budget)
    metrics.images_waiting_for_rollout.set(waiting_for_rollout)
    metrics.node_ready.set(report.ready)
    metrics.images.states = states


def follow_readiness(metrics: Metrics, report: NodeReport) -> None:
    """Converging's gauges, read at each scrape: overdue turns on by the clock, not a pass."""
    metrics.converging.set_function(lambda: report.converging)
    metrics.converging_since.set_function(
        lambda: report.converging_since if report.converging and report.converging_since else 0
    )
    metrics.converging_overdue.set_function(lambda: report.overdue(time.time()))


def _findings(gauge: Gauge, findings: Sequence[Finding]) -> None:
    """One series per finding's setting; change=1 when it recommends one."""
    gauge.clear()
    for finding in findings:
        change = "1" if finding.recommended is not None else "0"
        gauge.labels(finding.setting, change).set(1)
