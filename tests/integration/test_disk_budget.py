"""The disk budget on a real containerd whose root is a small tmpfs: pulls stop where the next
would take the image filesystem past maxDiskUsagePercent, in list order, and say so."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.disk import usage_of
from tests.harness.containerd import Containerd
from tests.harness.daemon import ConfigMapVolume, DaemonProc
from tests.harness.images import PushedImage, push_image
from tests.harness.procs import HarnessError
from tests.harness.registry import Registry
from tests.integration.conftest import NODE, image_status, once, write_config

TMPFS = "128m"
LAYER = 16 << 20
"""Each image takes about twice this on disk: the compressed blob and the unpacked layer."""


@pytest.fixture
def small_disk(tmp_path: Path, registry: Registry, pause_image: str) -> Iterator[Containerd]:
    """A containerd whose root (content store and snapshots) is a 128 MiB tmpfs."""
    workdir = tmp_path / "node"
    root = workdir / "root"
    root.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS}", "tmpfs", str(root)], check=True)
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
    # 5 points above it. The third image (16 MiB, 12.5% of the tmpfs) would cross it; the tiny
    # one after it would not, and is still pulled: each entry is decided in list order.
    used = usage_of(str(small_disk.workdir / "root")).percent
    budget = int(used) + 5
    listed += [third.pinned(), tiny.pinned()]
    extra = f"concurrency: 1\nmaxDiskUsagePercent: {budget}\n"
    config = write_config(tmp_path / "preload.yaml", registry, listed, extra)
    result = once(small_disk, config, "--no-trunc")

    assert result.code == 1, result
    assert result.line_for(first.pinned()).startswith("hit")
    deferred = result.line_for(third.pinned())
    assert deferred.startswith("deferred") and "over disk budget: " in deferred, deferred
    assert f"budget {budget}%" in deferred and "would take it to" in deferred, deferred
    assert result.line_for(tiny.pinned()).startswith("pulled"), result
    assert image_status(small_disk, third.tagged) is None, "pulled over the budget"

    # Room again (a higher budget): the next pass pulls it.
    config.write_text(config.read_text().replace(f"Percent: {budget}", "Percent: 95"))
    again = once(small_disk, config)
    assert again.code == 0 and again.line_for(third.pinned()).startswith("pulled"), again


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
