"""A verb's function, named by module and loaded only when that verb runs."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


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
