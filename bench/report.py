"""One row per target: what was measured against what, the ratio, the target, met or not."""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    target: str
    """What is promised, in words, naming what each figure includes."""
    baseline_label: str
    baseline: float | None
    agent: float
    unit: str
    limit: float
    """The agent's figure (or the ratio, when there is a baseline) must be at most this."""
    note: str = ""
    applies: bool = True
    """False when the machine cannot show the target (said in the note); never counts as met."""

    @property
    def ratio(self) -> float | None:
        return self.agent / self.baseline if self.baseline else None

    @property
    def met(self) -> bool:
        value = self.ratio if self.baseline is not None else self.agent
        return value is not None and value <= self.limit

    def render(self) -> str:
        base = f"{self.baseline_label} {_fmt(self.baseline, self.unit)}" if self.baseline else "-"
        ratio = f"{self.ratio:.2f}x" if self.ratio is not None else "-"
        limit = f"<= {self.limit:g}{'x' if self.baseline is not None else ' ' + self.unit}"
        verdict = ("met" if self.met else "MISSED") if self.applies else "n/a"
        line = (
            f"  {self.target:<46} {base:>28} {_fmt(self.agent, self.unit):>11} {ratio:>7} "
            f"{limit:>11}  {verdict}"
        )
        return line + (f"\n      {self.note}" if self.note else "")


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value * 1000:.1f}ms" if value < 1 else f"{value:.2f}s"
    return f"{value:.1f}{unit}"


def header(title: str) -> None:
    print(f"\n{title}")
    print(
        f"  {'target':<46} {'baseline':>28} {'agent':>11} {'ratio':>7} {'target':>11}  met?",
        flush=True,
    )


def median_time(work: Callable[[], object], runs: int) -> float:
    """The median wall time of `runs` calls of `work`."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def whole_process(command: list[str]) -> float:
    """A whole process's wall time, as a user times it (byte-code cached, as installed);
    RuntimeError with its stderr's end if it fails."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command[:3])} exited {done.returncode}: {done.stderr[-2000:]}"
        )
    return elapsed
