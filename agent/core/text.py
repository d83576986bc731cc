"""Text from outside made fit for a person: a registry's error body, an API server's message, an
agent's /status, a config value. Whatever reaches a terminal, a text log, a probe's answer, an
Event or a table goes through `fit`: control characters (C0, C1, ESC, DEL), line breaks, and
the bidi overrides and isolates that reorder what a reader sees are written as escapes, and the
length is bounded. JSON and YAML carry text as those formats escape it."""

from __future__ import annotations

MAX_CHARS = 2000
"""The longest remote text shown whole: past it, the start and the length are."""


def fit(value: object, limit: int = MAX_CHARS) -> str:
    """`value` as one line a person can read safely: every character that is not printable
    (str.isprintable: controls, line and paragraph separators, format characters such as the
    bidi overrides and isolates, Unicode category Cf) is written as an escape (`\\x1b`, `\\x0a`,
    `\\u202e`), and text past
    `limit` characters is cut, saying how long it was. Escaping an escaped text changes nothing."""
    text = str(value)
    if len(text) > limit:
        text = f"{text[:limit]}… ({len(text)} characters)"
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
