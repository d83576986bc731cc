from __future__ import annotations

import dataclasses

from prometheus_client import CollectorRegistry

from agent.core.engine.plan import Action
from agent.core.images.platform import Platform
from agent.core.lists.config import parse
from agent.core.ports import Outcome, Status
from agent.core.reports.status import NodeReport, list_digest
from agent.daemon.metrics import Metrics, observe_outcome, observe_pass

D = "sha256:" + "d" * 64
CONFIG = parse(
    "images:\n  - r.io/a:1\n  - r.io/b:1\n  - image: r.io/c:1\n    platforms: [linux/arm64]\n"
)
A, B, C = CONFIG.images


def outcomes(a: str, b: str) -> list[Outcome]:
    def one(entry, status: str) -> Outcome:
        action = {"hit": Action.HIT, "pulled": Action.PULL, "failed": Action.PULL}[status]
        return Outcome(
            entry,
            Status(status),
            "x" if status == "failed" else "",
            D,
            "id",
            10,
            1.5,
            action=action,
            pull_attempted=status in ("pulled", "failed"),
        )

    return [one(A, a), one(B, b), Outcome(C, Status.SKIPPED, "for linux/arm64", action=Action.SKIP)]


def test_not_ready_until_a_pass_leaves_every_desired_image_present() -> None:
    report = NodeReport(Platform("linux", "amd64"))
    report.configure(CONFIG.images)
    assert not report.ready and [r.image for r in report.missing] == ["r.io/a:1", "r.io/b:1"]

    report.record(outcomes("pulled", "failed"), 100.0)
    assert not report.ready and [r.image for r in report.missing] == ["r.io/b:1"]
    assert report.images["r.io/b:1"].last_error == "x"

    report.record(outcomes("hit", "pulled"), 200.0)
    assert report.ready and report.last_reconcile == 200.0
    assert report.to_json()["images"][2]["state"] == "skipped"


def test_an_image_that_was_present_and_is_pulled_again_as_absent_was_evicted() -> None:
    report = NodeReport(Platform("linux", "amd64"))
    report.configure(CONFIG.images)
    first = report.record(outcomes("pulled", "pulled"), 1.0)
    assert first.evicted == (), "the first pull of an image is no eviction"
    again = report.record(outcomes("pulled", "hit"), 2.0)
    assert again.evicted == ("r.io/a:1",)


def test_reconfiguring_keeps_known_images_and_forgets_removed_ones() -> None:
    report = NodeReport(Platform("linux", "amd64"))
    report.configure(CONFIG.images)
    report.record(outcomes("hit", "hit"), 1.0)
    report.configure(parse("images:\n  - r.io/a:1\n  - r.io/new:1\n").images)
    assert {k: v.state for k, v in report.images.items()} == {
        "r.io/a:1": "present",
        "r.io/new:1": "pending",
    }


def test_a_pass_becomes_metrics() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    report = NodeReport(Platform("linux", "amd64"))
    report.configure(CONFIG.images)
    passed = outcomes("hit", "failed")
    for outcome in passed:  # as each image is done
        report.settle(outcome)
        observe_outcome(metrics, outcome)
    observe_pass(metrics, passed, report, report.record(passed, 5.0), 0.5, 5.0)

    value = registry.get_sample_value
    assert value("prepull_cache_hits_total") == 1 and value("prepull_cache_misses_total") == 1
    assert value("prepull_pulls_total", {"result": "failure"}) == 1
    assert value("prepull_pulls_total", {"result": "success"}) == 0
    assert value("prepull_images_desired") == 2 and value("prepull_images_ready") == 1
    assert value("prepull_image_ready", {"image": "r.io/a:1"}) == 1
    assert value("prepull_image_ready", {"image": "r.io/b:1"}) == 0
    assert value("prepull_image_ready", {"image": "r.io/c:1"}) is None, "skipped: not this node's"
    assert value("prepull_last_reconcile_success_timestamp_seconds") == 0, "the pass failed"


