from __future__ import annotations

import math

import pytest

from agent.rollout import Rollout, slot

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


def test_new_content_waits_for_its_moment_counted_from_when_it_was_first_wanted() -> None:
    rollout = Rollout("node-7")
    moment = slot("node-7", DIGEST, SPREAD)
    assert rollout.not_before(DIGEST, 1000.0, SPREAD) == pytest.approx(1000.0 + moment)
    # Later passes keep the first sighting, they do not push the moment back.
    assert rollout.not_before(DIGEST, 1000.0 + moment / 2, SPREAD) == pytest.approx(1000 + moment)
    assert rollout.next_due(1001.0, SPREAD) == pytest.approx(1000.0 + moment)
    assert rollout.not_before(DIGEST, 1000.0 + moment + 1, SPREAD) is None


def test_content_the_node_held_is_restored_at_once() -> None:
    rollout = Rollout("node-7")
    rollout.present(DIGEST)
    assert rollout.not_before(DIGEST, 5.0, SPREAD) is None, "an eviction is restored at once"
    assert rollout.next_due(5.0, SPREAD) is None


def test_no_spread_means_no_wait() -> None:
    assert Rollout("node-7").not_before(DIGEST, 5.0, 0.0) is None
    assert slot("node-7", DIGEST, 0.0) == 0.0
