"""Finding the kubelet's configuration file (agent.adapters.kubelet): the running kubelet's
`--config`, else the usual places; and reading it as hostile input."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.adapters import kubelet
from agent.core.errors import ConfigError, InputError


def a_process(proc: Path, pid: int, argv: list[str], cwd: Path) -> None:
    folder = proc / str(pid)
    folder.mkdir(parents=True)
    (folder / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    os.symlink(cwd, folder / "cwd")


@pytest.mark.parametrize(
    "flags",
    [["--config", "/etc/k/kubelet.yaml"], ["--config=/etc/k/kubelet.yaml"]],
)
def test_the_running_kubelet_s_config_flag_is_followed(tmp_path: Path, flags: list[str]) -> None:
    proc = tmp_path / "proc"
    a_process(proc, 1, ["/sbin/init"], tmp_path)
    a_process(proc, 812, ["/usr/bin/kubelet", "--v=2", *flags], tmp_path)

    assert kubelet.running_kubelet_config(proc) == Path("/etc/k/kubelet.yaml")


def test_a_relative_config_is_made_absolute_against_the_kubelet_s_working_directory(
    tmp_path: Path,
) -> None:
    proc = tmp_path / "proc"
    a_process(proc, 40, ["kubelet", "--config", "kubelet.yaml"], Path("/var/lib/kubelet"))

    assert kubelet.running_kubelet_config(proc) == Path("/var/lib/kubelet/kubelet.yaml")


def test_without_a_kubelet_the_first_usual_place_that_exists_is_taken(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    a_process(proc, 7, ["/usr/bin/containerd"], tmp_path)
    first, second = tmp_path / "a.yaml", tmp_path / "b.json"
    second.write_text("{}")

    assert kubelet.locate(proc, (first, second)) == second
    assert kubelet.locate(tmp_path / "no-proc", (first,)) is None


def test_a_file_that_is_not_one_is_bad_input_naming_it(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"cannot read the kubelet configuration .*missing"):
        kubelet.read(tmp_path / "missing")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(InputError, match="not a regular file"):
        kubelet.read(tmp_path / "fifo")
    huge = tmp_path / "huge.yaml"
    huge.write_text("a: " + "x" * (kubelet.MAX_BYTES + 1))
    with pytest.raises(InputError, match="larger than 1 MiB"):
        kubelet.read(huge)
    aliases = tmp_path / "bomb.yaml"
    aliases.write_text(
        "a: &a [x, x, x, x, x, x, x, x, x]\n"
        + "".join(f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
                  for p, c in zip("abcdefgh", "bcdefghi", strict=True))
    )  # fmt: skip
    with pytest.raises(ConfigError, match="aliases expand"):
        kubelet.read(aliases)
