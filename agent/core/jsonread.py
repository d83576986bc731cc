"""Checked reads of hostile JSON (an API server's objects, an agent's /status): a value of the
wrong type reads as nothing, never as an exception."""

from __future__ import annotations

from typing import Any


def dig(document: Any, *keys: str) -> Any:
    """`document[k1][k2]…`, or None where a level is missing or not an object."""
    for key in keys:
        document = document.get(key) if isinstance(document, dict) else None
    return document


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def pick(document: Any, paths: tuple[tuple[str, ...], ...]) -> Any:
    """Only the fields at `paths` of `document` (what a reader uses of a large object: a Node's
    status with its image list is most of a NodeList); a non-object is kept as it is, to be
    refused by its reader."""
    if not isinstance(document, dict):
        return document
    kept: dict[str, Any] = {}
    for path in paths:
        value = dig(document, *path)
        if value is None:
            continue
        target = kept
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = value
    return kept