def test_the_last_success_is_the_last_pass_that_left_the_node_ready() -> None:
    """One definition of ready: a permanent failure is reported, not waited for, so the node is
    ready and the last-success moment moves (an alert on it must not fire on a ready node)."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    report = NodeReport(Platform("linux", "amd64"))
    report.configure(CONFIG.images)
    hit, failed, _ = outcomes("hit", "failed")
    broken = dataclasses.replace(failed, permanent=True)
    observe_pass(metrics, [hit, broken], report, report.record([hit, broken], 7.0), 0.5, 7.0)
    assert report.ready
    assert registry.get_sample_value("prepull_node_ready") == 1
    assert registry.get_sample_value("prepull_last_reconcile_success_timestamp_seconds") == 7.0


def test_an_image_is_reported_as_soon_as_it_is_done() -> None:
    report = NodeReport(Platform("linux", "amd64"))
    report.configure(CONFIG.images)
    first, second, _ = outcomes("pulled", "failed")
    report.settle(second)  # known at once, while the other still pulls
    assert report.images["r.io/b:1"].state == "failed"
    assert report.images["r.io/a:1"].state == "pending"
    report.settle(first)
    assert report.images["r.io/a:1"].state == "present"
    assert report.record([first, second], 1.0).evicted == ()
    again = outcomes("pulled", "failed")[0]  # absent again next pass: evicted, once
    report.settle(again)
    pinned = dataclasses.replace(again, pinned=True)  # its pin read back at the pass's end
    assert report.record([pinned, second], 2.0).evicted == ("r.io/a:1",)
    assert report.images["r.io/a:1"].pinned


def test_only_an_image_seen_present_and_later_absent_is_an_eviction() -> None:
    report = NodeReport(Platform("linux", "amd64"))
    report.configure(CONFIG.images)
    report.record(outcomes("failed", "pulled"), 1.0)
    for when in (2.0, 3.0):
        # What the daemon does before each pull: mark it pulling.
        report.pulling(A)
        summary = report.record(outcomes("failed", "hit"), when)
        assert summary.evicted == (), "an image that keeps failing was never held"
    # A newly listed image, pulled for the first time, was never held either.
    report.configure(parse("images:\n  - r.io/a:1\n  - r.io/b:1\n  - r.io/new:1\n").images)
    (new,) = [e for e in parse("images:\n  - r.io/new:1\n").images]
    report.pulling(new)
    fresh = Outcome(
        new, Status.PULLED, "", D, "id", 10, 1.0, action=Action.PULL, pull_attempted=True
    )
    assert report.record([*outcomes("failed", "hit")[:2], fresh], 4.0).evicted == ()
    # B was held since the pass at 1.0: gone now, pulled again as absent, that is an eviction.
    report.pulling(B)
    assert report.record(outcomes("failed", "pulled"), 5.0).evicted == ("r.io/b:1",)


def test_a_refusal_is_its_own_outcome_not_a_pull() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    report = NodeReport(Platform("linux", "amd64"))
    report.configure(CONFIG.images)
    refused = Outcome(
        A, Status.REFUSED, "no linux/amd64 manifest", action=Action.PULL, permanent=True
    )
    passed = [refused, *outcomes("hit", "hit")[1:]]
    for outcome in passed:
        observe_outcome(metrics, outcome)
    observe_pass(metrics, passed, report, report.record(passed, 5.0), 0.5, 5.0)

    value = registry.get_sample_value
    assert value("prepull_refusals_total") == 1
    assert value("prepull_cache_misses_total") == 0 and value("prepull_cache_hits_total") == 1
    assert value("prepull_pulls_total", {"result": "failure"}) == 0
    assert value("prepull_pull_duration_seconds_count") == 0
    assert value("prepull_images_failed_permanently") == 1
    assert value("prepull_node_ready") == 1, "a permanent failure is reported, not waited for"


def test_readiness_waits_for_what_can_converge_and_strict_waits_for_everything() -> None:
    transient = Outcome(A, Status.FAILED, "registry 503", action=Action.PULL, pull_attempted=True)
    permanent = Outcome(A, Status.FAILED, "HTTP 404", action=Action.PULL, permanent=True)
    for failure, strict, ready in (
        (transient, False, False),
        (permanent, False, True),
        (permanent, True, False),
    ):
        report = NodeReport(Platform("linux", "amd64"), strict=strict)
        report.configure(CONFIG.images)
        report.record([failure, *outcomes("hit", "hit")[1:]], 1.0)
        assert report.ready is ready, (failure.detail, strict)
        assert [r.image for r in report.missing] == ["r.io/a:1"], "always reported"


def test_a_steady_pass_hands_back_the_same_outcomes_and_they_still_count() -> None:
    """record() passes over an outcome it recorded last pass (the reconciler reuses settled
    ones); an image marked pulling since, or dropped and listed again, is recorded anew."""
    report = NodeReport(Platform("linux", "amd64"))
    report.configure(CONFIG.images)
    steady = outcomes("hit", "hit")
    report.record(steady, 1.0)
    report.pulling(A)  # a pass that started a pull and was cut short (runtime unavailable)
    report.record(steady, 2.0)
    assert report.images["r.io/a:1"].state == "present"
    report.configure([B, C])
    report.configure(CONFIG.images)  # A dropped and listed again: a fresh, pending report
    assert report.images["r.io/a:1"].state == "pending"
    report.record(steady, 3.0)
    assert report.images["r.io/a:1"].state == "present" and report.ready


def test_a_lists_digest_names_what_it_asks_for_not_how_it_is_written() -> None:
    def digest(text: str) -> str:
        return list_digest(parse(text).images)

    base = digest("images:\n  - r.io/a:1\n  - r.io/b:2\n")
    assert base.startswith("sha256:") and len(base) == 71
    assert digest("# comment\nimages:\n  - r.io/b:2   # b\n  - r.io/a:1\npin: false\n") == base
    assert digest("images:\n  - r.io/a:1\n  - r.io/b:3\n") != base
    pinned = "images:\n  - r.io/a:1@sha256:" + "1" * 64 + "\n  - r.io/b:2\n"
    assert digest(pinned) != base
    only_arm = "images:\n  - image: r.io/a:1\n    platforms: [linux/arm64]\n  - r.io/b:2\n"
    assert digest(only_arm) != base


def _served(report: NodeReport) -> None:
    """The node has served CONFIG complete."""
    report.configure(CONFIG.images)
    report.config_loaded("list.yaml", 3, 10.0)
    report.record(outcomes("hit", "hit"), 11.0)
    assert report.complete and not report.converging


def test_a_list_change_on_a_node_that_served_a_complete_list_is_converging_not_an_outage() -> None:
    report = NodeReport(Platform("linux", "amd64"))
    report.converge_deadline = 60.0
    _served(report)
    served = report.served_digest
    grown = parse("images:\n  - r.io/a:1\n  - r.io/b:1\n  - r.io/new:1\n")
    report.configure(grown.images)
    report.config_loaded("list.yaml", 3, 100.0)

    assert report.ready and report.converging and not report.complete
    seen = report.to_json(now=130.0)["converging"]
    assert seen == {
        "from": served, "to": report.list_digest, "since": 100.0, "present": 2, "desired": 3,
        "waiting": ["r.io/new:1"], "deadline_seconds": 60.0, "overdue": False,
    }  # fmt: skip
    assert report.overdue(161.0) and report.to_json(now=161.0)["ready"], "overdue, still ready"

    a, b, _ = outcomes("hit", "hit")
    new = dataclasses.replace(a, entry=grown.images[2], status=Status.PULLED)
    report.record([a, b, new], 170.0)
    assert report.complete and not report.converging and report.served_digest != served
    assert report.converging_since is None and report.to_json()["converging"] is None


def test_an_image_of_the_served_list_gone_missing_is_not_converging() -> None:
    report = NodeReport(Platform("linux", "amd64"))
    _served(report)
    grown = parse("images:\n  - r.io/a:1\n  - r.io/b:1\n  - r.io/new:1\n")
    report.configure(grown.images)
    report.config_loaded("list.yaml", 3, 100.0)
    failed = dataclasses.replace(outcomes("failed", "hit")[0], permanent=False)
    report.settle(failed)  # r.io/a:1 was served, and now it is not there
    assert not report.ready and not report.converging


def test_a_node_that_never_served_a_complete_list_is_not_ready_and_not_converging() -> None:
    report = NodeReport(Platform("linux", "amd64"))
    report.configure(CONFIG.images)
    report.config_loaded("list.yaml", 3, 10.0)
    report.record(outcomes("pulled", "failed"), 11.0)
    report.configure(parse("images:\n  - r.io/a:1\n  - r.io/new:1\n").images)
    report.config_loaded("list.yaml", 2, 12.0)
    assert not report.ready and not report.converging


def test_going_back_to_the_served_list_ends_converging() -> None:
    report = NodeReport(Platform("linux", "amd64"))
    _served(report)
    report.configure(parse("images:\n  - r.io/new:1\n").images)
    report.config_loaded("list.yaml", 1, 100.0)
    assert report.converging
    report.configure(CONFIG.images)
    report.config_loaded("list.yaml", 3, 101.0)
    assert report.converging_since is None


def test_status_says_a_ready_node_converges_toward_what_since_when() -> None:
    from agent.cli.status import format_status

    document = {
        "node_platform": "linux/amd64",
        "ready": True,
        "runtime": {"name": "containerd", "version": "2.1.9"},
        "last_reconcile": 100.0,
        "converging": {"from": "sha256:a", "to": "sha256:b", "since": 40.0, "present": 2,
                       "desired": 3, "overdue": True},
        "images": [],
    }  # fmt: skip
    lines = format_status(document, lambda s: s, 100.0).splitlines()
    assert lines[0].startswith("platform linux/amd64  READY")
    assert lines[1] == (
        "converging to list sha256:b for 60s (OVERDUE): 2 of 3 present; still serving list sha256:a"
    )
