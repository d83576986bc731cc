"""The preload-list file: YAML with line numbers, validated into frozen dataclasses; locks."""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import yaml

from agent.core import files
from agent.core.errors import ConfigError, InvalidPlatform, InvalidReference
from agent.core.images import platform as platforms
from agent.core.images import reference as references
from agent.core.images.platform import Platform
from agent.core.images.reference import Reference
from agent.core.lists import yamlsafe

T = TypeVar("T")

# Parallel pulls when the list does not say: measured (README, Performance; bench.cold).
DEFAULT_CONCURRENCY = 8
MAX_CONCURRENCY = 64
DEFAULT_RESYNC_SECONDS = 300.0
# Below kubelet's image GC threshold (imageGCHighThresholdPercent, 85 by default): preloading
# must never be what makes kubelet delete images.
DEFAULT_DISK_BUDGET = 80.0
MAX_RESYNC_SECONDS = 7 * 24 * 3600.0
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class Kind(StrEnum):
    TAG = "tag"
    """`name:tag`: follows the tag."""
    PINNED = "pinned"
    """`name:tag@digest`: the digest, with the tag bound to it on the node."""
    DIGEST = "digest"
    """`name@digest`: the digest only."""


@dataclass(frozen=True, init=False)
class ImageEntry:
    reference: Reference
    written: str
    """The reference as the operator wrote it: what pods use and what we print."""
    line: int
    platforms: tuple[Platform, ...] = ()
    """Only nodes of these platforms preload the image; empty means every node."""
    kind: Kind = field(init=False, repr=False, compare=False)
    has_tag: bool = field(init=False, repr=False, compare=False)
    """Whether the operator wrote a tag (a bare `name` means `name:latest` to kubelet)."""
    _hash: int = field(init=False, repr=False, compare=False)

    def __init__(
        self, reference: Reference, written: str, line: int, platforms: tuple[Platform, ...] = ()
    ) -> None:
        # Kind, has_tag and the hash are computed once, written straight into the instance (as
        # images.reference.Reference does): lists run to thousands of entries, each asked often.
        has_tag = written_tag(written) or "@" not in written
        if reference.digest is None:
            kind = Kind.TAG
        elif has_tag:
            kind = Kind.PINNED
        else:
            kind = Kind.DIGEST
        vars(self).update(
            reference=reference,
            written=written,
            line=line,
            platforms=platforms,
            kind=kind,
            has_tag=has_tag,
            _hash=hash((reference, written, line, platforms)),
        )

    def __hash__(self) -> int:
        return self._hash

    def applies_to(self, node: Platform) -> bool:
        return not self.platforms or node in self.platforms


@dataclass(frozen=True)
class RegistrySettings:
    insecure: bool = False
    """Speak plain HTTP: for in-cluster or test registries without TLS."""
    ca: str | None = None
    """A PEM file of CA certificates to trust for this registry."""
    mirrors: tuple[str, ...] = ()
    """Mirror URLs tried in order before the registry itself; a failing mirror is skipped."""
    concurrency: int | None = None
    """Requests in flight to this registry at once, on top of the node's pull concurrency."""


@dataclass(frozen=True)
class PreloadConfig:
    source: str
    images: tuple[ImageEntry, ...]
    registries: Mapping[str, RegistrySettings] = field(default_factory=lambda: MappingProxyType({}))
    concurrency: int = DEFAULT_CONCURRENCY
    """Parallel pulls on one node: pulls compete for the node's disk and network."""
    resync_seconds: float = DEFAULT_RESYNC_SECONDS
    """How often daemon mode converges again."""
    credentials: tuple[str, ...] = ()
    """dockerconfigjson files (imagePullSecret keys, a node's config.json); relative paths are
    relative to this config file."""
    pin: bool = True
    """Label preloaded images io.cri-containerd.pinned so kubelet's image GC keeps them: a
    preloaded image nobody has run yet is otherwise the first one GC evicts."""
    max_disk_usage_percent: float = DEFAULT_DISK_BUDGET
    """No pull may take the image filesystem past this (core.engine.disk); 100 turns it off."""
    rollout_spread: float = 0.0
    """Seconds over which a fleet's daemons spread the pulls of new content (engine.rollout)."""
    rollout_spread_first_fill: bool = False
    """Spread a new node's first fill too (by default it pulls its whole list at once)."""

    def registry(self, host: str) -> RegistrySettings:
        settings = self.registries.get(host, RegistrySettings())
        if settings.ca and not Path(settings.ca).is_absolute():
            # Relative to the config file, like credentials.
            return dataclasses.replace(settings, ca=str(Path(self.source).parent / settings.ca))
        return settings

    def credential_paths(self) -> tuple[Path, ...]:
        base = Path(self.source).parent
        return tuple(base / p for p in self.credentials)


