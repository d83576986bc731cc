"""How this node's containerd pulls for CRI, read from its version and its config: which pull
path (the transfer service, or the CRI plugin's own older one), which setting forced the old one,
and the settings that bound a pull. Pure: `prepull-agent doctor` reads the inputs.

Facts (containerd docs/cri/config.md and plugins/transfer; each checked against containerd 2.1,
whose log then says "Found '<Setting>' in CRI config which is incompatible with transfer service
... Falling back to local image pull mode"):
- from 2.1, CRI pulls go through the transfer service unless the CRI images config sets one of
  FORCING below; before 2.1 they never do;
- the transfer service unpacks only onto the snapshotters its `unpack_config` names (by default
  overlayfs): with another CRI snapshotter, pulls fail ("no unpack platforms defined")."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from agent.core.runtimes import Version, parse_version

TRANSFER = "plugins.'io.containerd.transfer.v1.local'"
CRI_IMAGES = {
    3: "plugins.'io.containerd.cri.v1.images'",
    2: "plugins.'io.containerd.grpc.v1.cri'",
    1: "plugins.'cri'",
}
"""The CRI plugin's image settings, per config `version` (a file without one is version 1;
2.x reads all three)."""
TRANSFER_FOR_CRI_FROM: Version = (2, 1, 0)
# CRI image settings that send CRI pulls down the old path: key (under the CRI images table;
# version 2 files keep the first two under `.containerd`), the value that does it, containerd's
# default. A registry table counts when it names anything.
FORCING: tuple[tuple[str, object, object], ...] = (
    ("disable_snapshot_annotations", False, True),
    ("discard_unpacked_layers", True, False),
    ("max_concurrent_downloads", "not 3", 3),
    ("image_pull_with_sync_fs", True, False),
    ("registry.mirrors", "any", "unset"),
    ("registry.configs", "any", "unset"),
    ("registry.auths", "any", "unset"),
)
_UNDER_CONTAINERD = {"disable_snapshot_annotations", "discard_unpacked_layers", "snapshotter"}
TRANSFER_DEFAULTS = {
    "max_concurrent_downloads": 3,
    "concurrent_layer_fetch_buffer": 0,
    "max_concurrent_unpacks": 1,
}
"""containerd's defaults for the transfer service settings that bound a pull."""
UNPACKS_FROM: Version = (2, 2, 0)
"""`max_concurrent_unpacks` exists from this release."""
NOT_SET = object()


@dataclasses.dataclass(frozen=True)
class Finding:
    setting: str
    """`<TOML table>.<key>`, the table named as containerd's config names it."""
    current: object
    recommended: object | None
    """None: nothing to change, only to know."""
    why: str
    impact: str

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Diagnosis:
    version: str
    config: str | None
    """Where the settings were read ("containerd's defaults" when there is no file)."""
    transfer_service: bool
    """CRI pulls go through the transfer service."""
    forced_by: tuple[str, ...]
    settings: dict[str, object]
    """What bounds a pull, as containerd will apply it: setting → effective value."""
    findings: tuple[Finding, ...]

    @property
    def actionable(self) -> bool:
        return any(f.recommended is not None for f in self.findings)

    def to_json(self) -> dict[str, object]:
        return {
            "containerd": self.version,
            "config": self.config,
            "pull_path": "transfer service" if self.transfer_service else "CRI (old path)",
            "forced_by": list(self.forced_by),
            "settings": self.settings,
            "findings": [f.to_json() for f in self.findings],
        }


