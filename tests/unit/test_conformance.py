"""The fakes against the conformance suite (the same suite runs on real containerd)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from agent.core.ports import ImageRuntime, TagBinder
from tests.conformance import CASES, Sample
from tests.fakes import D1, FakeBinder, FakeRuntime


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
async def test_the_fakes_behave_like_containerd(
    case: Callable[[ImageRuntime, TagBinder, Sample], Awaitable[None]],
) -> None:
    runtime = FakeRuntime()
    await case(runtime, FakeBinder(runtime), Sample("r.io/a/app", "1", D1))
