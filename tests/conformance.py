"""What the reconciler relies on from the runtime (CRI) and containerd's Images API, as one
suite run twice: against the fakes in tests/fakes.py (tests/unit/test_conformance.py) and against
the real CriClient and ContainerdImages on real containerd, every release line
(tests/integration/test_conformance.py). If a fake drifts from containerd, one of them fails."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from agent.core.plan import NodeImage
from agent.core.ports import ImageRuntime, TagBinder
from agent.core.reconcile import BIND_POLL_INTERVAL, BIND_VISIBLE_TIMEOUT


@dataclass(frozen=True)
class Sample:
    """An image the registry holds for the node's platform: `name:tag` names `digest`."""

    name: str
    tag: str
    digest: str

    @property
    def tagged(self) -> str:
        return f"{self.name}:{self.tag}"

    @property
    def by_digest(self) -> str:
        return f"{self.name}@{self.digest}"


async def _within(
    seconds: float, look: Callable[[], Awaitable[NodeImage | None]]
) -> NodeImage | None:
    """What `look` finds once it finds something, or its last answer after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        found = await look()
        if found is not None or time.monotonic() > deadline:
            return found
        await asyncio.sleep(BIND_POLL_INTERVAL)


async def an_absent_image_has_no_status(
    runtime: ImageRuntime, binder: TagBinder, image: Sample
) -> None:
    assert await runtime.image_status(image.tagged) is None
    assert await runtime.image_status(image.by_digest) is None


async def a_tag_and_digest_pull_records_only_the_digest(
    runtime: ImageRuntime, binder: TagBinder, image: Sample
) -> None:
    image_id = await runtime.pull(f"{image.tagged}@{image.digest}")
    found = await runtime.image_status(image.by_digest)
    assert found is not None and found.id == image_id
    assert await runtime.image_status(image.tagged) is None, "the tag is dropped"


async def a_bound_tag_names_the_content_at_once(
    runtime: ImageRuntime, binder: TagBinder, image: Sample
) -> None:
    image_id = await runtime.pull(image.by_digest)
    await binder.bind_tag(image.tagged, image.by_digest)
    # CRI learns of the tag from containerd's event stream, a moment later: the agent waits
    # up to BIND_VISIBLE_TIMEOUT for it (agent.reconcile), so that is what is held here.
    found = await _within(BIND_VISIBLE_TIMEOUT, lambda: runtime.image_status(image.tagged))
    assert found is not None and found.id == image_id
    assert image.tagged in found.repo_tags


async def a_tag_pull_and_a_digest_pull_are_one_image(
    runtime: ImageRuntime, binder: TagBinder, image: Sample
) -> None:
    by_tag = await runtime.pull(image.tagged)
    by_digest = await runtime.pull(image.by_digest)
    assert by_tag == by_digest
    found = await runtime.image_status(image.tagged)
    assert found is not None and image.by_digest in found.repo_digests
    listed = [i for i in await runtime.list_images() if i.id == by_tag]
    assert len(listed) == 1, listed


async def pinning_labels_each_name_once(
    runtime: ImageRuntime, binder: TagBinder, image: Sample
) -> None:
    await runtime.pull(image.tagged)
    names = [image.tagged, image.by_digest, f"{image.name}:absent"]
    assert sorted(await binder.pin(names)) == sorted(names[:2])
    assert await binder.pin(names) == [], "already pinned: nothing to do"


async def a_bind_labels_only_the_records_it_is_told_to(
    runtime: ImageRuntime, binder: TagBinder, image: Sample
) -> None:
    await runtime.pull(image.by_digest)
    await binder.bind_tag(image.tagged, image.by_digest, pin=[image.tagged])
    names = [image.tagged, image.by_digest]
    assert await binder.pin(names) == [image.by_digest], "the tag was labelled by the bind"


async def released_pins_are_this_agents_and_leave_the_records_it_keeps(
    runtime: ImageRuntime, binder: TagBinder, image: Sample
) -> None:
    # Release is node-wide (other cases' pins go too): look at this image's records only.
    await runtime.pull(image.tagged)
    names = [image.tagged, image.by_digest]
    await binder.pin(names)
    first = await binder.release(keep=[image.tagged])
    assert image.by_digest in first and image.tagged not in first, first
    assert not set(names) & set(await binder.release(keep=[image.tagged])), "released once"
    assert await binder.pin(names) == [image.by_digest], "the pin label went with it"
    assert set(names) <= set(await binder.release(keep=[]))
    # CRI learns of the label's removal from containerd's event stream, a moment later.
    found = await _within(BIND_VISIBLE_TIMEOUT, lambda: _unpinned(runtime, image.tagged))
    assert found is not None, "CRI still reports it pinned"


async def _unpinned(runtime: ImageRuntime, name: str) -> NodeImage | None:
    """The image `name` names, once CRI reports it present and not pinned."""
    found = await runtime.image_status(name)
    return found if found is not None and not found.pinned else None


CASES: list[Callable[[ImageRuntime, TagBinder, Sample], Awaitable[None]]] = [
    an_absent_image_has_no_status,
    a_tag_and_digest_pull_records_only_the_digest,
    a_bound_tag_names_the_content_at_once,
    a_tag_pull_and_a_digest_pull_are_one_image,
    pinning_labels_each_name_once,
    a_bind_labels_only_the_records_it_is_told_to,
    released_pins_are_this_agents_and_leave_the_records_it_keeps,
]
