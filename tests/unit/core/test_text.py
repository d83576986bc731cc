"""Remote text is made fit for a person (agent.core.text.fit) wherever it enters or leaves: one
test per place, each with the sequences a hostile registry, API server or agent sends."""

from __future__ import annotations

import datetime
import json
import logging

import grpc
import pytest

from agent.adapters.kube.errors import refusal_message
from agent.adapters.registry.transport import _error_detail
from agent.adapters.runtime import rpc
from agent.cli.common import table_lines
from agent.cli.converge import format_outcome
from agent.cli.fleet import format_fleet, short_list
from agent.cli.logs import TextFormatter
from agent.cli.status import format_status
from agent.core.fleet import view as fleet
from agent.core.lists.config import parse
from agent.core.ports import Outcome, Status
from agent.core.reports.events import EventBook, NodeEvent
from agent.core.reports.status import ImageReport
from agent.core.text import fit
from agent.daemon.server import _line

HOSTILE = (
    "x\x1b]0;pwned\x07\x1b[2J\r\nFAKE ROW\u202eevil\u2066\x1b]52;c;QUFB\x07"
    "\x1b]8;;http://e/\x07link\x9b31m\x7f\u2028\u0085"
)
RAW = ("\x1b", "\x07", "\r", "\n", "\u202e", "\u2066", "\x9b", "\x7f", "\u2028", "\u0085")


def clean(text: str) -> bool:
    return not any(c in text for c in RAW)


def test_fit_escapes_every_control_and_reordering_character_and_nothing_else() -> None:
    shown = fit(HOSTILE)
    assert clean(shown) and shown.isprintable()
    assert shown.startswith("x\\x1b]0;pwned\\x07\\x1b[2J\\x0d\\x0aFAKE ROW\\u202eevil\\u2066")
    assert fit(shown) == shown, "escaping twice changes nothing"
    assert (
        fit("ghcr.io/acme/api:2.4.1 → sha256:ab… é 日本")
        == "ghcr.io/acme/api:2.4.1 → sha256:ab… é 日本"
    )


def test_fit_bounds_the_length_and_says_so() -> None:
    assert fit("y" * 5000, 100) == "y" * 100 + "… (5000 characters)"


def test_a_registry_error_body_enters_escaped() -> None:
    body = json.dumps({"errors": [{"code": "DENIED", "message": HOSTILE}]}).encode()
    assert clean(_error_detail(body)) and "pwned" in _error_detail(body)
    assert clean(_error_detail(HOSTILE.encode()))


def test_an_api_server_message_enters_escaped() -> None:
    said = refusal_message(json.dumps({"kind": "Status", "message": HOSTILE}))
    assert clean(said) and "pwned" in said
    assert clean(refusal_message(HOSTILE))
    assert refusal_message("[" * 100000).startswith("[" * 200 + "… (100000 characters)")


def test_containerds_error_details_enter_escaped() -> None:
    class Failed(grpc.aio.AioRpcError):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(grpc.StatusCode.UNKNOWN, None, None, details=HOSTILE)

    assert clean(rpc.details_of(Failed())) and rpc.details_of(Failed()).startswith("UNKNOWN: x")


def test_a_table_cell_cannot_draw_rows_or_move_the_cursor() -> None:
    lines = table_lines([["NODE", "DETAIL"], [HOSTILE, HOSTILE]])
    assert len(lines) == 2 and all(clean(line) for line in lines)


def test_a_text_log_line_stays_one_line() -> None:
    record = logging.LogRecord("agent.x", logging.WARNING, "f", 1, "%s failed", (HOSTILE,), None)
    record.error = HOSTILE
    line = TextFormatter().format(record)
    assert clean(line) and "pwned" in line


def test_readyz_lines_are_escaped() -> None:
    line = _line(ImageReport(HOSTILE, last_error=HOSTILE))
    assert line.endswith("\n") and clean(line[:-1]) and line.count("\n") == 1


def test_an_event_message_is_escaped() -> None:
    wall = datetime.datetime(2026, 12, 6, tzinfo=datetime.UTC)
    book = EventBook("n1", "prepull-system", lambda: 0.0, wall_clock=lambda: wall)
    write = book.record(NodeEvent("Warning", "PreloadFailed", HOSTILE))
    assert write is not None and clean(write.event["message"])


def test_onces_line_escapes_the_reason() -> None:
    (entry,) = parse("images:\n  - r.io/a:1\n").images
    line = format_outcome(Outcome(entry, Status.FAILED, HOSTILE))
    assert clean(line) and "pwned" in line


def test_fleet_table_and_summary_escape_what_agents_and_the_api_server_say() -> None:
    status = {
        "ready": False,
        "last_error": HOSTILE,
        "images": [{"image": HOSTILE, "state": "failed", "last_error": HOSTILE}],
    }
    row = fleet.row(fleet.Target(HOSTILE, "p", 1), status)
    text = format_fleet([row], fleet.summary([row]), lambda s: s, short_list)
    assert clean(text.replace("\n", "")) and len(text.splitlines()) == 3, text


def test_status_verb_escapes_the_daemons_answer() -> None:
    document = {
        "node_platform": HOSTILE,
        "ready": False,
        "runtime": {"name": HOSTILE, "version": HOSTILE},
        "last_error": HOSTILE,
        "config": {"rejected": {"error": HOSTILE}},
        "images": [{"image": HOSTILE, "state": "failed", "last_error": HOSTILE, "bytes": 0}],
    }
    text = format_status(document, lambda s: s, 0.0)
    assert clean(text.replace("\n", "")) and len(text.splitlines()) == 5, text


@pytest.mark.parametrize("value", [HOSTILE, 5, None])
def test_fit_takes_anything(value: object) -> None:
    assert fit(value).isprintable()


def test_doctor_escapes_containerds_version_and_config_values() -> None:
    from agent.cli.doctor import format_diagnosis
    from agent.core.doctor import pullpath

    config = {"version": 3, "plugins": {"io.containerd.cri.v1.images": {
        "max_concurrent_downloads": HOSTILE}}}  # fmt: skip
    text = format_diagnosis(pullpath.diagnose("2.1.9" + HOSTILE, config, "/etc/c\x1b.toml"))
    assert "pwned" in text and all(clean(line) for line in text.splitlines()), text


def test_the_cli_error_line_is_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    from agent.cli import main

    assert main(["status", "--endpoint", "gopher://x\x1b]0;pwned\x07"]) == 2
    err = capsys.readouterr().err
    assert "pwned" in err and clean(err.rstrip("\n")), err