def diagnose(version: str, config: Mapping[str, Any] | None, source: str | None) -> Diagnosis:
    """What containerd `version` does for CRI pulls with `config` (its merged config file, None
    when it has none: its defaults)."""
    document = config or {}
    parsed = parse_version(version) or (0, 0, 0)
    layout = _layout(config, parsed)
    images_table = CRI_IMAGES[layout]
    images = _table(document, images_table)
    findings: list[Finding] = []
    forced: list[str] = []
    new_enough = parsed >= TRANSFER_FOR_CRI_FROM
    for key, _, default in FORCING if new_enough else ():
        where = f"containerd.{key}" if layout < 3 and key in _UNDER_CONTAINERD else key
        current = _get(images, where)
        if current is NOT_SET or not _forces(key, current):
            continue
        setting = f"{images_table}.{where}"
        forced.append(setting)
        findings.append(_forcing_finding(setting, key, current, default))
    transfer = new_enough and not forced
    if not new_enough:
        findings.append(
            Finding(
                "containerd",
                version,
                None,
                f"containerd before {_dotted(TRANSFER_FOR_CRI_FROM)} pulls for CRI without its "
                f"transfer service: {TRANSFER} settings do not apply to CRI pulls",
                "the CRI plugin's own max_concurrent_downloads bounds pulls",
            )
        )
    snapshotter_key = "containerd.snapshotter" if layout < 3 else "snapshotter"
    snapshotter = _get(images, snapshotter_key)
    snapshotter = "overlayfs" if snapshotter is NOT_SET else snapshotter
    settings: dict[str, object] = {f"{images_table}.{snapshotter_key}": snapshotter}
    if transfer:
        settings.update(_transfer_settings(_table(document, TRANSFER), parsed))
        findings += _transfer_findings(_table(document, TRANSFER), snapshotter)
    else:
        downloads = _get(images, "max_concurrent_downloads")
        settings[f"{images_table}.max_concurrent_downloads"] = (
            3 if downloads is NOT_SET else downloads
        )
    return Diagnosis(
        version,
        source or "containerd's defaults (no config file)",
        transfer,
        tuple(forced),
        settings,
        tuple(findings),
    )


def _layout(config: Mapping[str, Any] | None, version: Version) -> int:
    """The config's `version`: what the file says, else 1 for a file (containerd's rule), else
    what this containerd writes by default (3 from 2.0)."""
    if config is None:
        return 3 if version >= (2, 0, 0) else 2
    stated = config.get("version", 1)
    return stated if stated in CRI_IMAGES else 2


def _forcing_finding(setting: str, key: str, current: object, default: object) -> Finding:
    if key == "max_concurrent_downloads":
        recommended: object = f"unset (set {TRANSFER}.max_concurrent_downloads instead)"
    elif key.startswith("registry."):
        recommended = "unset (use registry.config_path and hosts.toml)"
    else:
        recommended = default
    return Finding(
        setting,
        current,
        recommended,
        "this CRI setting sends every CRI pull down containerd's old pull path instead of the "
        "transfer service (containerd logs 'Falling back to local image pull mode' at start)",
        f"the transfer service and its settings ({TRANSFER}) do not apply to CRI pulls",
    )


def _transfer_settings(table: Mapping[str, Any], version: Version) -> dict[str, object]:
    settings: dict[str, object] = {}
    for key, default in TRANSFER_DEFAULTS.items():
        if key == "max_concurrent_unpacks" and version < UNPACKS_FROM:
            continue
        value = table.get(key, default)
        settings[f"{TRANSFER}.{key}"] = value
    return settings


def _transfer_findings(table: Mapping[str, Any], snapshotter: object) -> list[Finding]:
    findings = []
    unpacks = table.get("unpack_config")
    named = {u.get("snapshotter") for u in unpacks if isinstance(u, dict)} if unpacks else set()
    if snapshotter != "overlayfs" and snapshotter not in named:
        findings.append(
            Finding(
                f"{TRANSFER}.unpack_config",
                sorted(str(n) for n in named) or "unset (overlayfs only)",
                f"an entry with snapshotter = {snapshotter!r} for this node's platform",
                f"the transfer service unpacks only onto the snapshotters its unpack_config "
                f"names; the CRI plugin uses {snapshotter!r}",
                "CRI pulls fail: 'unable to initialize unpacker: no unpack platforms defined'",
            )
        )
    buffer = table.get("concurrent_layer_fetch_buffer", 0)
    if isinstance(buffer, int) and buffer > 512:
        findings.append(
            Finding(
                f"{TRANSFER}.concurrent_layer_fetch_buffer",
                buffer,
                None,
                "each layer is fetched in parallel chunks with HTTP Range requests",
                "pulls hang or fail from registries and proxies that mishandle Range",
            )
        )
    return findings


def _forces(key: str, value: object) -> bool:
    if key.startswith("registry."):
        return bool(value)
    if key == "max_concurrent_downloads":
        return value != 3
    bad = {k: b for k, b, _ in FORCING}[key]
    return value == bad


def _table(document: Mapping[str, Any], dotted: str) -> Mapping[str, Any]:
    """The table `plugins.'<id>'` of a parsed containerd config ({} if absent)."""
    plugin_id = dotted.split("'")[1]
    plugins = document.get("plugins")
    found = plugins.get(plugin_id) if isinstance(plugins, dict) else None
    return found if isinstance(found, dict) else {}


def _get(table: Mapping[str, Any], dotted: str) -> object:
    value: object = table
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return NOT_SET
        value = value[part]
    return value


def _dotted(version: Version) -> str:
    return ".".join(str(n) for n in version[:2])
