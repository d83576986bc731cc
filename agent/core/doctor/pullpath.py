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
from collections.abc import Callable, Mapping, Sequence
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
PROGRESS_TIMEOUT_FROM: Version = (1, 7, 0)
"""CRI's `image_pull_progress_timeout` exists from this release (1.6 has none)."""
UNPACKS_FROM: Version = (2, 2, 0)
"""`max_concurrent_unpacks` exists from this release."""
NOT_SET = object()


@dataclasses.dataclass(frozen=True)
class Advice:
    """Settings `make bench` (bench/pullpath.py) measured against containerd's defaults, and
    what it measured: the pull time of 4 random layers of 64 MiB as a ratio of the default's."""

    settings: Mapping[str, object]
    capped: float
    """Through a link that caps each connection at 20 MB/s, as registries and CDNs do."""
    loopback: float
    """With the registry on the node: no link to wait for."""
    measured: str


# Measured by `make bench` (section pullpath, median of 3, 2 cores, overlayfs), twice each on
# 2026-12-05; each figure is the slower of the two runs.
TRANSFER_ADVICE = Advice(
    {"max_concurrent_downloads": 8, "concurrent_layer_fetch_buffer": 8 << 20},
    capped=0.39,
    loopback=1.12,
    measured="containerd 2.1.9",
)
"""For the transfer service (2.1+), when every registry of the list honours Range."""
TRANSFER_ADVICE_WITHOUT_RANGE = Advice(
    {"max_concurrent_downloads": 8}, capped=0.62, loopback=1.04, measured="containerd 2.1.9"
)
"""For the transfer service when a registry ignores Range: no chunked fetch."""
CRI_ADVICE = Advice(
    {"max_concurrent_downloads": 8},
    capped=0.73,
    loopback=1.21,
    measured="containerd 1.6.20 and 1.7.24, the slower of the two",
)
"""For the CRI plugin's own pull path (before 2.1)."""


@dataclasses.dataclass(frozen=True)
class Finding:
    setting: str
    """`<TOML table>.<key>`, the table named as containerd's config names it."""
    current: object
    recommended: object | None
    """None: nothing to change, only to know."""
    why: str
    impact: str
    tuning: bool = False
    """A measured speed-up, not a trap: the node pulls correctly without it."""

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

    @property
    def traps(self) -> bool:
        """A finding recommends a change that is not only tuning."""
        return any(f.recommended is not None and not f.tuning for f in self.findings)

    def to_json(self) -> dict[str, object]:
        return {
            "containerd": self.version,
            "config": self.config,
            "pull_path": "transfer service" if self.transfer_service else "CRI (old path)",
            "forced_by": list(self.forced_by),
            "settings": self.settings,
            "findings": [f.to_json() for f in self.findings],
        }


def diagnose(
    version: str,
    config: Mapping[str, Any] | None,
    source: str | None,
    ignore_range: Sequence[str] = (),
    decompressor: str | None = None,
) -> Diagnosis:
    """What containerd `version` does for CRI pulls with `config` (its merged config file, None
    when it has none: its defaults), and what to change. `ignore_range`: the list's registries
    seen answering a Range request with the whole blob (chunked fetch is unsafe with them).
    `decompressor`: what containerd inflates gzip with, when it could be seen."""
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
    if forced:
        # One round: the measured advice as it applies once the forcing settings are gone.
        after = _transfer_settings(_table(document, TRANSFER), parsed)
        advice = TRANSFER_ADVICE_WITHOUT_RANGE if ignore_range else TRANSFER_ADVICE
        findings += [
            dataclasses.replace(f, why=f"{f.why}; once the settings above are removed")
            for f in _tuning(TRANSFER, after, advice, ignore_range)
        ]
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
    if parsed >= PROGRESS_TIMEOUT_FROM:
        # CRI cancels a pull when no byte arrives for this long (`containerd config default`).
        timeout = _get(images, "image_pull_progress_timeout")
        settings[f"{images_table}.image_pull_progress_timeout"] = (
            "5m0s" if timeout is NOT_SET else timeout
        )
    if transfer:
        transfer_table = _table(document, TRANSFER)
        settings.update(_transfer_settings(transfer_table, parsed))
        findings += _transfer_findings(transfer_table, snapshotter, ignore_range)
        advice = TRANSFER_ADVICE_WITHOUT_RANGE if ignore_range else TRANSFER_ADVICE
        findings += _tuning(TRANSFER, settings, advice, ignore_range)
    else:
        downloads = _get(images, "max_concurrent_downloads")
        settings[f"{images_table}.max_concurrent_downloads"] = (
            3 if downloads is NOT_SET else downloads
        )
        if not new_enough:
            findings += _tuning(images_table, settings, CRI_ADVICE, ())
    if decompressor is not None:
        findings.append(decompressor_finding(decompressor))
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


