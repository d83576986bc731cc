from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from agent.cli import main
from agent.cli.common import EXIT_BAD_INPUT, EXIT_NOT_CONVERGED, digests_for, exit_code
from agent.cli.converge import format_outcome
from agent.cli.parser import parser
from agent.core.errors import ConfigError, InvalidReference, RegistryError, RuntimeUnavailable
from agent.core.lists.config import parse
from agent.core.ports import Outcome, Status
from agent.core.reports.progress import format_bytes

D = "sha256:" + "f" * 64


def test_exit_codes_by_error_kind() -> None:
    assert exit_code(ConfigError("f", 1, "x")) == EXIT_BAD_INPUT
    assert exit_code(InvalidReference("x", "y")) == EXIT_BAD_INPUT
    assert exit_code(RuntimeUnavailable("unix:///x", "down")) == EXIT_NOT_CONVERGED
    assert exit_code(RegistryError("r", "p", "m")) == EXIT_NOT_CONVERGED


def test_bad_config_exits_2_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "preload.yaml"
    config.write_text("images:\n  - nginx\nplatfroms: []\n")

    code = main(["once", "--config", str(config), "--cri-endpoint", f"unix://{tmp_path}/none.sock"])

    err = capsys.readouterr().err
    assert code == 2
    assert f"{config}:3: unknown key 'platfroms'" in err
    assert "Traceback" not in err


def test_missing_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lock", "--config", str(tmp_path / "absent.yaml")]) == 2
    assert "absent.yaml: cannot read" in capsys.readouterr().err


def test_bad_platform_flag_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["resolve", "nginx:1", "--platform", "arm64"]) == 2
    assert "invalid platform 'arm64'" in capsys.readouterr().err


def test_a_platform_typo_is_bad_input_before_the_runtime_is_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "preload.yaml"
    config.write_text("images: [nginx]\n")
    endpoint = f"unix://{tmp_path}/none.sock"  # nothing listens: asking it would be exit 1
    args = [
        "once",
        "--config",
        str(config),
        "--cri-endpoint",
        endpoint,
        "--platform",
        "linux/amd65",
    ]
    assert main(args) == 2
    assert "did you mean 'amd64'" in capsys.readouterr().err


def test_usage_errors_exit_2() -> None:
    with pytest.raises(SystemExit) as info:
        main(["once"])
    assert info.value.code == 2


@pytest.mark.parametrize("value", ["0", "257", "-1", "many"])
def test_lock_concurrency_out_of_range_is_a_usage_error(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["lock", "--config", str(tmp_path / "x.yaml"), "--concurrency", value])
    assert info.value.code == 2
    assert "whole number from 1 to 256" in capsys.readouterr().err


def test_outcome_lines() -> None:
    entry = parse(f"images:\n  - r.io/a/b@{D}\n").images[0]
    pulled = Outcome(entry, Status.PULLED, "absent", D, "sha256:id", 12_345_678, 4.21)
    # The reference names its digest already: said once (issue 35: piped rows said it twice).
    assert format_outcome(pulled) == f"pulled    r.io/a/b@{D}  12.3 MB in 4.2s  (absent)"
    failed = Outcome(entry, Status.FAILED, "no linux/arm64 manifest in x")
    assert format_outcome(failed) == f"failed    r.io/a/b@{D}  no linux/arm64 manifest in x"
    hit = Outcome(entry, Status.HIT, "present", D)
    assert format_outcome(hit) == f"hit       r.io/a/b@{D}"


def test_outcome_lines_align_and_shorten_digests_for_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = parse(f"images:\n  - r.io/a/b@{D}\n  - r.io/long/name:1\n")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    show = digests_for(argparse.Namespace(no_trunc=False))
    width = max(len(show(e.written)) for e in config.images)
    lines = [
        format_outcome(Outcome(config.images[0], Status.HIT, "present", D), width, show),
        format_outcome(
            Outcome(config.images[1], Status.PULLED, "absent", D, "i", 10, 1.0), width, show
        ),
    ]
    short = D[:19] + "…"
    assert lines[0] == f"hit       r.io/a/b@{short}"
    assert lines[1].startswith("pulled    r.io/long/name:1" + " " * (width - 16) + f"  {short}")
    whole = digests_for(argparse.Namespace(no_trunc=True))
    assert whole(D) == D
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    assert digests_for(argparse.Namespace(no_trunc=False))(D) == D, "pipes get whole digests"


@pytest.mark.parametrize(
    ("size", "text"), [(0, "0 B"), (999, "999 B"), (1500, "1.5 kB"), (3 * 10**9, "3.0 GB")]
)
def test_format_bytes(size: int, text: str) -> None:
    assert format_bytes(size) == text


