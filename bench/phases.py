"""Where one image's time goes in an agent pass: the registry check, the disk budget's Range
reads, the documents seeded into containerd's store, the pull, the tag bind and the wait for CRI
to see it — summed per phase over one instrumented pass, said per image."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from agent.adapters.registry.client import RegistryClient
from agent.adapters.runtime.containerd import ContainerdImages
from agent.adapters.runtime.cri import CriClient
from agent.core.engine.pipeline import ImagePipeline

# (owner, method, phase): every call of the method counts towards the phase.
PHASES: tuple[tuple[Any, str, str], ...] = (
    (RegistryClient, "resolve", "check"),
    (RegistryClient, "blob_range", "range"),
    (ContainerdImages, "_write", "seed"),
    (CriClient, "pull", "pull"),
    (ContainerdImages, "bind_tag", "bind"),
    (ImagePipeline, "_until_visible", "visible"),
)


@contextlib.contextmanager
def phases() -> Iterator[dict[str, list[float]]]:
    """Seconds spent in each phase's calls while the context lasts (one list per phase)."""
    spent: dict[str, list[float]] = {phase: [] for _, _, phase in PHASES}
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in PHASES]

    def timed(method: Callable[..., Awaitable[Any]], phase: str) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(method)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await method(*args, **kwargs)
            finally:
                spent[phase].append(time.perf_counter() - started)

        return wrapper

    for owner, name, phase in PHASES:
        setattr(owner, name, timed(getattr(owner, name), phase))
    try:
        yield spent
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)


def per_image(spent: dict[str, list[float]], images: int) -> str:
    """`check 35ms, range 23ms, …` per image, from one pass's sums."""
    return ", ".join(
        f"{phase} {sum(times) / images * 1000:.0f}ms" for phase, times in spent.items() if times
    )
