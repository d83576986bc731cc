"""Running the agent's own pass in-process, as `once` does after start-up, and counting what it
asks of the runtime and the registry."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from agent import wiring
from agent.adapters.runtime import rpc
from agent.core.lists import config as configs
from agent.core.ports import Outcome

T = TypeVar("T")


@dataclass(frozen=True)
class Pass:
    seconds: float
    """From the list's text to the last outcome: parse, connect, Version, platform, the pass."""
    runtime_calls: int
    registry_requests: int
    outcomes: list[Outcome] = dataclasses.field(repr=False)


@contextlib.contextmanager
def counting_runtime_calls() -> Iterator[list[int]]:
    """Count every CRI and containerd call the agent makes (they all go through rpc.call)."""
    count = [0]
    original = rpc.call

    async def counted(endpoint: str, operation: Callable[[], Awaitable[T]], **kw: Any) -> T:
        count[0] += 1
        return await original(endpoint, operation, **kw)

    rpc.call = counted
    try:
        yield count
    finally:
        rpc.call = original


async def agent_pass(endpoint: str, text: str) -> Pass:
    """One `once`-equivalent pass over the list `text`, timed from connecting (the list is
    parsed while the runtime lists the node, as `once` does). What is loaded so far is frozen
    out of the cyclic GC first, as the CLI does after its imports."""
    gc.freeze()
    with counting_runtime_calls() as calls:
        started = time.perf_counter()
        async with (
            wiring.runtime(endpoint) as runtime,
            wiring.early_listing(runtime) as listing,
        ):
            config = await asyncio.to_thread(configs.parse, text, "bench.yaml")
            async with wiring.registry_client(config.registry, None) as registry:
                await runtime.meet()
                reconciler = runtime.reconciler(
                    registry, await runtime.node(), lambda ref: (), owner="bench"
                )
                outcomes = await reconciler.converge(config, listed=listing)
                elapsed = time.perf_counter() - started
    missed = [o for o in outcomes if not o.converged]
    assert not missed, [f"{o.entry.written}: {o.detail}" for o in missed[:5]]
    return Pass(elapsed, calls[0], registry.requests, outcomes)


def listing(references: list[str], registry_host: str | None = None, extra: str = "") -> str:
    text = "images:\n" + "".join(f"  - {r}\n" for r in references) + extra
    if registry_host:
        text += f"registries:\n  {registry_host}:\n    insecure: true\n"
    return text
