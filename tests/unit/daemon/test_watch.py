from __future__ import annotations

import os
from pathlib import Path

from agent.daemon.watch import ConfigWatcher


def test_a_configmap_style_symlink_swap_is_a_change(tmp_path: Path) -> None:
    for version in ("..v1", "..v2"):
        (tmp_path / version).mkdir()
        (tmp_path / version / "preload.yaml").write_text("images: []\n")  # same size, same text
    (tmp_path / "..data").symlink_to("..v1")
    (tmp_path / "preload.yaml").symlink_to("..data/preload.yaml")
    watcher = ConfigWatcher(tmp_path / "preload.yaml")
    assert not watcher.changed()

    (tmp_path / "..tmp").symlink_to("..v2")
    os.replace(tmp_path / "..tmp", tmp_path / "..data")

    assert watcher.changed()
    assert not watcher.changed(), "one change is reported once"


def test_a_file_that_disappears_and_returns_is_a_change(tmp_path: Path) -> None:
    config = tmp_path / "preload.yaml"
    config.write_text("images: []\n")
    watcher = ConfigWatcher(config)
    config.unlink()
    assert watcher.changed()
    config.write_text("images: [nginx]\n")
    assert watcher.changed()


def test_resync_is_jittered_within_ten_percent() -> None:
    from agent.daemon.passes import jittered

    assert jittered(300, lambda: 0.0) == 270
    assert jittered(300, lambda: 1.0) == 330
    assert jittered(300, lambda: 0.5) == 300