_TOP_KEYS = (
    "images",
    "registries",
    "credentials",
    "concurrency",
    "resync",
    "pin",
    "maxDiskUsagePercent",
    "rollout",
)
_ROLLOUT_KEYS = ("spread", "spreadFirstFill")
_IMAGE_KEYS = ("image", "platforms")
_REGISTRY_KEYS = ("insecure", "ca", "mirrors", "concurrency")


def load(path: str | Path) -> PreloadConfig:
    try:
        text = files.read_text(path)
    except files.UnreadableFile as exc:
        raise ConfigError(str(path), None, f"cannot read the preload list: {exc}") from exc
    return parse(text, str(path))


def parse(text: str, source: str = "<config>") -> PreloadConfig:
    root = yamlsafe.compose(text, source)
    try:
        return _Parser(source).config(root)
    except RecursionError:
        raise ConfigError(
            source, None, "nested too deeply"
        ) from None  # a nesting bomb's traceback says nothing more


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[ConfigError] = []
        """Every problem found so far: a list is fixed in one go, not one error per run."""

    def attempt(self, build: Callable[[], T], fallback: T) -> T:
        """`build()`, or `fallback` with its problem kept, to read on past it."""
        try:
            return build()
        except ConfigError as exc:
            self.problems.append(exc)
            return fallback

    def error(self, node: yaml.Node, message: str) -> ConfigError:
        return ConfigError(self.source, node.start_mark.line + 1, message)

    def mapping(self, node: yaml.Node, what: str, allowed: tuple[str, ...]) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, f"{what} must be a mapping")
        result: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                self.problems.append(self.error(key_node, f"{what}: keys must be strings"))
            elif key in result:
                self.problems.append(self.error(key_node, f"{what}: duplicate key {key!r}"))
            elif allowed and key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = (
                    f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(allowed)})"
                )
                self.problems.append(self.error(key_node, f"unknown key {key!r} in {what}{hint}"))
            else:
                result[key] = value_node
        return result

    def scalar(self, node: yaml.Node, what: str) -> Any:
        """The value YAML gives a scalar; a value YAML cannot build (`2024-02-30`, `!!int x`)
        is this line's error."""
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(node, f"{what} must be a single value")
        try:
            return yaml.SafeLoader(yaml.serialize(node)).get_single_data()
        except Exception as exc:  # PyYAML's constructors raise many kinds (fuzzing found
            # ValueError, TypeError, AttributeError): any of them means "not a valid value".
            reason = getattr(exc, "problem", None) or str(exc) or type(exc).__name__
            raise self.error(
                node, f"{what}: {node.value!r} is not a valid value ({reason})"
            ) from exc

    def text(self, node: yaml.Node, what: str) -> str:
        """A scalar exactly as written: `- 0` or `- 1.25` name images, not numbers."""
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(node, f"{what} must be a single value")
        return str(node.value)

    def config(self, root: yaml.Node | None) -> PreloadConfig:
        if root is None:
            raise ConfigError(self.source, None, "the preload list is empty; expected 'images:'")
        top = self.mapping(root, "the preload list", _TOP_KEYS)
        images: tuple[ImageEntry, ...] = ()
        if "images" in top:
            images = self.attempt(lambda: self.images(top["images"]), ())
        else:
            self.problems.append(
                self.error(root, "missing 'images:' (the list of images to preload)")
            )
        registries: dict[str, RegistrySettings] = self.attempt(
            lambda: self.registries(top.get("registries")), {}
        )
        concurrency = self.attempt(lambda: self.concurrency(top.get("concurrency")), 1)
        resync = self.attempt(lambda: self.resync(top.get("resync")), 0.0)
        pin = self.attempt(lambda: self.boolean(top.get("pin"), "'pin'", default=True), True)
        credentials: tuple[str, ...] = self.attempt(lambda: self.paths(top.get("credentials")), ())
        budget = self.attempt(lambda: self.percent(top.get("maxDiskUsagePercent")), 100.0)
        rollout: dict[str, Any] = self.attempt(lambda: self.rollout(top.get("rollout")), {})
        if self.problems:
            raise ConfigError.of(self.problems)
        return PreloadConfig(
            source=self.source,
            images=images,
            registries=MappingProxyType(registries),
            concurrency=concurrency,
            resync_seconds=resync,
            pin=pin,
            credentials=credentials,
            max_disk_usage_percent=budget,
            **rollout,
        )

    def paths(self, node: yaml.Node | None) -> tuple[str, ...]:
        if node is None:
            return ()
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(node, "'credentials' must be a list of dockerconfigjson file paths")
        paths = tuple(self.text(item, "a credentials file") for item in node.value)
        for item, path in zip(node.value, paths, strict=True):
            if not path.strip():
                raise self.error(item, "a credentials file path is empty")
        return paths

    def images(self, node: yaml.Node) -> tuple[ImageEntry, ...]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(node, "'images' must be a list")
        entries: list[ImageEntry] = []
        seen: dict[Reference, ImageEntry] = {}
        pins: dict[str, ImageEntry] = {}
        for item in node.value:
            try:
                entry = self.image(item)
            except ConfigError as exc:
                self.problems.append(exc)
                continue
            ref = entry.reference
            if ref in seen:
                first = seen[ref].line
                self.problems.append(
                    self.error(item, f"{entry.written!r} is listed twice (first at line {first})")
                )
                continue
            if ref.tag is not None and entry.has_tag:
                other = pins.get(ref.tagged)
                if other is not None and other.reference.digest != ref.digest:
                    self.problems.append(
                        self.error(
                            item,
                            f"{entry.written!r} binds tag {ref.tagged} to other content than "
                            f"line {other.line}; a tag can name one image on a node",
                        )
                    )
                    continue
                pins[ref.tagged] = entry
            seen[ref] = entry
            entries.append(entry)
        return tuple(entries)

    def image(self, node: yaml.Node) -> ImageEntry:
        line = node.start_mark.line + 1
        platform_list: tuple[Platform, ...] = ()
        if isinstance(node, yaml.MappingNode):
            fields = self.mapping(node, "an image entry", _IMAGE_KEYS)
            if "image" not in fields:
                raise self.error(node, "an image entry needs 'image: <reference>'")
            written = self.text(fields["image"], "'image'")
            if "platforms" in fields:
                platform_list = self.platform_list(fields["platforms"])
        else:
            written = self.text(node, "an image")
        try:
            ref = references.parse(written)
        except InvalidReference as exc:
            raise self.error(node, str(exc)) from exc
        return ImageEntry(ref, written, line, platform_list)

    def platform_list(self, node: yaml.Node) -> tuple[Platform, ...]:
        if not isinstance(node, yaml.SequenceNode) or not node.value:
            raise self.error(node, "'platforms' must be a non-empty list such as [linux/amd64]")
        result = []
        for item in node.value:
            try:
                result.append(platforms.parse(self.text(item, "a platform")))
            except InvalidPlatform as exc:
                raise self.error(item, str(exc)) from exc
        return tuple(result)

    def registries(self, node: yaml.Node | None) -> dict[str, RegistrySettings]:
        if node is None:
            return {}
        result = {}
        for host, value in self.mapping(node, "'registries'", ()).items():
            fields = self.mapping(value, f"registry {host!r}", _REGISTRY_KEYS)
            insecure = self.boolean(fields.get("insecure"), "'insecure'", default=False)
            ca = self.text(fields["ca"], "'ca'") if "ca" in fields else None
            mirrors: tuple[str, ...] = ()
            if "mirrors" in fields:
                node_ = fields["mirrors"]
                if not isinstance(node_, yaml.SequenceNode):
                    raise self.error(node_, "'mirrors' must be a list of URLs")
                mirrors = tuple(self.text(m, "a mirror") for m in node_.value)
            limit = self.concurrency(fields["concurrency"]) if "concurrency" in fields else None
            result[host] = RegistrySettings(insecure, ca, mirrors, limit)
        return result

    def boolean(self, node: yaml.Node | None, what: str, *, default: bool) -> bool:
        if node is None:
            return default
        value = self.scalar(node, what)
        if not isinstance(value, bool):
            raise self.error(node, f"{what} must be true or false")
        return value

    def concurrency(self, node: yaml.Node | None) -> int:
        if node is None:
            return DEFAULT_CONCURRENCY
        value = self.scalar(node, "'concurrency'")
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not 1 <= value <= MAX_CONCURRENCY
        ):
            raise self.error(
                node, f"'concurrency' must be a whole number from 1 to {MAX_CONCURRENCY}"
            )
        return value

    def percent(self, node: yaml.Node | None) -> float:
        if node is None:
            return DEFAULT_DISK_BUDGET
        value = self.scalar(node, "'maxDiskUsagePercent'")
        if isinstance(value, bool) or not isinstance(value, int | float) or not 1 <= value <= 100:
            raise self.error(
                node,
                "'maxDiskUsagePercent' must be a number from 1 to 100 (100: no budget), "
                f"not {value!r}",
            )
        return float(value)

    def rollout(self, node: yaml.Node | None) -> dict[str, Any]:
        """`rollout:` as PreloadConfig's fields: the spread in seconds, and whether a first
        fill is spread too."""
        if node is None:
            return {}
        fields = self.mapping(node, "'rollout'", _ROLLOUT_KEYS)
        first_fill = self.boolean(
            fields.get("spreadFirstFill"), "'rollout.spreadFirstFill'", default=False
        )
        spread = fields.get("spread")
        if spread is None:
            return {"rollout_spread_first_fill": first_fill}
        value = self.scalar(spread, "'rollout.spread'")
        seconds = parse_duration(value)
        if seconds is None or not 0 <= seconds <= MAX_RESYNC_SECONDS:
            raise self.error(
                spread,
                f"'rollout.spread' must be a duration from 0s to 7 days, like 30m, not {value!r}",
            )
        return {"rollout_spread": seconds, "rollout_spread_first_fill": first_fill}

    def resync(self, node: yaml.Node | None) -> float:
        if node is None:
            return DEFAULT_RESYNC_SECONDS
        value = self.scalar(node, "'resync'")
        seconds = parse_duration(value)
        if seconds is None or not 1 <= seconds <= MAX_RESYNC_SECONDS:
            raise self.error(
                node,
                f"'resync' must be a duration from 1s to 7 days, like 5m or 90s, not {value!r}",
            )
        return seconds


def parse_duration(value: object) -> float | None:
    """`5m`, `90s`, `1h30m` or a number of seconds; None if it is none of those."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = float(value)
        return seconds if math.isfinite(seconds) else None
    if not isinstance(value, str) or not value:
        return None
    parts = _DURATION_PART.findall(value)
    if "".join(n + u for n, u in parts) != value:
        return None
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)


def format_duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


def written_tag(written: str) -> bool:
    """Whether the reference as written names a tag (`app:1`, `host:5000/app:1`)."""
    name = written.partition("@")[0]
    return name.rfind(":") > name.rfind("/")
