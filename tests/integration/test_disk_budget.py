"""The disk budget on a real containerd whose root is a small tmpfs: pulls stop where the next
would take the image filesystem past maxDiskUsagePercent, in list order, and say so."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.adapters.disk import usage_of
from tests.harness.agent import NODE, image_status, once, write_config
from tests.harness.containerd import Containerd
from tests.harness.daemon import ConfigMapVolume, DaemonProc
from tests.harness.images import PushedImage, push_image
from tests.harness.procs import HarnessError
from tests.harness.registry import Registry

TMPFS = "128m"
LAYER = 16 << 20
"""Each image takes about twice this on disk: the compressed blob and the unpacked layer."""


@pytest.fixture
def small_disk(tmp_path: Path, registry: Registry, pause_image: str) -> Iterator[Containerd]:
    """A containerd whose root (content store and snapshots) is a 128 MiB tmpfs."""
    yield from _containerd_on_tmpfs(tmp_path, registry, pause_image, TMPFS)


def _containerd_on_tmpfs(
    tmp_path: Path, registry: Registry, pause_image: str, size: str
) -> Iterator[Containerd]:
    workdir = tmp_path / "node"
    root = workdir / "root"
    root.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(root)], check=True)
    node = Containerd(workdir, sandbox_image=pause_image)
    node.trust_http_registry(registry.host)
    try:
        node.start()
    except HarnessError as exc:
        subprocess.run(["umount", "-l", str(root)], check=False)
        pytest.fail(f"cannot start containerd on a tmpfs: {exc}", pytrace=False)
    yield node
    node.stop()
    subprocess.run(["umount", "-l", str(root)], check=True)


def three_images(registry: Registry, repo: str) -> list[PushedImage]:
    return [push_image(registry, f"{repo}-{n}", "1", (NODE,), LAYER) for n in "abc"]


def test_pulls_stop_at_the_budget_in_list_order_and_say_why(
    tmp_path: Path, registry: Registry, small_disk: Containerd, repo: str
) -> None:
    first, second, third = three_images(registry, repo)
    tiny = push_image(registry, f"{repo}-tiny", "1", (NODE,), 4096)
    listed = [first.pinned(), second.pinned()]
    config = write_config(tmp_path / "preload.yaml", registry, listed, "concurrency: 1\n")
    assert once(small_disk, config).code == 0
    # What two images really take differs per containerd line: measure it, then set the budget
    # 5 points above it. The third image (16 MiB packed and unpacked, 25% of the tmpfs) would
    # cross it; the tiny one after it would not, but waits behind it: the list is a priority
    # order, and what is preloaded a prefix of it.
    used = usage_of(str(small_disk.workdir / "root")).percent
    budget = int(used) + 5
    listed += [third.pinned(), tiny.pinned()]
    extra = f"concurrency: 1\nmaxDiskUsagePercent: {budget}\n"
    config = write_config(tmp_path / "preload.yaml", registry, listed, extra)
    result = once(small_disk, config, "--no-trunc", "--strict")

    assert result.code == 1, result
    assert result.line_for(first.pinned()).startswith("hit")
    deferred = result.line_for(third.pinned())
    assert deferred.startswith("deferred") and "over disk budget: " in deferred, deferred
    assert f"budget {budget}%" in deferred and "would take it to" in deferred, deferred
    behind = result.line_for(tiny.pinned())
    assert behind.startswith("deferred") and f"behind {third.pinned()}" in behind, behind
    assert image_status(small_disk, third.tagged) is None, "pulled over the budget"
    assert image_status(small_disk, tiny.tagged) is None, "pulled ahead of its turn"

    # Room again (a higher budget): the next pass pulls both.
    config.write_text(config.read_text().replace(f"Percent: {budget}", "Percent: 95"))
    again = once(small_disk, config)
    assert again.code == 0 and again.line_for(third.pinned()).startswith("pulled"), again
    assert again.line_for(tiny.pinned()).startswith("pulled"), again


def test_the_daemon_reports_the_budget_in_status_and_metrics(
    tmp_path: Path, volume: ConfigMapVolume, registry: Registry, small_disk: Containerd, repo: str
) -> None:
    images = three_images(registry, repo)
    # Two images first, then a budget 5 points above what they really take (as above).
    config = write_config(tmp_path / "two.yaml", registry, [i.pinned() for i in images[:2]])
    assert once(small_disk, config).code == 0
    used = usage_of(str(small_disk.workdir / "root")).percent
    budget = int(used) + 5
    volume.write(
        "images:\n"
        + "".join(f"  - {image.pinned()}\n" for image in images)
        + f"concurrency: 1\nmaxDiskUsagePercent: {budget}\nregistries:\n  {registry.host}:\n"
        "    insecure: true\n"
    )
    daemon = DaemonProc(volume.path, small_disk.endpoint)
    try:
        check_daemon(daemon, budget, used)
    finally:
        daemon.terminate()


def check_daemon(daemon: DaemonProc, budget: int, used_before: float) -> None:
    daemon.wait_for(lambda: daemon.get("/readyz")[0] == 200, 90, "the first pass")
    status = json.loads(daemon.get("/status")[1])
    states = [image["state"] for image in status["images"]]
    assert states == ["present", "present", "deferred"], status["images"]
    assert "over disk budget" in status["images"][2]["last_error"]
    disk = status["disk"]
    assert disk["budget_percent"] == budget and disk["problem"] is None, disk
    assert abs(disk["used_percent"] - used_before) < 5, (disk, used_before)
    assert daemon.metric("prepull_images_over_disk_budget") == 1
    used = daemon.metric("prepull_image_fs_used_percent")
    assert used is not None and abs(used - disk["used_percent"]) < 5
    assert daemon.metric("prepull_images_failed_permanently") == 0
    readyz = daemon.get("/readyz")[1]
    assert "deferred" in readyz and "over disk budget" in readyz, readyz


@pytest.fixture
def tiny_disk(tmp_path: Path, registry: Registry, pause_image: str) -> Iterator[Containerd]:
    """A containerd whose root is a 48 MiB tmpfs, as the budget's bug report had it."""
    yield from _containerd_on_tmpfs(tmp_path, registry, pause_image, "48m")


