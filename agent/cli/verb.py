"""How a verb is declared: its subcommand (help, examples, exit codes) and its function, named by
module and loaded only when that verb runs."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from agent.cli.common import EXITS, VERBOSE_HELP

Commands = Any  # argparse's private _SubParsersAction


@dataclass(frozen=True)
class Verb:
    """A verb's function, by module (in agent.cli) and name: the module loads only when that
    verb runs, so `once` does not pay for the fleet view, the doctor or list generation."""

    module: str
    name: str

    def load(self) -> Callable[[argparse.Namespace], Awaitable[int]]:
        function: Callable[[argparse.Namespace], Awaitable[int]]
        function = getattr(importlib.import_module(f"agent.cli.{self.module}"), self.name)
        return function

    def __call__(self, args: argparse.Namespace) -> Awaitable[int]:
        return self.load()(args)


DAEMON = Verb("converge", "run")


def subcommand(
    commands: Commands, name: str, summary: str, examples: str, exits: str = EXITS
) -> argparse.ArgumentParser:
    sub: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=summary[0].upper() + summary[1:] + ".",
        epilog=f"examples:\n{examples}\n\n{exits}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # -v works after the command too; SUPPRESS keeps the top-level value when it is absent.
    sub.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP
    )
    return sub
