from __future__ import annotations

import asyncio
import logging

import pytest

from agent.core.retry import RetryPolicy, retry


class Flaky(Exception):
    pass


class Broken(Exception):
    pass


async def test_transient_faults_are_retried_with_growing_jittered_waits() -> None:
    waits: list[float] = []
    calls = 0

    async def operation() -> str:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise Flaky
        return "ok"

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    result = await retry(
        operation,
        is_transient=lambda e: isinstance(e, Flaky),
        policy=RetryPolicy(attempts=5, base_delay=1, max_delay=3),
        sleep=sleep,
        rng=lambda: 1.0,
    )
    assert (result, calls) == ("ok", 4)
    assert waits == [1, 2, 3], "exponential, capped at max_delay"


async def test_permanent_faults_are_raised_at_once() -> None:
    calls = 0

    async def operation() -> None:
        nonlocal calls
        calls += 1
        raise Broken

    with pytest.raises(Broken):
        await retry(operation, is_transient=lambda e: isinstance(e, Flaky), sleep=_no_sleep)
    assert calls == 1


async def test_attempts_run_out() -> None:
    calls = 0

    async def operation() -> None:
        nonlocal calls
        calls += 1
        raise Flaky

    with pytest.raises(Flaky):
        await retry(
            operation, is_transient=lambda e: True, policy=RetryPolicy(attempts=3), sleep=_no_sleep
        )
    assert calls == 3


def test_server_hint_is_a_floor_and_bounded() -> None:
    policy = RetryPolicy(base_delay=1, max_delay=4, max_server_delay=10)
    assert policy.delay(0, 7, lambda: 0.5) == 7
    assert policy.delay(0, 600, lambda: 0.5) == 10
    assert policy.delay(5, None, lambda: 0.25) == 1.0
    assert policy.delay(0, None, lambda: 0.0) == 0.0, "full jitter reaches zero"


async def _no_sleep(seconds: float) -> None:
    return None


def test_a_retry_is_logged_on_one_line(caplog: pytest.LogCaptureFixture) -> None:
    failures = [OSError("first line\nsecond line\n\tthird")]

    async def flaky() -> str:
        if failures:
            raise failures.pop()
        return "ok"

    async def no_wait(seconds: float) -> None:
        pass

    with caplog.at_level(logging.INFO):
        result = asyncio.run(
            retry(flaky, is_transient=lambda exc: True, what="HEAD x", sleep=no_wait)
        )

    assert result == "ok"
    (record,) = [r for r in caplog.records if "retry 1" in r.getMessage()]
    assert record.getMessage().startswith("HEAD x failed (first line second line third)")
    assert "\n" not in record.getMessage()