def test_layers_that_unpack_to_more_than_they_download_stay_within_the_budget(
    tmp_path: Path, registry: Registry, tiny_disk: Containerd, repo: str
) -> None:
    # Six images of a 6 MiB layer gzipped to ~1.5 MiB: ~7.5 MiB each on disk (the blob and the
    # unpacked snapshot), where the compressed size alone says 1.5.
    images = [
        push_image(registry, f"{repo}-{n}", "1", (NODE,), 6 << 20, unpack_ratio=4) for n in range(6)
    ]
    root = str(tiny_disk.workdir / "root")
    before = usage_of(root).percent
    budget = 50
    listed = [image.pinned() for image in images]
    extra = f"concurrency: 3\nmaxDiskUsagePercent: {budget}\n"
    config = write_config(tmp_path / "preload.yaml", registry, listed, extra)

    result = once(tiny_disk, config, "--no-trunc", "--strict")

    after = usage_of(root).percent
    present = [image_status(tiny_disk, image.tagged) is not None for image in images]
    assert result.code == 1, result
    # containerd's metadata (bolt database, ingest state) grows a little beyond what is counted.
    assert after <= budget + 3, f"{before:.0f}% -> {after:.0f}% with a budget of {budget}%"
    assert present[0] and not present[-1], (present, result.stdout)
    assert present == sorted(present, reverse=True), f"not a prefix of the list: {present}"
    first_deferred = present.index(False)
    line = result.line_for(images[first_deferred].pinned())
    assert line.startswith("deferred") and "would take it to" in line, line
    for image in images[first_deferred + 1 :]:
        assert f"behind {images[first_deferred].pinned()}" in result.line_for(image.pinned())
