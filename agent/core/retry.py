"""Retries with exponential backoff and full jitter, shared by the registry and CRI clients."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    """Tries in all, the first included."""
    base_delay: float = 0.5
    """Seconds; the ceiling of the first wait, doubled on each retry."""
    max_delay: float = 30.0
    """Seconds; the ceiling of any wait we choose."""
    max_server_delay: float = 120.0
    """Seconds; the longest Retry-After we honour before giving up on that try."""

    def delay(self, retry: int, hint: float | None, rng: Callable[[], float]) -> float:
        """Full jitter (a random wait up to the exponential ceiling); a server's hint is a floor."""
        ceiling = min(self.max_delay, self.base_delay * 2**retry)
        chosen: float = rng() * ceiling
        if hint is not None:
            chosen = max(chosen, min(hint, self.max_server_delay))
        return chosen


async def retry(
    operation: Callable[[], Awaitable[T]],
    *,
    is_transient: Callable[[BaseException], bool],
    policy: RetryPolicy = RetryPolicy(),
    server_hint: Callable[[BaseException], float | None] = lambda exc: None,
    what: str = "operation",
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: Callable[[], float] = random.random,
) -> T:
    """Run `operation` until it succeeds, fails permanently, or runs out of attempts."""
    for attempt in range(policy.attempts):
        try:
            return await operation()
        except Exception as exc:
            if not is_transient(exc) or attempt == policy.attempts - 1:
                raise
            wait = policy.delay(attempt, server_hint(exc), rng)
            log.info("%s failed (%s); retry %d in %.2fs", what, one_line(exc), attempt + 1, wait)
            await sleep(wait)
    raise AssertionError("unreachable: the loop returns or raises")


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An error in one line of bounded length: a gRPC error's str is a multi-line report, its
    code and details say the same in one."""
    code, details = getattr(exc, "code", None), getattr(exc, "details", None)
    if callable(code) and callable(details):
        text = f"{getattr(code(), 'name', code())}: {details()}"
    else:
        text = str(exc) or type(exc).__name__
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
