"""containerd's config file as containerd reads it: the file, then each file its `imports` name
(relative to the file's folder, globs expanded), each merged over what came before key by key
(containerd 2.x, cmd/containerd/server/config: mergeConfig). Only read, never written."""

from __future__ import annotations

import glob
import re
import tomllib
from pathlib import Path
from typing import Any

from agent.core import files
from agent.core.errors import ConfigError, InputError

DEFAULT_PATH = Path("/etc/containerd/config.toml")
MAX_FILES = 64
"""Imported files read at most: a glob that matches more is a mistake, not a config."""
_LINE = re.compile(r"\(at line (\d+), column \d+\)")


def effective(path: Path | None) -> tuple[dict[str, Any] | None, str | None]:
    """The config containerd runs with and where it came from: `path` (which must exist), else
    the default file, else (None, None): containerd then runs on its defaults."""
    if path is None:
        if not DEFAULT_PATH.exists():
            return None, None
        path = DEFAULT_PATH
    document, read = load(path)
    return document, " + ".join(read)


def load(path: Path) -> tuple[dict[str, Any], list[str]]:
    """The merged config and the files it came from; InputError naming the file (and line)
    that cannot be read or parsed."""
    document = _parse(path)
    read = [str(path)]
    imports = document.pop("imports", [])
    if not isinstance(imports, list) or not all(isinstance(i, str) for i in imports):
        raise ConfigError(str(path), None, "'imports' must be a list of paths")
    for pattern in imports:
        where = pattern if Path(pattern).is_absolute() else str(path.parent / pattern)
        matches = sorted(glob.glob(where)) if "*" in where else [where]
        for match in matches:
            if len(read) > MAX_FILES:
                raise ConfigError(str(path), None, f"imports name more than {MAX_FILES} files")
            imported = _parse(Path(match))
            imported.pop("imports", None)  # containerd follows one level only
            document = merged(document, imported)
            read.append(match)
    return document, read


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` merged into `base`: tables merged key by key, anything else replaced."""
    result = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


def _parse(path: Path) -> dict[str, Any]:
    try:
        text = files.read_text(path)
    except files.UnreadableFile as exc:
        raise InputError(f"cannot read containerd's config {path}: {exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = _LINE.search(str(exc))
        message = _LINE.sub("", str(exc)).strip()
        raise ConfigError(str(path), int(found.group(1)) if found else None, message) from None
