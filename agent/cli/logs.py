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
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
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


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        # A log line is one line: remote text in it (a registry's message, a node's name) is
        # escaped, never a control sequence or a line break of its own.
        extras = " ".join(f"{f}={fit(getattr(record, f))}" for f in FIELDS if hasattr(record, f))
        # People read the program's voice; the module (JSON's `logger`) is for log queries.
        name = "prepull-agent" if record.name.split(".")[0] == "agent" else record.name
        line = f"{record.levelname} {name}: {fit(record.getMessage(), LOG_CHARS)}"
        return f"{line} {extras}" if extras else line


def setup(log_format: str = "text", verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    # aiohttp's access log would add a line per probe and scrape.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
