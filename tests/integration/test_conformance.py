"""The real CriClient and ContainerdImages on real containerd against the conformance suite
(the same suite holds the unit tests' fakes to this behaviour)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from agent import wiring
from agent.core import platform as platforms
from agent.core.ports import ImageRuntime, TagBinder
from tests.conformance import CASES, Sample
from tests.harness.containerd import Containerd
from tests.harness.images import push_image
from tests.harness.registry import Registry

NODE = str(platforms.detect())


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
def test_the_real_clients_behave_as_the_fakes_assume(
    case: Callable[[ImageRuntime, TagBinder, Sample], Awaitable[None]],
    registry: Registry,
    containerd: Containerd,
    repo: str,
) -> None:
    pushed = push_image(registry, repo, "1", (NODE, "linux/arm64"))

    async def go() -> None:
        async with wiring.runtime(containerd.endpoint) as runtime:
            await runtime.meet()
            await case(runtime.cri, runtime.images, Sample(pushed.name, "1", pushed.digest))

    asyncio.run(go())
