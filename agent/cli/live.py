"""`once` on a terminal: results scroll as each image finishes, and below them one line per
pull in flight (bytes so far, of how many, rate) is redrawn in place, as `ctr pull` does."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import TextIO

from agent.core.reports.progress import Progress

# ANSI: move the cursor up N lines to their start, then clear to the end of the screen.
_UP = "\x1b[{}F"
_CLEAR_BELOW = "\x1b[J"
_AMOUNT_WIDTH = len("999.9 MB of 999.9 MB (99%), 99.9 MB/s, 999s")


class LiveDisplay:
    def __init__(
        self,
        stream: TextIO,
        progress: Progress,
        show: Callable[[str], str] = lambda text: text,
    ) -> None:
        self._stream = stream
        self._progress = progress
        self._show = show
        self._drawn = 0
        """Lines of the progress block now on screen, below the results."""

    def result(self, line: str) -> None:
        """Print a finished image's line above the progress block."""
        self._erase()
        self._stream.write(line + "\n")
        self._draw()

    def redraw(self) -> None:
        self._erase()
        self._draw()

    def close(self) -> None:
        self._erase()
        self._stream.flush()

    def _erase(self) -> None:
        if self._drawn:
            self._stream.write(_UP.format(self._drawn) + _CLEAR_BELOW)
            self._drawn = 0

    def _draw(self) -> None:
        # A line longer than the terminal wraps, and the block would be erased a line short.
        columns = shutil.get_terminal_size().columns - 1
        views = self._progress.views()
        for view in views:
            head = f"{'pulling':<8}  {view.describe():<{_AMOUNT_WIDTH}}  "
            self._stream.write(fit(head, self._show(view.image), columns) + "\n")
        self._drawn = len(views)
        self._stream.flush()


def fit(head: str, name: str, columns: int) -> str:
    """`head` and `name` in `columns`, never wrapped: the numbers first (unpadded if need be),
    then the name — its digest left out before anything else, then its start: the repository's
    end and the tag tell images apart, the registry rarely does — marked with an ellipsis."""
    if len(head) + len(name) <= columns:
        return head + name
    head = head.rstrip() + "  "
    repository, at, _ = name.partition("@")
    for shown in (name, f"{repository}@…" if at else name):
        if len(head) + len(shown) <= columns:
            return head + shown
    room = columns - len(head) - 1
    if room < 1:
        return (head + name)[:columns]
    return f"{head}…{shown[-room:]}"
