from __future__ import annotations

import math

import pytest

from agent.core.engine.rollout import Rollout, slot

DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64
SPREAD = 1800.0


def test_a_nodes_moment_is_fixed_and_inside_the_window() -> None:
    moments = [slot(f"node-{i}", DIGEST, SPREAD) for i in range(1000)]
    assert all(0 <= m < SPREAD for m in moments)
    assert moments == [slot(f"node-{i}", DIGEST, SPREAD) for i in range(1000)], "restarts agree"


def test_a_fleet_is_spread_uniformly_over_the_window() -> None:
    """Chi-square over 30 one-minute buckets for 5000 nodes: the fleet's pull rate is flat."""
    nodes, buckets = 5000, 30
    counts = [0] * buckets
    for i in range(nodes):
        counts[int(slot(f"ip-10-0-{i // 250}-{i % 250}.ec2.internal", DIGEST, SPREAD) / 60)] += 1
    expected = nodes / buckets
    chi2 = sum((c - expected) ** 2 / expected for c in counts)
    # 29 degrees of freedom: the 99.9th percentile of chi-square is 58.3.
    assert chi2 < 58.3, counts
    assert max(counts) < 1.5 * expected


def test_each_image_orders_the_fleet_differently() -> None:
    """A node first for one image is not first for every image: the order is per digest."""
    names = [f"node-{i}" for i in range(500)]
    first = [slot(n, DIGEST, SPREAD) for n in names]
    second = [slot(n, OTHER, SPREAD) for n in names]
    mean_a, mean_b = sum(first) / 500, sum(second) / 500
    covariance = sum((a - mean_a) * (b - mean_b) for a, b in zip(first, second, strict=True))
    spread_a = math.sqrt(sum((a - mean_a) ** 2 for a in first))
    spread_b = math.sqrt(sum((b - mean_b) ** 2 for b in second))
    assert abs(covariance / (spread_a * spread_b)) < 0.2


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_new_content_waits_for_its_moment_which_a_restart_does_not_move() -> None:
    clock = Clock(1_000_000.0)
    rollout = Rollout("node-7", clock)
    due = rollout.not_before(DIGEST, SPREAD)
    assert due is not None and clock.now < due < clock.now + SPREAD
    assert (due - slot("node-7", DIGEST, SPREAD)) % SPREAD == pytest.approx(0), "on the slot"
    assert rollout.next_due() == pytest.approx(due - clock.now)
    # Later passes, and an agent restarted at any time before the moment, find the same one.
    for later in (1.0, (due - clock.now) / 2, due - clock.now - 0.5):
        restarted = Rollout("node-7", Clock(clock.now + later))
        assert restarted.not_before(DIGEST, SPREAD) == pytest.approx(due), later
    clock.now = due + 1
    assert rollout.not_before(DIGEST, SPREAD) is None
    assert rollout.next_due() is None


def test_a_fleet_seeing_content_at_once_pulls_it_over_the_window() -> None:
    seen = 1_000_123.0
    waits = [
        Rollout(f"node-{i}", Clock(seen)).not_before(DIGEST, SPREAD) or seen for i in range(3000)
    ]
    assert all(seen <= w < seen + SPREAD for w in waits)
    thirds = [
        sum(seen + k * SPREAD / 3 <= w < seen + (k + 1) * SPREAD / 3 for w in waits)
        for k in range(3)
    ]
    assert min(thirds) > 900, thirds


def test_content_the_node_held_is_restored_at_once() -> None:
    rollout = Rollout("node-7", Clock(5.0))
    rollout.present(DIGEST)
    assert rollout.not_before(DIGEST, SPREAD) is None, "an eviction is restored at once"
    assert rollout.next_due() is None


def test_a_new_nodes_first_fill_pulls_at_once_until_it_is_ready() -> None:
    rollout = Rollout("node-7", Clock(1_000_000.0))
    rollout.first_look(holds_any_listed=False)
    rollout.first_look(holds_any_listed=True)  # only the first look counts
    assert rollout.not_before(DIGEST, SPREAD) is None, "a new node fills at once"
    rollout.ready()
    assert rollout.not_before(OTHER, SPREAD) is not None, "then new content is spread"
    spread_too = Rollout("node-7", Clock(1_000_000.0), spread_first_fill=True)
    spread_too.first_look(holds_any_listed=False)
    assert spread_too.not_before(DIGEST, SPREAD) is not None


def test_a_node_that_already_serves_waits_from_its_first_look() -> None:
    rollout = Rollout("node-7", Clock(1_000_000.0))
    rollout.first_look(holds_any_listed=True)
    assert rollout.not_before(DIGEST, SPREAD) is not None


def test_no_spread_means_no_wait() -> None:
    assert Rollout("node-7", Clock(5.0)).not_before(DIGEST, 0.0) is None
    assert slot("node-7", DIGEST, 0.0) == 0.0
