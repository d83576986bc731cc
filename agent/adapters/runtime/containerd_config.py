"""containerd's config file as containerd reads it: the file, then the files its `imports` name
(and theirs: containerd follows imports to any depth, each file once), each merged over what
came before (containerd services/server/config/config.go: LoadConfig, mergeConfig). Only read,
never written.

How a merge treats a plugin's table depends on the release, checked with `containerd config
dump` on each line: 1.6 and 1.7 replace the whole `plugins.'<id>'` table with the imported one (a
drop-in that sets one CRI key drops the rest of the main file's CRI table); 2.x merges key by
key."""

from __future__ import annotations

import glob
import os
import re
import tomllib
from pathlib import Path
from typing import Any

from agent.core import files
from agent.core.defaults import CONTAINERD_CONFIG
from agent.core.errors import ConfigError, InputError
from agent.core.runtimes import parse_version

DEFAULT_PATH = CONTAINERD_CONFIG
MAX_FILES = 64
"""Files read at most: imports that reach more are a mistake, not a config."""
# The tables containerd before 2.0 replaces whole when an imported file names them.
_REPLACED_WHOLE = ("plugins", "stream_processors", "proxy_plugins", "timeouts")
# containerd resolves a relative glob against its own working directory: / under systemd.
_CONTAINERD_CWD = Path("/")
_LINE = re.compile(r"\(at line (\d+), column \d+\)")


def replaces_plugin_tables(version: str) -> bool:
    """Whether containerd `version` replaces a plugin's whole table with an imported one."""
    parsed = parse_version(version)
    return parsed is not None and parsed < (2, 0, 0)


def effective(path: Path | None, version: str = "2") -> tuple[dict[str, Any] | None, list[str]]:
    """The config containerd `version` runs with and the files it came from, the main one
    first: `path` (which must exist), else the default file, else (None, []): containerd then
    runs on its defaults."""
    if path is None:
        if not DEFAULT_PATH.exists():
            return None, []
        path = DEFAULT_PATH
    return load(path, version)


def source_of(files: list[str]) -> str | None:
    """Where the settings were read, as the doctor says it (None: containerd's defaults)."""
    return " + ".join(files) or None


def load(path: Path, version: str = "2") -> tuple[dict[str, Any], list[str]]:
    """The merged config and the files it came from, in the order merged; InputError naming
    the file (and line) that cannot be read or parsed."""
    whole = replaces_plugin_tables(version)
    document: dict[str, Any] = {}
    read: list[str] = []
    pending = [path]
    while pending:
        current, pending = pending[0], pending[1:]
        if str(current) in read:
            continue  # containerd reads each file once: imports may form a cycle
        if len(read) >= MAX_FILES:
            raise ConfigError(str(path), None, f"imports reach more than {MAX_FILES} files")
        parsed = _parse(current)
        imports = parsed.pop("imports", [])
        if not isinstance(imports, list) or not all(isinstance(i, str) for i in imports):
            raise ConfigError(str(current), None, "'imports' must be a list of paths")
        if any("\x00" in name for name in imports):
            raise ConfigError(str(current), None, "an 'imports' path holds a NUL byte")
        try:
            document = merged(document, parsed, whole)
        except RecursionError:
            raise ConfigError(
                str(current), None, "tables nested too deeply"
            ) from None  # a nesting bomb's traceback says nothing more
        read.append(str(current))
        pending += _resolve(current, imports)
    return document, read


def _resolve(parent: Path, imports: list[str]) -> list[Path]:
    """Import paths as containerd resolves them: a glob as written (relative to containerd's
    working directory), any other path relative to the importing file's folder."""
    found: list[Path] = []
    for name in imports:
        if "*" in name:
            pattern = name if Path(name).is_absolute() else str(_CONTAINERD_CWD / name)
            found += [Path(match) for match in sorted(glob.glob(pattern))]
        else:
            # Cleaned as containerd cleans it (filepath.Join): a cycle is seen as one.
            found.append(Path(os.path.normpath(parent.parent / name)))
    return found


def merged(
    base: dict[str, Any], over: dict[str, Any], replace_plugin_tables: bool = False
) -> dict[str, Any]:
    """`over` merged into `base`: tables merged key by key, anything else replaced; with
    `replace_plugin_tables` (containerd before 2.0), each table under `plugins` (and the other
    maps containerd treats so) is replaced whole."""
    result = dict(base)
    for key, value in over.items():
        if replace_plugin_tables and key in _REPLACED_WHOLE and isinstance(value, dict):
            result[key] = {**(result.get(key) or {}), **value}
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


def _parse(path: Path) -> dict[str, Any]:
    try:
        text = files.read_text(path)
    except files.UnreadableFile as exc:
        raise InputError(
            f"cannot read containerd's config {path}: {exc}"
        ) from None  # the message carries the cause's own words
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise ConfigError(
            str(path), None, "nested too deeply"
        ) from None  # a nesting bomb's traceback says nothing more
    except tomllib.TOMLDecodeError as exc:
        found = _LINE.search(str(exc))
        message = _LINE.sub("", str(exc)).strip()
        raise ConfigError(
            str(path), int(found.group(1)) if found else None, message
        ) from None  # a nesting bomb's traceback says nothing more


def imports_of(path: Path) -> list[str]:
    """The `imports` list of the file `path` as written ([] if it has none)."""
    found = _parse(path).get("imports", [])
    return [i for i in found if isinstance(i, str)] if isinstance(found, list) else []


def edited_at(files: list[str]) -> float | None:
    """When the newest of `files` last changed (None: none can be seen)."""
    times = []
    for name in files:
        try:
            times.append(os.stat(name).st_mtime)
        except OSError:
            continue
    return max(times, default=None)
