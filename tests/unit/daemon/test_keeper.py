"""`from-cluster --watch`'s loop (agent.daemon.keeper) with a fake API: a failure is retried, never
the end of the process; a change is one write after the debounce; a 410 lists again."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from agent.core.errors import KubeApiError
from agent.daemon import keeper as keepers


async def until(check: Callable[[], bool]) -> None:
    """Wait for a state (the surrounding timeout bounds it)."""
    while not check():  # noqa: ASYNC110 (the fakes signal nothing)
        await asyncio.sleep(0.01)


def settings() -> argparse.Namespace:
    return argparse.Namespace(
        listen=None, all_namespaces=True, namespace="default", selector=None,
        field_selector=None, key="preload.yaml", max_drop=50.0, debounce=0.0, resync=600.0,
    )  # fmt: skip


class FakeApi:
    def __init__(self) -> None:
        self.recorded: list[tuple[str, ...]] = []
        self.watched: list[str] = []
        self.events: asyncio.Queue[str | Exception | None] = asyncio.Queue()

    async def record_event(self, *args: str) -> None:
        self.recorded.append(args)
        if len(self.recorded) == 2:
            raise KubeApiError("POST events: HTTP 403")  # said, never fatal

    async def changes(self, kind: str, *args: Any) -> AsyncIterator[str | None]:
        self.watched.append(args[-1])
        item = await self.events.get()
        if isinstance(item, Exception):
            raise item
        yield item


async def test_failures_are_retried_and_changes_and_410s_list_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(keepers, "BACKOFF", (0.01,))
    api = FakeApi()
    reads: list[int] = []
    applied: list[str] = []

    async def read(args: argparse.Namespace, _: Any) -> tuple[str, dict[str, str]]:
        reads.append(len(reads))
        if len(reads) == 1:
            raise KubeApiError("GET /apis/apps/v1/deployments: HTTP 503")
        return f"images:\n  - r.io/a:{len(reads)}\n", {"Deployment": str(100 + len(reads))}

    async def apply(*args: Any) -> tuple[str, str]:
        applied.append(args[3])
        return "wrote", f"wrote {len(applied)}"

    keeper = keepers.Keeper(settings(), api, ("ns", "cm"), read, apply)
    running = asyncio.create_task(keeper.run())
    try:
        async with asyncio.timeout(10):
            await until(lambda: bool(api.watched))
            assert keeper.writes.labels("failed")._value.get() == 1  # retried, not ended
            await api.events.put(None)  # a change: listed again, written again
            await until(lambda: len(applied) == 2)
            await api.events.put(KubeApiError("gone", 410))  # expired: listed again at once
            await until(lambda: len(applied) == 3)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    assert api.watched[:2] == ["102", "103"], "each watch starts where its list was read"
    assert keeper.relists.labels("expired")._value.get() == 1
    assert keeper.relists.labels("change")._value.get() == 1
    assert running.cancelled(), "it ran until stopped"
    assert keeper.images._value.get() == 1
    reasons = [event[3] for event in api.recorded]
    assert reasons == ["ListFailed", "ListUpdated", "ListUpdated", "ListUpdated"], api.recorded
