"""Log setup: one JSON object per line for machines, plain text for humans. Never secrets."""

from __future__ import annotations

import json
import logging
import sys
import time

from agent.core.text import fit

# Fields the agent attaches with `extra=`: on every pull, image, digest, duration and outcome;
# on every pass, the counts; on a long pull's progress, the bytes so far and expected.
FIELDS = (
    "image",
    "digest",
    "duration_seconds",
    "outcome",
    "bytes",
    "error",
    "event",
    "counts",
    "bytes_done",
    "bytes_total",
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": stamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in FIELDS:
            if hasattr(record, field):
                entry[field] = getattr(record, field)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


LOG_CHARS = 8000
"""The longest message a text log line carries whole."""


def stamp(record: logging.LogRecord) -> str:
    """When the record was made, UTC, to the millisecond (RFC 3339)."""
    moment = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{moment}.{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    def __init__(self, timestamps: bool = False) -> None:
        super().__init__()
        self.timestamps = timestamps
        """The daemon's lines begin with the time; a command's warnings need none."""

    def format(self, record: logging.LogRecord) -> str:
        # A log line is one line: remote text in it (a registry's message, a node's name) is
        # escaped, never a control sequence or a line break of its own.
        extras = " ".join(f"{f}={fit(getattr(record, f))}" for f in FIELDS if hasattr(record, f))
        # People read the program's voice; the module (JSON's `logger`) is for log queries.
        name = "prepull-agent" if record.name.split(".")[0] == "agent" else record.name
        line = f"{record.levelname} {name}: {fit(record.getMessage(), LOG_CHARS)}"
        if self.timestamps:
            line = f"{stamp(record)} {line}"
        return f"{line} {extras}" if extras else line


def setup(log_format: str = "text", verbose: bool = False, daemon: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    text = TextFormatter(timestamps=daemon)
    handler.setFormatter(JsonFormatter() if log_format == "json" else text)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    # aiohttp's access log would add a line per probe and scrape.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
