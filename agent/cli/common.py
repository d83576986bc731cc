"""What every verb shares: exit codes, the flags several verbs take, output helpers."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import re
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from agent import __version__
from agent.core.defaults import CRI_ENDPOINT as DEFAULT_ENDPOINT
from agent.core.errors import AgentError, InputError
from agent.core.images import platform as platforms
from agent.core.lists.config import PreloadConfig
from agent.core.lists.credentials import CredentialFiles
from agent.core.text import fit

if TYPE_CHECKING:
    from agent.wiring import Wiring

EXIT_CONVERGED = 0


EXIT_NOT_CONVERGED = 1


EXIT_BAD_INPUT = 2


ENDPOINT_ENV = "PREPULL_CRI_ENDPOINT"


log = logging.getLogger(__name__)


MAX_INTERVAL_SECONDS = 24 * 3600.0


def exit_code(exc: AgentError) -> int:
    """The one place error types become exit codes (documented in README.md)."""
    return EXIT_BAD_INPUT if isinstance(exc, InputError) else EXIT_NOT_CONVERGED


def load_wiring() -> Wiring:
    """The composition root, every adapter a verb may use: gRPC and aiohttp load only for the
    commands that use them. What is loaded by then is frozen out of the cyclic GC
    (gc.freeze), so a pass over thousands of images does not scan the libraries' objects again
    at every collection."""
    from agent.wiring import WIRING

    gc.freeze()
    return WIRING


VERBOSE_HELP = "log retries and progress"


EXITS = "exit codes: 0 converged, 1 not converged (each image named), 2 bad input"


IMAGE_ENV = "PREPULL_IMAGE"
"""Set by the agent's image build (scripts/build_image.py, Dockerfile) to the image's name."""


def version_text() -> str:
    image = os.environ.get(IMAGE_ENV)
    return f"prepull-agent {__version__}" + (f" (image {image})" if image else "")


def hosts_dir_of(args: argparse.Namespace) -> Path | None:
    """containerd's registry hosts directory, if this node has one."""
    hosts_dir: Path = args.containerd_hosts_dir
    return hosts_dir if hosts_dir.is_dir() else None


def credential_files(config: PreloadConfig) -> CredentialFiles:
    """The config's credential files, read once now so a broken one is bad input (exit 2)."""
    files = CredentialFiles(config.credential_paths())
    files.keyring()
    return files


def count_arg(minimum: int, maximum: int) -> Callable[[str], int]:
    """An argparse type: a whole number from `minimum` to `maximum`."""

    def parse(text: str) -> int:
        if not text.isdigit() or not minimum <= int(text) <= maximum:
            raise argparse.ArgumentTypeError(
                f"{text!r} must be a whole number from {minimum} to {maximum}"
            )
        return int(text)

    return parse


def cri_endpoint_arg(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--cri-endpoint",
        default=os.environ.get(ENDPOINT_ENV, DEFAULT_ENDPOINT),
        help=f"CRI socket (default: ${ENDPOINT_ENV} or {DEFAULT_ENDPOINT})",
    )


def seconds_arg(minimum: float) -> Callable[[str], float]:
    """An argparse type: a finite number of seconds, at least `minimum`."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < minimum or value > MAX_INTERVAL_SECONDS:
            raise argparse.ArgumentTypeError(
                f"{text!r} must be a number of seconds from {minimum:g} to {MAX_INTERVAL_SECONDS:g}"
            )
        return value

    return parse


def platform_arg(text: str | None) -> platforms.Platform | None:
    """`--platform` as given, or None to ask the runtime."""
    return platforms.parse(text) if text else None


_FULL_DIGEST = re.compile(r"\b(sha256:[0-9a-f]{12})[0-9a-f]{52}\b")


def digests_for(args: argparse.Namespace) -> Callable[[str], str]:
    """Digests shortened (sha256: and 12 hex digits, as crictl) for a person at a terminal;
    whole for pipes, files and --no-trunc."""
    if args.no_trunc or not sys.stdout.isatty():
        return lambda text: text
    return lambda text: _FULL_DIGEST.sub("\\1…", text)


OUTPUT_FORMATS = ("text", "json", "yaml")


def output_format(choices: tuple[str, ...]) -> Callable[[str], str]:
    """`-o`'s value; a path there is what `-o` meant on `lock` and the generators before."""

    def parse(value: str) -> str:
        if value in choices:
            return value
        hint = ""
        if "." in value or "/" in value:
            hint = (
                f"; -o is the output format, as in kubectl: write a file with --output-file {value}"
            )
        raise argparse.ArgumentTypeError(
            f"unknown output format {value!r} (choose from {', '.join(choices)}){hint}"
        )

    return parse


def table_lines(rows: Sequence[Sequence[str]], headers: bool = True) -> list[str]:
    """`rows` (the column names first) as `kubectl get` aligns a table, the last column
    unpadded; `headers` False drops the names but keeps the columns as wide."""
    rows = [[fit(cell) for cell in row] for row in rows]  # remote text never drives the terminal
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for row in rows if headers else rows[1:]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return lines


def print_json(document: object) -> None:
    print(json.dumps(document, indent=2))


def print_document(args: argparse.Namespace, document: object) -> None:
    """`-o json` or `-o yaml`: the same document, the same field names."""
    if args.format == "yaml":
        from agent.core.lists import (
            yamlsafe,  # PyYAML only for -o yaml: not at every command's start
        )

        sys.stdout.write(yamlsafe.dump(document))
    else:
        print_json(document)


def emit(output: Path | None, text: str, form: str = "yaml") -> None:
    """A generated list (YAML, commented) to `output` or stdout; `-o json`: the same list as
    one JSON document (without the comments)."""
    if form == "json":
        from agent.core.lists import yamlsafe  # PyYAML only here: not at every command's start

        text = json.dumps(yamlsafe.documents(text, "the list")[0], indent=2) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        write_atomically(output, text)
        print(f"wrote {output}", file=sys.stderr)


def write_atomically(path: Path, text: str) -> None:
    """Readers see the old lock or the new one, never half of it."""
    temp: str | None = None
    try:
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        # mkstemp makes the file private; a lock is meant to be shipped and read.
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except OSError as exc:
        if temp is not None and os.path.exists(temp):
            os.unlink(temp)
        raise InputError(f"cannot write {path}: {exc}") from exc


async def version(args: argparse.Namespace) -> int:
    print(version_text())
    return EXIT_CONVERGED
