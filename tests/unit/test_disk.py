from __future__ import annotations

import asyncio

import pytest

from agent import config as configs
from agent.disk import DiskGuard, DiskUsage, over_budget
from agent.errors import ConfigError

GiB = 1 << 30


def test_a_pull_within_the_budget_is_admitted() -> None:
    assert over_budget(DiskUsage(100 * GiB, 40 * GiB), 0, 10 * GiB, 80) is None


def test_a_pull_that_would_cross_the_budget_waits_and_says_by_how_much() -> None:
    reason = over_budget(DiskUsage(100 * GiB, 25 * GiB), 0, 10 * GiB, 80)
    assert reason == "over disk budget: 75% used, budget 80% (this image would take it to 85%)"


def test_pulls_admitted_and_not_finished_count_against_the_budget() -> None:
    usage = DiskUsage(100 * GiB, 50 * GiB)
    assert over_budget(usage, 0, 20 * GiB, 80) is None
    reason = over_budget(usage, 20 * GiB, 20 * GiB, 80)
    assert reason is not None and "70% used" in reason


def test_the_guard_reserves_until_the_pull_is_over() -> None:
    seen = {"available": 60 * GiB}

    async def mountpoint() -> str | None:
        return "/var/lib/containerd"

    guard = DiskGuard(mountpoint, lambda path: DiskUsage(100 * GiB, seen["available"]))

    async def scenario() -> None:
        assert await guard.admit(15 * GiB, 80) is None  # 40% + 15%
        assert await guard.admit(15 * GiB, 80) is None  # 55% + 15%
        assert await guard.admit(15 * GiB, 80) is not None, "85% with both in flight"
        guard.release(15 * GiB)
        seen["available"] = 45 * GiB  # the finished pull is on disk now
        assert await guard.admit(5 * GiB, 80) is None  # 55% + 15% in flight + 5%

    asyncio.run(scenario())
    assert guard.last == DiskUsage(100 * GiB, 45 * GiB) and guard.problem is None


def test_a_filesystem_the_agent_cannot_see_turns_the_budget_off_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def mountpoint() -> str | None:
        return "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs"

    def unseen(path: str) -> DiskUsage:
        raise FileNotFoundError(2, "No such file or directory")

    guard = DiskGuard(mountpoint, unseen)
    assert asyncio.run(guard.admit(GiB, 80)) is None
    assert asyncio.run(guard.admit(GiB, 80)) is None
    assert guard.problem == (
        "cannot measure /var/lib/containerd/io.containerd.snapshotter.v1.overlayfs: "
        "No such file or directory"
    )
    assert len([r for r in caplog.records if "not enforced" in r.message]) == 1, "said once"


@pytest.mark.parametrize(
    ("value", "budget"), [(None, 80.0), ("70", 70.0), ("92.5", 92.5), ("100", 100.0)]
)
def test_the_budget_is_read_from_the_list(value: str | None, budget: float) -> None:
    text = "images:\n  - nginx:1\n" + (f"maxDiskUsagePercent: {value}\n" if value else "")
    assert configs.parse(text, "p.yaml").max_disk_usage_percent == budget


@pytest.mark.parametrize("value", ["0", "101", "eighty", "true", "-5"])
def test_a_bad_budget_is_named_with_its_line(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        configs.parse(f"images:\n  - nginx:1\nmaxDiskUsagePercent: {value}\n", "p.yaml")
    assert str(info.value).startswith("p.yaml:3: 'maxDiskUsagePercent' must be a number")
