"""Docs that run: every `prepull-agent …` (and `kubectl prepull …`) example in every verb's
--help and in the README's shell blocks parses with the real parser, so a flag change breaks
the build, not the user who copies the example."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from agent.cli.parser import parser

README = Path(__file__).resolve().parents[3] / "README.md"
SHELL = ("&&", "||", "|", ";")


def commands(line: str) -> list[list[str]]:
    """The agent's commands in one shell line: each part of a pipe or a chain that runs it,
    without redirections and comments."""
    words = shlex.split(line, comments=True)
    found: list[list[str]] = []
    part: list[str] = []
    for word in [*words, "|"]:
        if word in SHELL:
            if part[:1] == ["prepull-agent"]:
                found.append(part[1:])
            elif part[:2] == ["kubectl", "prepull"]:
                found.append(["fleet", *part[2:]])
            part = []
        elif part and part[-1] in (">", "<", "2>"):
            part.pop()
        else:
            part.append(word)
    return [[w for w in c if not w.startswith(">")] for c in found]


def help_examples() -> list[tuple[str, str]]:
    top = parser()
    verbs = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    return [
        (name, line.strip())
        for name, sub in verbs.choices.items()
        for line in (sub.epilog or "").splitlines()
        if "prepull-agent " in line or "kubectl prepull" in line
    ]


def readme_lines() -> list[tuple[str, bool]]:
    """The command lines of the README's code blocks (not YAML, JSON or TOML ones), each with
    whether it is a synopsis (`[--flag …]`, its continuation lines joined to it)."""
    found: list[tuple[str, bool]] = []
    fence = None
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            fence = None if fence is not None else (line[3:].strip() or "text")
        elif fence not in ("sh", "bash", "console", "text"):
            continue
        elif re.match(r"\s*(\$ )?(prepull-agent |kubectl prepull)", line):
            text = line.strip().removeprefix("$ ")
            found.append((text, "[" in text or "(" in text.split("#")[0]))
        elif found and found[-1][1] and line.startswith(" " * 10):
            found[-1] = (f"{found[-1][0]} {line.strip()}", True)
    return found


def readme_examples() -> list[str]:
    return [text for text, synopsis in readme_lines() if not synopsis]


def readme_synopses() -> list[str]:
    return [text for text, synopsis in readme_lines() if synopsis]


def parses(args: list[str]) -> str | None:
    """None if the parser takes `args`, else what it said."""
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            parser().parse_args(args)
    except SystemExit:
        return said.getvalue().strip().splitlines()[-1]
    return None


@pytest.mark.parametrize(("verb", "line"), help_examples())
def test_every_help_example_parses(verb: str, line: str) -> None:
    for args in commands(line):
        assert parses(args) is None, (verb, line, parses(args))


@pytest.mark.parametrize("line", readme_examples())
def test_every_readme_command_parses(line: str) -> None:
    found = commands(line)
    assert found, line
    for args in found:
        assert parses(args) is None, (line, parses(args))


@pytest.mark.parametrize("line", readme_synopses())
def test_every_flag_of_the_readmes_synopsis_exists(line: str) -> None:
    words = line.split()
    verb = "fleet" if words[:2] == ["kubectl", "prepull"] else words[1]
    top = parser()
    verbs = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    known = {o for action in verbs.choices[verb]._actions for o in action.option_strings}
    named = set(re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", line))
    assert named <= known, (verb, named - known)


def test_there_are_examples_to_check_and_a_broken_one_is_caught() -> None:
    assert len(help_examples()) > 20 and len(readme_examples()) > 5
    assert len(readme_synopses()) > 10
    assert parses(["lock", "--config", "p.yaml", "-o", "preload.lock.yaml"]) is not None
    assert commands("prepull-agent suggest > preload.yaml") == [["suggest"]]
