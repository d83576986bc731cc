"""The deadline on all registry work for one image."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from agent.core.errors import RegistryTimeout

# All registry work for one image (tag lookup, platform check) must end within this; a registry
# that accepts connections and never answers then costs its own images a minute, not a pass.
LOOKUP_DEADLINE = 60.0
T = TypeVar("T")


async def within_deadline(work: Awaitable[T]) -> T:
    """Registry work for one image, cut at LOOKUP_DEADLINE with an error that says so."""
    try:
        async with asyncio.timeout(LOOKUP_DEADLINE):
            return await work
    except TimeoutError:
        raise RegistryTimeout(
            f"the registry did not answer within {LOOKUP_DEADLINE:.0f}s (lookup abandoned)"
        ) from None  # the timeout is what the message says
