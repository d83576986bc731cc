"""Suite-wide rules: in CI a skipped test fails the run; async tests leave no tasks behind."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest
from hypothesis import settings

# A property holds or not whatever an example costs: on 2 busy cores one example can take
# longer than Hypothesis' default 200 ms deadline, which would fail a run at random.
settings.register_profile("suite", deadline=None)
settings.load_profile("suite")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if os.environ.get("CI") and skipped:
        if reporter:
            message = f"CI: {skipped} test(s) skipped; every test must run in CI"
            reporter.write_line(message, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_report_header() -> str:
    from tests.harness.containerd import LINE_VARIABLE, LINES

    return f"containerd line for integration tests: {os.environ.get(LINE_VARIABLE, LINES[0])}"


@pytest.fixture(autouse=True)
async def _no_leftover_tasks() -> AsyncIterator[None]:
    """Every task an async test starts must be awaited or cancelled by its owner."""
    before = asyncio.all_tasks()
    yield
    await asyncio.sleep(0)
    leftover = [t for t in asyncio.all_tasks() - before if t is not asyncio.current_task()]
    leftover = [t for t in leftover if not t.done()]
    assert not leftover, f"tasks left running: {leftover}"