def _tuning(
    table: str, settings: Mapping[str, object], advice: Advice, ignore_range: Sequence[str]
) -> list[Finding]:
    """The advised settings this node has below the advice, each quoting what was measured."""
    findings = []
    for key, advised in advice.settings.items():
        current = settings.get(f"{table}.{key}", TRANSFER_DEFAULTS.get(key))
        if not isinstance(current, int) or not isinstance(advised, int) or current >= advised:
            continue
        why = (
            f"measured ({advice.measured}, the project's bench): a 256 MiB image of 4 layers "
            f"pulls in {advice.capped:.2f}x the default time through a link that caps each "
            f"connection at 20 MB/s, as registries and CDNs do, and {advice.loopback:.2f}x "
            f"with the registry on the node, with {_advised(advice)}"
        )
        if ignore_range:
            why += f"; no chunked fetch: {', '.join(ignore_range)} ignores Range"
        if table != TRANSFER:
            why += (
                f"; on containerd {_dotted(TRANSFER_FOR_CRI_FROM)}+ this CRI setting sends CRI "
                f"pulls down the old path: move it to {TRANSFER} when upgrading"
            )
        findings.append(
            Finding(
                f"{table}.{key}",
                current,
                advised,
                why,
                "pulls through a per-connection cap take longer than the node's link allows",
                tuning=True,
            )
        )
    return findings


def _advised(advice: Advice) -> str:
    return ", ".join(f"{key} = {value}" for key, value in advice.settings.items())


def _transfer_findings(
    table: Mapping[str, Any], snapshotter: object, ignore_range: Sequence[str]
) -> list[Finding]:
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
        ignored = f": {', '.join(ignore_range)} ignores Range" if ignore_range else ""
        findings.append(
            Finding(
                f"{TRANSFER}.concurrent_layer_fetch_buffer",
                buffer,
                0 if ignore_range else None,
                f"each layer is fetched in parallel chunks with HTTP Range requests{ignored}",
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


IGZIP_FROM: Version = (2, 0, 0)
"""containerd uses igzip from this release; unpigz before it too."""
_GO_TRUE = {"1", "t", "T", "TRUE", "true", "True"}  # Go's strconv.ParseBool


def decompressor(
    version: str, environment: Mapping[str, str], on_path: Callable[[str], str | None]
) -> str:
    """The gzip decompressor containerd `version` uses, as containerd picks it (containerd
    pkg/archive/compression: gzipDecompress): igzip (2.0+), then unpigz, when found on its PATH
    and not turned off by CONTAINERD_DISABLE_IGZIP / CONTAINERD_DISABLE_PIGZ; else Go's gzip.
    `on_path(name)`: where containerd's PATH finds `name`, None if nowhere."""
    parsed = parse_version(version) or (0, 0, 0)
    tools = [("unpigz", "CONTAINERD_DISABLE_PIGZ")]
    if parsed >= IGZIP_FROM:
        tools.insert(0, ("igzip", "CONTAINERD_DISABLE_IGZIP"))
    for tool, switch in tools:
        if environment.get(switch, "") in _GO_TRUE:
            continue
        found = on_path(tool)
        if found is not None:
            return f"{tool} ({found})"
    return "Go's gzip (one core)"


def decompressor_finding(used: str) -> Finding:
    return Finding(
        "containerd's gzip decompressor",
        used,
        None,
        "containerd inflates gzip layers with igzip (2.0+) or unpigz when its PATH has them "
        "(CONTAINERD_DISABLE_IGZIP=1 / CONTAINERD_DISABLE_PIGZ=1 in its environment turn them "
        "off), else with Go's gzip on one core",
        "inflating is part of every pull of a gzip layer; on loopback it is most of it",
    )
