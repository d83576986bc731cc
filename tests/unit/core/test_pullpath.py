"""How containerd pulls for CRI, from its version and config (core.doctor.pullpath), and the config
as containerd reads it (agent.adapters.runtime.containerd_config)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from agent.adapters.runtime.containerd_config import load
from agent.core.doctor.advice import plan, stale_config
from agent.core.doctor.pullpath import (
    CRI_ADVICE,
    TRANSFER,
    TRANSFER_ADVICE,
    TRANSFER_ADVICE_WITHOUT_RANGE,
    diagnose,
)
from agent.core.errors import ConfigError, InputError

IMAGES = "plugins.'io.containerd.cri.v1.images'"
CRI = "plugins.'io.containerd.grpc.v1.cri'"


def v3(images: dict[str, Any] | None = None, transfer: dict[str, Any] | None = None) -> Any:
    plugins: dict[str, Any] = {"io.containerd.cri.v1.images": images or {}}
    if transfer is not None:
        plugins["io.containerd.transfer.v1.local"] = transfer
    return {"version": 3, "plugins": plugins}


def test_a_default_2_1_node_pulls_through_the_transfer_service() -> None:
    found = diagnose("2.1.9+unknown", None, None)
    assert found.transfer_service and not found.forced_by and not found.traps
    assert found.settings == {
        f"{IMAGES}.snapshotter": "overlayfs",
        f"{IMAGES}.image_pull_progress_timeout": "5m0s",
        f"{TRANSFER}.max_concurrent_downloads": 3,
        f"{TRANSFER}.concurrent_layer_fetch_buffer": 0,
    }, "max_concurrent_unpacks exists from 2.2 only"
    assert f"{TRANSFER}.max_concurrent_unpacks" in diagnose("2.2.0", None, None).settings
    assert found.config == "containerd's defaults (no config file)"


@pytest.mark.parametrize(
    ("images", "named"),
    [
        ({"disable_snapshot_annotations": False}, "disable_snapshot_annotations"),
        ({"discard_unpacked_layers": True}, "discard_unpacked_layers"),
        ({"max_concurrent_downloads": 8}, "max_concurrent_downloads"),
        ({"image_pull_with_sync_fs": True}, "image_pull_with_sync_fs"),
        ({"registry": {"mirrors": {"docker.io": {"endpoint": ["x"]}}}}, "registry.mirrors"),
        ({"registry": {"configs": {"h": {"auth": {"username": "u"}}}}}, "registry.configs"),
        ({"registry": {"auths": {"https://h": {"username": "u"}}}}, "registry.auths"),
    ],
)
def test_each_setting_that_forces_the_old_path_is_named_with_its_table(
    images: dict[str, Any], named: str
) -> None:
    found = diagnose("2.1.9", v3(images), "/etc/containerd/config.toml")
    assert not found.transfer_service and found.forced_by == (f"{IMAGES}.{named}",)
    assert found.actionable and found.findings[0].setting == f"{IMAGES}.{named}"
    assert "transfer service" in found.findings[0].impact
    assert f"{IMAGES}.max_concurrent_downloads" in found.settings


def test_defaults_written_out_force_nothing() -> None:
    written = {
        "disable_snapshot_annotations": True,
        "discard_unpacked_layers": False,
        "max_concurrent_downloads": 3,
        "image_pull_with_sync_fs": False,
        "registry": {"config_path": "/etc/containerd/certs.d", "mirrors": {}},
    }
    assert diagnose("2.1.9", v3(written), "f").transfer_service


def test_a_version_2_file_is_read_where_it_keeps_each_setting() -> None:
    config = {"version": 2, "plugins": {"io.containerd.grpc.v1.cri": {"containerd": {
        "discard_unpacked_layers": True, "snapshotter": "native"}}}}  # fmt: skip
    found = diagnose("2.1.9", config, "f")
    assert found.forced_by == (f"{CRI}.containerd.discard_unpacked_layers",)
    assert found.settings[f"{CRI}.containerd.snapshotter"] == "native"


def test_before_2_1_nothing_forces_and_the_doctor_says_why() -> None:
    config = {
        "version": 2,
        "plugins": {"io.containerd.grpc.v1.cri": {"max_concurrent_downloads": 5}},
    }
    found = diagnose("1.7.24~ds1", config, "f")
    assert not found.transfer_service and found.forced_by == () and not found.traps
    assert [f.setting for f in found.findings] == ["containerd", f"{CRI}.max_concurrent_downloads"]
    assert found.settings[f"{CRI}.max_concurrent_downloads"] == 5
    # The old path's own measured advice, with the trap it becomes on an upgrade.
    tuning = found.findings[1]
    assert tuning.tuning and tuning.recommended == CRI_ADVICE.settings["max_concurrent_downloads"]
    assert f"move it to {TRANSFER}" in tuning.why and f"{CRI_ADVICE.capped:.2f}x" in tuning.why


def test_a_snapshotter_the_transfer_service_cannot_unpack_onto_is_found() -> None:
    found = diagnose("2.1.9", v3({"snapshotter": "native"}), "f")
    assert [f.setting for f in found.findings if not f.tuning] == [f"{TRANSFER}.unpack_config"]
    assert "no unpack platforms defined" in found.findings[0].impact and found.traps
    unpack = {"unpack_config": [{"platform": "linux/amd64", "snapshotter": "native"}]}
    assert not diagnose("2.1.9", v3({"snapshotter": "native"}, unpack), "f").traps


def test_chunked_fetch_is_reported_with_its_risk_but_not_advised_against() -> None:
    found = diagnose("2.1.9", v3(transfer={"concurrent_layer_fetch_buffer": 8 << 20}), "f")
    (finding, *_) = found.findings
    assert finding.recommended is None and "Range" in finding.impact
    assert found.settings[f"{TRANSFER}.concurrent_layer_fetch_buffer"] == 8 << 20
    # Where a registry of the list ignores Range, chunked fetch is advised against.
    ignored = diagnose(
        "2.1.9", v3(transfer={"concurrent_layer_fetch_buffer": 8 << 20}), "f", ["r.example"]
    )
    assert (
        ignored.findings[0].recommended == 0
        and "r.example ignores Range" in ignored.findings[0].why
    )


def test_the_measured_advice_is_given_where_the_node_is_below_it() -> None:
    found = diagnose("2.1.9", None, None)
    advised = {f.setting: f.recommended for f in found.findings}
    assert advised == {f"{TRANSFER}.{k}": v for k, v in TRANSFER_ADVICE.settings.items()}
    assert all(f.tuning and f"{TRANSFER_ADVICE.capped:.2f}x" in f.why for f in found.findings)
    assert found.actionable and not found.traps
    # Without Range, no chunks: only what was measured without them.
    plain = diagnose("2.1.9", None, None, ["r.example"])
    assert {f.setting for f in plain.findings} == {
        f"{TRANSFER}.{k}" for k in TRANSFER_ADVICE_WITHOUT_RANGE.settings
    }
    # A node already at or above the advice hears nothing.
    tuned = v3(transfer={"max_concurrent_downloads": 16, "concurrent_layer_fetch_buffer": 8 << 20})
    assert [f for f in diagnose("2.1.9", tuned, "f").findings if f.tuning] == []
    # A forced old path: the advice for the transfer service comes in the same round, said to
    # apply once the forcing settings are removed (one round, issue 35).
    forced = diagnose("2.1.9", v3({"max_concurrent_downloads": 5}), "f")
    tuned_after = [f for f in forced.findings if f.tuning]
    assert {f.setting for f in tuned_after} == {f"{TRANSFER}.{k}" for k in TRANSFER_ADVICE.settings}
    assert all("once the settings above are removed" in f.why for f in tuned_after)


def test_imports_are_merged_over_the_file_as_containerd_does(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "config.toml").write_text(
        f'version = 3\nimports = ["{tmp_path}/conf.d/*.toml"]\n'
        "[plugins.'io.containerd.transfer.v1.local']\n  max_concurrent_downloads = 3\n"
        "  concurrent_layer_fetch_buffer = 1024\n"
    )
    (tmp_path / "conf.d" / "20-b.toml").write_text(
        "[plugins.'io.containerd.transfer.v1.local']\n  max_concurrent_downloads = 8\n"
    )
    (tmp_path / "conf.d" / "10-a.toml").write_text(
        'imports = ["../deeper.toml"]\n'
        "[plugins.'io.containerd.transfer.v1.local']\n  max_concurrent_downloads = 5\n"
    )
    # Imports of imports are followed too (after the files that named them), each file once.
    (tmp_path / "deeper.toml").write_text(
        'imports = ["config.toml"]\n'
        "[plugins.'io.containerd.transfer.v1.local']\n  max_concurrent_unpacks = 2\n"
    )
    document, read = load(tmp_path / "config.toml", "2.1.9")
    transfer = document["plugins"]["io.containerd.transfer.v1.local"]
    assert transfer == {
        "max_concurrent_downloads": 8,
        "concurrent_layer_fetch_buffer": 1024,
        "max_concurrent_unpacks": 2,
    }
    assert read == [
        str(tmp_path / n) for n in ("config.toml", "conf.d/10-a.toml", "conf.d/20-b.toml")
    ] + [str(tmp_path / "deeper.toml")]


def test_before_2_0_an_imported_plugin_table_replaces_the_files_whole(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        'version = 2\nimports = ["drop-in.toml"]\n'
        "[plugins.'io.containerd.grpc.v1.cri']\n  sandbox_image = 'p:1'\n"
        "[plugins.'io.containerd.grpc.v1.cri'.registry]\n  config_path = '/etc/certs.d'\n"
        "[plugins.'io.containerd.internal.v1.opt']\n  path = '/opt'\n"
    )
    (tmp_path / "drop-in.toml").write_text(
        "version = 2\n[plugins.'io.containerd.grpc.v1.cri']\n  max_concurrent_downloads = 8\n"
    )
    old, _ = load(tmp_path / "config.toml", "1.7.24")
    assert old["plugins"]["io.containerd.grpc.v1.cri"] == {"max_concurrent_downloads": 8}
    assert old["plugins"]["io.containerd.internal.v1.opt"] == {"path": "/opt"}
    new, _ = load(tmp_path / "config.toml", "2.1.9")
    cri = new["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["sandbox_image"] == "p:1" and cri["max_concurrent_downloads"] == 8


def test_a_config_that_cannot_be_read_or_parsed_is_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read containerd's config"):
        load(tmp_path / "absent.toml")
    broken = tmp_path / "config.toml"
    broken.write_text("version = 3\n[plugins\n")
    with pytest.raises(ConfigError) as caught:
        load(broken)
    assert caught.value.line == 2 and str(caught.value).startswith(f"{broken}:2: ")
    broken.write_text('imports = "conf.d"\n')
    with pytest.raises(ConfigError, match="'imports' must be a list"):
        load(broken)


def test_a_file_without_a_version_is_read_as_version_1() -> None:
    config = {"plugins": {"cri": {"containerd": {"snapshotter": "native"}}}}
    found = diagnose("1.6.20~ds1", config, "f")
    assert found.settings["plugins.'cri'.containerd.snapshotter"] == "native"
    assert not any("image_pull_progress_timeout" in s for s in found.settings), "not in 1.6"


def test_the_advice_is_said_as_an_operator_applies_it() -> None:
    tuned = v3(transfer={"max_concurrent_downloads": 16, "concurrent_layer_fetch_buffer": 8 << 20})
    assert plan(diagnose("2.1.9", tuned, "f"), "/etc/containerd/config.toml", []) is None
    drop_in = plan(diagnose("2.1.9", None, None), None, [])
    assert drop_in is not None and drop_in.drop_in is not None and not drop_in.remove
    assert drop_in.drop_in_path == "/etc/containerd/conf.d/50-prepull.toml"
    parsed = tomllib.loads(drop_in.drop_in)
    assert parsed["plugins"]["io.containerd.transfer.v1.local"] == TRANSFER_ADVICE.settings
    assert "restart containerd" in drop_in.text()
    in_place = plan(diagnose("1.7.24", {"version": 2}, "f"), "/etc/containerd/config.toml", [])
    assert in_place is not None and in_place.in_main_file is not None and in_place.drop_in is None
    assert "not a drop-in" in in_place.text()
    assert tomllib.loads(in_place.in_main_file)["plugins"]["io.containerd.grpc.v1.cri"] == (
        CRI_ADVICE.settings
    )


def test_one_round_a_forcing_setting_and_the_measured_advice_together() -> None:
    """With a setting that forces the old path, the plan removes it and brings the advice for
    the transfer service at once, with the imports line the main file lacks."""
    forced = diagnose("2.1.9", v3({"max_concurrent_downloads": 5}), "/n/config.toml")
    found = plan(forced, "/n/config.toml", ["/etc/other.toml"])
    assert found is not None
    assert found.remove == (f"{IMAGES}.max_concurrent_downloads",)
    assert found.drop_in_path == "/n/conf.d/50-prepull.toml" and found.drop_in is not None
    assert found.imports == 'imports = ["/etc/other.toml", "/n/conf.d/*.toml"]'
    text = found.text()
    assert text.index("remove") < text.index("imports =") < text.index("[plugins.")
    covered = plan(forced, "/n/config.toml", ["/n/conf.d/*.toml"])
    assert covered is not None and covered.imports is None, "already imported: said nothing"
    relative = plan(forced, "/n/config.toml", ["conf.d/*.toml"])
    assert relative is not None and relative.imports is not None, "a relative glob is from /"


def test_a_config_edited_after_containerd_started_is_said_to_need_a_restart() -> None:
    assert stale_config(100.0, 200.0, "f") is None
    assert stale_config(None, 200.0, "f") is None
    found = stale_config(300.0, 200.0, "/etc/containerd/config.toml")
    assert found is not None and found.recommended == "restart containerd"
    assert "edited, not applied" in found.why


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("a = " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
        ('imports = ["/etc/containerd/conf.d/\\u0000x.toml"]\n', "holds a NUL byte"),
    ],
)
def test_a_config_too_deep_or_importing_a_nul_path_is_bad_input_naming_the_file(
    tmp_path: Path, text: str, said: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=said) as raised:
        load(path)
    assert str(path) in str(raised.value)
