"""YAML read as hostile input: errors that name the file and line, aliases bounded ("billion
laughs"), libyaml's parser when PyYAML has it."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import yaml

from agent.core.errors import ConfigError


@contextlib.contextmanager
def errors(source: str) -> Iterator[None]:
    """YAML that does not parse is an error of `source`, at its line when PyYAML knows it."""
    try:
        yield
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError(source, line, f"invalid YAML: {exc.problem or exc}") from exc
    except RecursionError:
        raise ConfigError(
            source, None, "invalid YAML: nested too deeply"
        ) from None  # a nesting bomb's traceback says nothing more
    except (yaml.YAMLError, ValueError, TypeError) as exc:
        # A value YAML cannot build (`2024-02-30`) raises ValueError or TypeError.
        raise ConfigError(source, None, f"invalid YAML: {exc}") from exc


def documents(text: str, source: str) -> list[Any]:
    """Every document of a YAML stream (`---` separated, JSON too) or of a stream of JSON
    documents one after another (what `jq -c` and many tools emit; no YAML parser takes it),
    as plain data; ConfigError naming the file and line of what does not parse, or of aliases
    that expand too far."""
    if text.lstrip().startswith(("{", "[")):
        stream = _json_stream(text, source)
        if stream is not None:
            return stream
    with errors(source):
        nodes = list(yaml.compose_all(text, Loader=LOADER))
        for node in nodes:
            bounded_aliases(node, source)
        constructor = yaml.SafeLoader("")
        built = [constructor.construct_document(node) for node in nodes]
    return [d for d in built if d is not None]


def _json_stream(text: str, source: str) -> list[Any] | None:
    """JSON documents back to back (whitespace between); None if the first is not JSON (then
    it is YAML's to read, flow style included); ConfigError for a later one that is not."""
    decoder = json.JSONDecoder()
    found: list[Any] = []
    position = 0
    while (position := _skip_space(text, position)) < len(text):
        try:
            document, position = decoder.raw_decode(text, position)
        except (ValueError, RecursionError) as exc:
            if not found:
                return None
            line = text.count("\n", 0, getattr(exc, "pos", position)) + 1
            problem = json_problem(exc)
            message = f"invalid JSON in a stream of documents: {problem}"
            raise ConfigError(
                source, line, message
            ) from None  # the message carries the cause's own words
        found.append(document)
    return [d for d in found if d is not None]


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


# YAML aliases let a kilobyte stand for billions of nodes ("billion laughs"): whatever walks the
# data then runs for ever. A stream may expand to this many nodes, or to ALIAS_RATIO times the
# nodes it writes out, whichever is more (go-yaml, which kubectl uses, bounds it alike).
MAX_EXPANDED_NODES = 100_000


ALIAS_RATIO = 10


def bounded_aliases(root: yaml.Node, source: str) -> None:
    """ConfigError if `root` expands (aliases followed) past the bound. Linear in the nodes
    written: an alias is the node it names, so each node's expanded size is counted once."""
    expanded: dict[int, int] = {}
    entered: set[int] = set()
    # Children before parents, iteratively (a deep document must not exhaust the stack).
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in expanded:
            continue
        children = _children(node)
        if not children_done:
            if id(node) in entered:
                # Reached again before it was counted: an alias inside its own anchor.
                raise ConfigError(source, node.start_mark.line + 1, "a YAML alias refers to itself")
            entered.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in expanded)
            continue
        expanded[id(node)] = 1 + sum(expanded[id(child)] for child in children)
    written = len(entered)
    total = expanded[id(root)]
    if total > max(MAX_EXPANDED_NODES, ALIAS_RATIO * written):
        raise ConfigError(
            source,
            root.start_mark.line + 1,
            f"YAML aliases expand {written} nodes to {total}: refused (at most "
            f"{max(MAX_EXPANDED_NODES, ALIAS_RATIO * written)})",
        )


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


# libyaml's C parser when PyYAML has it (same nodes and line numbers, much faster).
LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def compose(text: str, source: str) -> yaml.Node | None:
    """The node tree of one YAML document, aliases bounded; ConfigError naming `source`."""
    with errors(source):
        root: yaml.Node | None = yaml.compose(text, Loader=LOADER)
        if root is not None:
            bounded_aliases(root, source)
    return root


def dump(document: Any) -> str:
    """`document` as block YAML, its keys in their order (`-o yaml`)."""
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


def json_problem(exc: ValueError | RecursionError) -> str:
    """What was wrong with a JSON text, in words: the decoder's, or what its other errors mean
    (Python refuses integers of more than 4300 digits with a bare ValueError)."""
    if isinstance(exc, json.JSONDecodeError):
        return exc.msg
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return "a number too long to read"
