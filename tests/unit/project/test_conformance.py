"""The fakes against the conformance suites (the same suites run on real containerd and
docker-registry)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from agent.core.images import reference as references
from agent.core.ports import ImageRuntime, Resolver, TagBinder
from tests.conformance import CASES, REGISTRY_CASES, Pushed, Sample
from tests.fakes import D1, NODE, FakeBinder, FakeRegistry, FakeRuntime


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
async def test_the_fakes_behave_like_containerd(
    case: Callable[[ImageRuntime, TagBinder, Sample], Awaitable[None]],
) -> None:
    runtime = FakeRuntime()
    await case(runtime, FakeBinder(runtime), Sample("r.io/a/app", "1", D1))


@pytest.mark.parametrize("case", REGISTRY_CASES, ids=lambda c: c.__name__)
async def test_the_fake_registry_behaves_like_docker_registry(
    case: Callable[[Resolver, Pushed], Awaitable[None]],
) -> None:
    image = Pushed(
        references.parse("r.io/a/app:1"), D1, NODE, references.parse("r.io/a/never-pushed:1")
    )
    await case(FakeRegistry(missing=frozenset({"a/never-pushed"})), image)
