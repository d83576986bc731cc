from __future__ import annotations

import asyncio
import gzip
import os

import pytest

from agent.core.engine.disk import (
    DEFAULT_UNPACK_RATIO,
    MAX_UNPACK_RATIO,
    DiskGuard,
    DiskUsage,
    Layer,
    footprint,
    gzip_unpacked,
    over_budget,
    zstd_unpacked,
)
from agent.core.errors import ConfigError
from agent.core.lists import config as configs

MiB = 1 << 20
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


def test_gzip_trailers_give_the_unpacked_size_even_past_4_gib() -> None:
    data = b"layer " * 100_000
    packed = gzip.compress(data)
    assert gzip_unpacked(packed[-4:], len(packed)) == len(data)
    # ISIZE is the size mod 2^32: 5 GiB of compressible data reads as 1 GiB, and a wrapped
    # value below what deflate could have packed it from is taken up by 4 GiB.
    wrapped = (5 * GiB % (1 << 32)).to_bytes(4, "little")
    assert gzip_unpacked(wrapped, 100 << 20) == GiB, "1 GiB is consistent with 100 MiB packed"
    assert gzip_unpacked(wrapped, 2 * GiB) == 5 * GiB, "1 GiB is not, from 2 GiB packed"
    random = os.urandom(50_000)
    packed = gzip.compress(random)
    assert gzip_unpacked(packed[-4:], len(packed)) == len(packed), "never below compressed"
    assert gzip_unpacked(b"", 10) is None


def _zstd_header(descriptor: int, *fields: bytes) -> bytes:
    return (0xFD2FB528).to_bytes(4, "little") + bytes([descriptor]) + b"".join(fields)


def test_zstd_frame_headers_give_the_content_size_when_they_carry_it() -> None:
    # Single segment, 1-byte size (FCS flag 0).
    assert zstd_unpacked(_zstd_header(0b0010_0000, bytes([200]))) == 200
    # A window byte, then a 2-byte size (+256).
    assert zstd_unpacked(_zstd_header(0b0100_0000, b"\x00", (1000).to_bytes(2, "little"))) == 1256
    # A window byte, a 1-byte dictionary id, a 4-byte size.
    header = _zstd_header(0b1000_0001, b"\x00", b"\x07", (70_000).to_bytes(4, "little"))
    assert zstd_unpacked(header) == 70_000
    # Single segment, a 4-byte dictionary id, an 8-byte size.
    header = _zstd_header(0b1110_0011, (9).to_bytes(4, "little"), (6 * GiB).to_bytes(8, "little"))
    assert zstd_unpacked(header) == 6 * GiB
    assert zstd_unpacked(_zstd_header(0b0000_0000, b"\x00")) is None, "no size in the frame"
    assert zstd_unpacked(b"\x1f\x8b\x08\x00\x00\x00") is None, "not zstd"
    assert zstd_unpacked(_zstd_header(0b1100_0000, b"\x00", b"\x01\x02")) is None, "cut short"


def test_an_image_takes_its_blobs_and_its_unpacked_layers() -> None:
    blobs = [
        Layer("application/vnd.oci.image.config.v1+json", 1000),
        Layer("application/vnd.oci.image.layer.v1.tar+gzip", 10 * MiB, 40 * MiB),
        Layer("application/vnd.oci.image.layer.v1.tar", 5 * MiB),
        Layer("application/vnd.oci.image.layer.v1.tar+zstd", 2 * MiB),
    ]
    total, estimated = footprint(blobs, ratio=3.0)
    assert estimated == 6 * MiB
    assert total == 1000 + (10 + 40) * MiB + (5 + 5) * MiB + (2 + 6) * MiB


def test_the_guard_learns_the_ratio_of_this_nodes_layers() -> None:
    async def mountpoint() -> str | None:
        return "/"

    guard = DiskGuard(mountpoint, lambda path: DiskUsage(100 * GiB, 50 * GiB))
    assert guard.ratio == DEFAULT_UNPACK_RATIO, "nothing measured yet"
    guard.learn([Layer("application/vnd.oci.image.layer.v1.tar+gzip", 10 * MiB, 25 * MiB)])
    guard.learn([Layer("application/vnd.oci.image.layer.v1.tar+gzip", 10 * MiB, 15 * MiB)])
    assert guard.ratio == pytest.approx(2.0)
    guard.learn([Layer("application/vnd.oci.image.layer.v1.tar+gzip", 1, 10 * GiB)])
    assert guard.ratio == MAX_UNPACK_RATIO