def test_lock_output_is_replaced_whole_and_readable(tmp_path: Path) -> None:
    from agent.cli.common import write_atomically

    target = tmp_path / "preload.lock.yaml"
    target.write_text("old")
    write_atomically(target, "new")
    assert target.read_text() == "new"
    assert target.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["preload.lock.yaml"], "a temp file was left"


def test_unwritable_lock_destination_is_bad_input(tmp_path: Path) -> None:
    from agent.cli.common import write_atomically
    from agent.core.errors import InputError

    with pytest.raises(InputError, match="cannot write"):
        write_atomically(tmp_path / "missing-dir" / "lock.yaml", "x")


def test_version_command_and_flag_agree(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    command = capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out == command and command.startswith("prepull-agent ")


def test_version_names_the_image_it_was_built_into(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREPULL_IMAGE", "registry.example.com/prepull-agent:0.1.0")
    assert main(["version"]) == 0
    assert (
        capsys.readouterr()
        .out.rstrip()
        .endswith("(image registry.example.com/prepull-agent:0.1.0)")
    )


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_works_before_or_after_the_command(
    where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["once", "--config", str(tmp_path / "absent.yaml")]
    args = ["-v", *args] if where == "before" else [*args, "-v"]
    assert main(args) == 2
    assert "absent.yaml" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["once", "run", "lock", "resolve", "version"])
def test_every_command_help_has_a_description_examples_and_exit_codes(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    assert "examples:\n  prepull-agent " + command in text and "exit codes: 0" in text


def test_every_flag_has_help_text() -> None:
    top = parser()
    (commands,) = [a for a in top._actions if isinstance(a, argparse._SubParsersAction)]
    for name, sub in commands.choices.items():
        bare = [a.dest for a in sub._actions if not a.help]
        assert not bare, f"{name}: {bare}"


def test_check_validates_a_list_without_a_node(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "preload.yaml"
    config.write_text(f"images:\n  - r.io/a/b:1\n  - r.io/a/c:2@{D}\n  - r.io/a/d@{D}\n")

    assert main(["check", "--config", str(config)]) == 0

    out = capsys.readouterr().out
    assert "valid: 3 images (1 by tag, 1 pinned, 1 by digest)" in out and "lock` pins" in out


def test_check_names_a_broken_pull_secret_and_a_broken_hosts_toml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "pull.json"
    secret.write_text("{not json")
    config = tmp_path / "preload.yaml"
    config.write_text("images:\n  - r.io/a/b:1\ncredentials: [pull.json]\n")
    assert main(["check", "--config", str(config)]) == 2
    assert "pull.json" in capsys.readouterr().err

    config.write_text("images:\n  - r.io/a/b:1\n")
    (tmp_path / "certs.d" / "r.io").mkdir(parents=True)
    (tmp_path / "certs.d" / "r.io" / "hosts.toml").write_text("server = [broken\n")
    hosts = ["--containerd-hosts-dir", str(tmp_path / "certs.d")]
    assert main(["check", "--config", str(config), *hosts]) == 2
    assert "hosts.toml" in capsys.readouterr().err


@pytest.mark.parametrize("lock", [None, "absent.lock.yaml"])
def test_lock_check_without_a_readable_lock_is_bad_input_before_any_registry_is_asked(
    lock: str | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "preload.yaml"
    # A registry that cannot exist: asking it would fail with exit 1, not 2.
    config.write_text("images:\n  - registry.invalid/a/b:1\n")
    args = ["lock", "--config", str(config), "--check"]
    args += ["--output-file", str(tmp_path / lock)] if lock else []

    assert main(args) == 2
    err = capsys.readouterr().err
    assert ("name the lock with --output-file" in err) if lock is None else (lock in err), err
    assert "registry.invalid" not in err, "a registry was asked"


def test_the_summary_counts_deferrals_apart_from_failures() -> None:
    from agent.cli.converge import _not_converged

    entry = parse(f"images:\n  - r.io/a/b@{D}\n").images[0]
    failed = Outcome(entry, Status.FAILED, "not found")
    deferred = Outcome(entry, Status.DEFERRED, "over disk budget", permanent=True)
    assert _not_converged([failed], 4) == "1 of 4 failed"
    assert _not_converged([deferred, deferred, failed], 5) == "1 of 5 failed, 2 deferred"
    assert _not_converged([deferred], 3) == "1 of 3 deferred"


def test_check_refuses_a_list_that_names_no_images(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "preload.yaml"
    empty.write_text("images: []\n")
    assert main(["check", "--config", str(empty)]) == 2
    assert "lists no images: a pass would preload nothing" in capsys.readouterr().err
