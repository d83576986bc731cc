"""`prepull-agent doctor` against real containerd, started with each CRI setting that sends CRI
pulls down the old path: the doctor names the setting exactly when containerd itself says it
falls back (its start-up log), and reads the settings as containerd applies them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.adapters.runtime import containerd_config
from tests.harness.agent import NODE, pull, run_agent
from tests.harness.containerd import Containerd, selected_release
from tests.harness.daemon import DaemonProc
from tests.harness.images import push_image
from tests.harness.procs import free_port
from tests.harness.registry import Registry

LINE = selected_release().line
FALLBACK = "Falling back to local image pull mode"
if LINE == "2":  # the version 3 config the harness writes for 2.x
    TABLE = "plugins.'io.containerd.cri.v1.images'"
    IMAGES = CONTAINERD = '[plugins."io.containerd.cri.v1.images"]\n'
    REGISTRY = '[plugins."io.containerd.cri.v1.images".registry]\n'
else:  # version 2, as 1.6 and 1.7 read it
    TABLE = "plugins.'io.containerd.grpc.v1.cri'"
    IMAGES = '[plugins."io.containerd.grpc.v1.cri"]\n'
    CONTAINERD = '[plugins."io.containerd.grpc.v1.cri".containerd]\n'
    REGISTRY = '[plugins."io.containerd.grpc.v1.cri".registry]\n'
NESTED = "containerd." if LINE != "2" else ""


def after(header: str, lines: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        assert header in text, f"{header!r} is not in the config"
        return text.replace(header, header + lines, 1)

    return edit


# Each CRI setting that forces the old path on 2.x, as a config edit, and where the doctor finds
# it. On 1.6 and 1.7 the same settings force nothing: CRI never uses the transfer service there.
FORCING = {
    f"{NESTED}disable_snapshot_annotations": after(
        CONTAINERD, "  disable_snapshot_annotations = false\n"
    ),
    f"{NESTED}discard_unpacked_layers": after(CONTAINERD, "  discard_unpacked_layers = true\n"),
    "max_concurrent_downloads": after(IMAGES, "  max_concurrent_downloads = 5\n"),
    "image_pull_with_sync_fs": after(IMAGES, "  image_pull_with_sync_fs = true\n"),
    "registry.configs": after(REGISTRY, '  configs."127.0.0.1:5000".auth.username = "u"\n'),
    "registry.auths": after(REGISTRY, '  auths."https://127.0.0.1:5000".username = "u"\n'),
}


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Callable[..., Containerd]]:
    started: list[Containerd] = []

    def start(edit: Callable[[str], str] = lambda text: text, **options: Any) -> Containerd:
        folder = tmp_path / f"node{len(started)}"
        folder.mkdir()
        started.append(Containerd(folder, edit_config=edit, **options).start())
        return started[-1]

    yield start
    for each in started:
        each.stop()


def doctor(node: Containerd, *extra: str) -> tuple[int, dict[str, Any]]:
    result = run_agent(
        "doctor",
        "--cri-endpoint",
        node.endpoint,
        "--containerd-config",
        str(node.config_file),
        "-o",
        "json",
        *extra,
    )
    assert result.code in (0, 1), result
    return result.code, json.loads(result.stdout)


@pytest.mark.parametrize("setting", sorted(FORCING))
def test_each_setting_that_forces_the_old_path_is_named_as_containerd_says(
    node: Callable[..., Containerd], setting: str
) -> None:
    forced = node(FORCING[setting])
    code, found = doctor(forced)
    assert found["pull_path"] == "CRI (old path)", found
    falls_back = FALLBACK in forced.log.read_text()
    if LINE == "2":
        assert found["forced_by"] == [f"{TABLE}.{setting}"], found
        (finding,) = [f for f in found["findings"] if f["setting"] == f"{TABLE}.{setting}"]
        assert finding["recommended"] is not None and code == 1
        assert falls_back, "containerd itself did not fall back"
    else:
        assert found["forced_by"] == [] and not falls_back, found
        assert not [f for f in found["findings"] if f["recommended"] and not f["tuning"]]


def test_a_default_node_is_read_as_containerd_runs_it(node: Callable[..., Containerd]) -> None:
    plain = node()
    code, found = doctor(plain)
    assert found["containerd"].startswith(selected_release().line.split(".")[0])
    assert found["forced_by"] == [] and FALLBACK not in plain.log.read_text()
    assert found["settings"][f"{TABLE}.{NESTED}snapshotter"] == "overlayfs"
    # The pull progress timeout, as containerd itself says it runs with (none in 1.6).
    release = selected_release()
    dumped = subprocess.run(
        [*release.command(), "--config", str(plain.config_file), "config", "dump"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    images_table = tomllib.loads(dumped)["plugins"][IMAGES.split('"')[1]]
    timeout = found["settings"].get(f"{TABLE}.image_pull_progress_timeout")
    assert timeout == images_table.get("image_pull_progress_timeout"), images_table
    assert (timeout is None) == (LINE == "1.6")
    # Nothing is wrong; the measured advice is all there is to change.
    assert code == 1 and all(f["tuning"] for f in found["findings"] if f["recommended"])
    if LINE == "2":
        assert found["pull_path"] == "transfer service", found
        settings = found["settings"]
        assert settings["plugins.'io.containerd.transfer.v1.local'.max_concurrent_downloads"] == 3
    else:
        # Before 2.1 the CRI plugin pulls on its own: the doctor says so.
        assert found["pull_path"] == "CRI (old path)", found
        assert [f["setting"] for f in found["findings"]] == [
            "containerd",
            f"{TABLE}.max_concurrent_downloads",
            "containerd's gzip decompressor",
        ]
        assert found["settings"][f"{TABLE}.max_concurrent_downloads"] == 3


def applied(plan: dict[str, Any], text: str) -> str:
    """The config file's text with the doctor's plan applied as its block says."""
    for setting in plan["remove"]:
        key = setting.rpartition(".")[2]
        text, removed = re.subn(rf"(?m)^\s*{re.escape(key)}\s*=.*\n", "", text, count=1)
        assert removed, f"{setting} is not in the file"
    if plan["imports"] is not None:
        text = plan["imports"] + "\n" + re.sub(r"(?m)^imports\s*=.*\n", "", text)
    if plan["in_main_file"] is not None:
        header, _, keys = plan["in_main_file"].partition("\n")
        table = header.strip("[]").split("'")[1]
        text = after(f'[plugins."{table}"]\n', keys)(text)
    return text


def test_the_doctor_needs_one_round_apply_its_block_restart_and_nothing_is_left(
    node: Callable[..., Containerd],
) -> None:
    """On 2.x with a setting that forces the old path, on 1.x on its defaults: the whole change
    comes in one block (what to remove, the imports line, the drop-in or the table's keys);
    applied, and containerd restarted, the doctor finds nothing and exits 0."""
    forcing = FORCING["max_concurrent_downloads"] if LINE == "2" else (lambda text: text)
    forced = node(forcing)
    code, found = doctor(forced)
    plan = found["apply_plan"]
    assert code == 1 and plan and found["apply"], found
    if LINE == "2":
        assert plan["remove"] == [f"{TABLE}.max_concurrent_downloads"], plan
        assert plan["drop_in_path"] == str(forced.config_file.parent / "conf.d/50-prepull.toml")
        assert plan["imports"] is not None, "the harness's config.toml imports nothing"
        drop_in = Path(plan["drop_in_path"])
        drop_in.parent.mkdir()
        drop_in.write_text(plan["drop_in"])
    else:
        assert plan["remove"] == [] and plan["in_main_file"] and "not a drop-in" in found["apply"]
    advised = {f["setting"].rpartition(".")[2]: f["recommended"] for f in found["findings"]
               if f["tuning"]}  # fmt: skip
    forced.restart(lambda text: applied(plan, forcing(text)))
    code, again = doctor(forced)
    assert code == 0 and not [f for f in again["findings"] if f["recommended"]], again
    for key, value in advised.items():
        assert [v for k, v in again["settings"].items() if k.endswith("." + key)] == [value]
    assert FALLBACK not in forced.log.read_text(), "the restart's log: no fallback any more"


def test_a_config_edited_after_containerd_started_is_not_what_it_runs(
    node: Callable[..., Containerd],
) -> None:
    plain = node()
    _, before = doctor(plain)
    assert not [f for f in before["findings"] if f["setting"] == "containerd's config"]
    plain.config_file.write_text(plain.config_file.read_text() + "\n# edited\n")
    later = time.time() + 60  # an edit a minute after containerd started
    os.utime(plain.config_file, (later, later))
    code, found = doctor(plain)
    (stale,) = [f for f in found["findings"] if f["setting"] == "containerd's config"]
    assert code == 1 and stale["recommended"] == "restart containerd", stale
    assert "edited, not applied" in stale["why"]
    plain.restart()
    _, again = doctor(plain)
    assert not [f for f in again["findings"] if f["setting"] == "containerd's config"], again


def test_a_config_that_does_not_parse_is_bad_input_naming_its_line(
    node: Callable[..., Containerd], tmp_path: Path
) -> None:
    plain = node()
    broken = tmp_path / "broken.toml"
    broken.write_text(f'version = 3\nimports = ["{tmp_path}/conf.d/*.toml"]\n')
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "10-pull.toml").write_text("[plugins\nmax = 1\n")
    result = run_agent(
        "doctor", "--cri-endpoint", plain.endpoint, "--containerd-config", str(broken)
    )
    assert result.code == 2 and f"{tmp_path}/conf.d/10-pull.toml:1:" in result.stderr, result
    missing = run_agent(
        "doctor", "--cri-endpoint", plain.endpoint, "--containerd-config", str(tmp_path / "none")
    )
    assert missing.code == 2 and "cannot read containerd's config" in missing.stderr, missing


def test_the_daemon_says_the_same_in_status_metrics_and_its_log(
    node: Callable[..., Containerd], tmp_path: Path
) -> None:
    forced = node(FORCING["max_concurrent_downloads"])
    preload = tmp_path / "preload.yaml"
    preload.write_text(f"resync: 1s\nimages:\n  - 127.0.0.1:{free_port()}/nothing:1\n")
    daemon = DaemonProc(preload, forced.endpoint, "--containerd-config", str(forced.config_file))
    try:

        def read() -> dict[str, Any] | None:
            runtime = json.loads(daemon.get("/status")[1]).get("runtime") or {}
            found: dict[str, Any] | None = runtime.get("pull_path")
            return found

        daemon.wait_for(lambda: read() is not None, 60, "/status to say how containerd pulls")
        found = read()
        assert found is not None and found["pull_path"] == "CRI (old path)", found
        metrics = daemon.get("/metrics")[1]
        assert "prepull_runtime_transfer_service 0.0" in metrics
        setting = f"{TABLE}.max_concurrent_downloads"
        if LINE == "2":
            assert found["forced_by"] == [setting]
            assert f'prepull_runtime_finding{{change="1",setting="{setting}"}} 1.0' in metrics
            assert "forced by " + setting in daemon.log()
        else:
            assert found["forced_by"] == [] and 'setting="containerd"' in metrics
            assert "containerd pulls for CRI through its old path; 3 findings" in daemon.log()

        # The operator applies the advice and restarts containerd: the daemon reads the config
        # again without a restart of its own.
        forced.restart(edit_config=lambda text: text)
        daemon.wait_for(lambda: read() != found, 60, "/status to follow containerd's restart")
        again = read()
        assert again is not None and again["forced_by"] == [], again
        if LINE == "2":
            assert again["pull_path"] == "transfer service", again
            assert "prepull_runtime_transfer_service 1.0" in daemon.get("/metrics")[1]
        else:
            assert again["settings"][setting] == 3, again
        assert daemon.log().count("containerd pulls for CRI through") == 2, daemon.log()
    finally:
        daemon.terminate()


def test_the_config_is_merged_as_containerd_itself_merges_it(tmp_path: Path) -> None:
    """A drop-in that sets one CRI key, read by the agent and by `containerd config dump` of
    this line: 1.6 and 1.7 drop the rest of the main file's CRI table, 2.x keeps it."""
    folder = tmp_path / "etc"
    (folder / "conf.d").mkdir(parents=True)
    main = folder / "config.toml"
    version = 3 if LINE == "2" else 2
    main.write_text(
        f'version = {version}\nimports = ["{folder}/conf.d/*.toml"]\n'
        f'{REGISTRY}  config_path = "{tmp_path}/certs.d"\n'
    )
    (folder / "conf.d" / "50-prepull.toml").write_text(
        f"version = {version}\nimports = ['../deeper.toml']\n"
        f"{IMAGES}  max_concurrent_downloads = 8\n"
    )
    # Imports of imports are followed: the last merged wins.
    (folder / "deeper.toml").write_text(
        f"version = {version}\n{IMAGES}  max_concurrent_downloads = 9\n"
    )
    release = selected_release()

    def containerd(*args: str) -> str:
        return subprocess.run(
            [*release.command(), *args], capture_output=True, text=True, timeout=60, check=True
        ).stdout

    plugin = IMAGES.split('"')[1]
    theirs = tomllib.loads(containerd("--config", str(main), "config", "dump"))["plugins"][plugin]
    version_said = containerd("--version").split()[2]
    document, read = containerd_config.load(main, version_said)
    ours = document["plugins"][plugin]
    assert ours["max_concurrent_downloads"] == theirs["max_concurrent_downloads"] == 9
    assert ours.get("registry", {}).get("config_path", "") == theirs["registry"]["config_path"]
    assert (theirs["registry"]["config_path"] == "") == (LINE != "2"), theirs["registry"]
    assert read[-1] == str(folder / "deeper.toml")


def test_the_decompressor_is_named_as_containerd_picks_it_and_uses_it(
    node: Callable[..., Containerd], tmp_path: Path, registry: Registry, repo: str
) -> None:
    """Stand-ins for igzip and unpigz (gzip underneath, each noting its use) first on
    containerd's PATH: the doctor names the one containerd then really runs for a pull's gzip
    layer; with both turned off, Go's gzip (whatever else the machine's PATH holds)."""
    tools = tmp_path / "tools"
    tools.mkdir()
    for tool in ("igzip", "unpigz"):
        stand_in = tools / tool
        stand_in.write_text(f'#!/bin/sh\necho {tool} >> {tmp_path}/used\nexec gzip "$@"\n')
        stand_in.chmod(0o755)

    def decompressor(found: dict[str, Any]) -> str:
        (finding,) = [f for f in found["findings"] if f["setting"].endswith("decompressor")]
        assert finding["recommended"] is None
        return str(finding["current"])

    expected = "igzip" if LINE == "2" else "unpigz"  # igzip from containerd 2.0
    named = node(path_first=tools)
    assert decompressor(doctor(named)[1]) == f"{expected} ({tools}/{expected})"
    named.trust_http_registry(registry.host)
    image = push_image(registry, repo, "1", (NODE,))
    pull(named, image.by_digest())
    assert (tmp_path / "used").read_text().split() == [expected], "containerd ran another"
    switches = {"CONTAINERD_DISABLE_IGZIP": "1", "CONTAINERD_DISABLE_PIGZ": "true"}
    off = node(path_first=tools, environment=switches)
    assert decompressor(doctor(off)[1]) == "Go's gzip (one core)"
