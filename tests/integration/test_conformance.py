"""The real CriClient and ContainerdImages on real containerd, and the real RegistryClient on
docker-registry, against the conformance suites (the same suites hold the unit tests' fakes to
this behaviour)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from agent import wiring
from agent.core.images import platform as platforms
from agent.core.images import reference as references
from agent.core.lists.config import RegistrySettings
from agent.core.ports import ImageRuntime, Resolver, TagBinder
from tests.conformance import CASES, REGISTRY_CASES, Pushed, Sample
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
        async with wiring.containerd(containerd.endpoint) as runtime:
            await runtime.meet()
            await case(runtime.cri, runtime.images, Sample(pushed.name, "1", pushed.digest))

    asyncio.run(go())


@pytest.mark.parametrize("case", REGISTRY_CASES, ids=lambda c: c.__name__)
def test_the_real_registry_client_behaves_as_the_fake_assumes(
    case: Callable[[Resolver, Pushed], Awaitable[None]], registry: Registry, repo: str
) -> None:
    pushed = push_image(registry, repo, "1", (NODE, "linux/arm64"))
    image = Pushed(
        references.parse(f"{pushed.name}:1"),
        pushed.digest,
        platforms.parse(NODE),
        references.parse(f"{pushed.name}-never-pushed:1"),
    )

    async def go() -> None:
        plain_http = RegistrySettings(insecure=True)
        async with wiring.registry_client(lambda host: plain_http, None) as client:
            await case(client, image)

    asyncio.run(go())
