from __future__ import annotations

import json
import logging

from agent.cli.logs import JsonFormatter, TextFormatter


def record(name: str = "agent.core.engine.reconcile", **extra: object) -> logging.LogRecord:
    entry = logging.LogRecord(name, logging.INFO, __file__, 1, "%s pulled", ("r.io/a:1",), None)
    for key, value in extra.items():
        setattr(entry, key, value)
    return entry


def test_json_lines_carry_the_pull_fields() -> None:
    line = JsonFormatter().format(
        record(image="r.io/a:1", digest="sha256:x", duration_seconds=1.5, outcome="pulled")
    )
    parsed = json.loads(line)
    assert parsed["message"] == "r.io/a:1 pulled" and parsed["level"] == "info"
    assert (parsed["image"], parsed["digest"], parsed["duration_seconds"], parsed["outcome"]) == (
        "r.io/a:1",
        "sha256:x",
        1.5,
        "pulled",
    )
    assert parsed["time"].endswith("Z")
    assert "\n" not in line


def test_text_lines_are_for_humans() -> None:
    line = TextFormatter().format(record(outcome="pulled"))
    assert line == "INFO prepull-agent: r.io/a:1 pulled outcome=pulled"
    other = TextFormatter().format(record("aiohttp.server"))
    assert other == "INFO aiohttp.server: r.io/a:1 pulled", "a library speaks under its own name"


def test_json_lines_name_the_module() -> None:
    assert json.loads(JsonFormatter().format(record()))["logger"] == "agent.core.engine.reconcile"


def test_the_daemons_text_lines_begin_with_the_time_a_commands_do_not() -> None:
    record = logging.LogRecord("agent.x", logging.INFO, "f", 1, "pass done", (), None)
    record.created, record.msecs = 1796601600.25, 250.0
    daemon = TextFormatter(timestamps=True).format(record)
    assert daemon == "2026-12-07T00:00:00.250Z INFO prepull-agent: pass done", daemon
    assert TextFormatter().format(record) == "INFO prepull-agent: pass done"
