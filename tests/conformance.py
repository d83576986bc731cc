"""What the reconciler relies on from its ports — the runtime (CRI), containerd's Images API and
a registry — as suites run twice: against the fakes in tests/fakes.py
(tests/unit/project/test_conformance.py) and against the real CriClient, ContainerdImages and
RegistryClient on real containerd (every release line) and docker-registry
(tests/integration/test_conformance.py). If a fake drifts from the real thing, one of them fails.
Error paths are held too: which error, and whether it is permanent, is what the agent decides by."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from agent.core.engine.claims import Released
from agent.core.engine.pins import CRI_POLL_INTERVAL
from agent.core.engine.pipeline import BIND_VISIBLE_TIMEOUT
from agent.core.engine.plan import NodeImage
from agent.core.errors import ImageError, RegistryError, TransientRegistryError
from agent.core.images.manifest import Descriptor
from agent.core.images.platform import Platform
from agent.core.images.reference import Reference
from agent.core.ports import ImageRuntime, Resolver, TagBinder

OWNER = "conformance:one-list"
OTHER_OWNER = "conformance:another-list"


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
        await asyncio.sleep(CRI_POLL_INTERVAL)


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
    # up to BIND_VISIBLE_TIMEOUT for it (agent.core.engine.pipeline), so that is what is held here.
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
    assert sorted(await binder.pin(names, OWNER)) == sorted(names[:2])
    assert await binder.pin(names, OWNER) == [], "already pinned: nothing to do"


async def a_bind_labels_only_the_records_it_is_told_to(
    runtime: ImageRuntime, binder: TagBinder, image: Sample
) -> None:
    await runtime.pull(image.by_digest)
    await binder.bind_tag(image.tagged, image.by_digest, pin=[image.tagged], owner=OWNER)
    names = [image.tagged, image.by_digest]
    assert await binder.pin(names, OWNER) == [image.by_digest], "the tag was claimed by the bind"


async def released_pins_are_this_agents_and_leave_the_records_it_keeps(
    runtime: ImageRuntime, binder: TagBinder, image: Sample
) -> None:
    # Release is node-wide (other cases' pins go too): look at this image's records only.
    await runtime.pull(image.tagged)
    names = [image.tagged, image.by_digest]
    await binder.pin(names, OWNER)
    first = _names(await binder.release(OWNER, keep=[image.tagged]))
    assert image.by_digest in first and image.tagged not in first, first
    again = _names(await binder.release(OWNER, keep=[image.tagged]))
    assert not set(names) & again, "released once"
    assert await binder.pin(names, OWNER) == [image.by_digest], "the pin label went with it"
    assert set(names) <= _names(await binder.release(OWNER, keep=[]))
    # CRI learns of the label's removal from containerd's event stream, a moment later.
    found = await _within(BIND_VISIBLE_TIMEOUT, lambda: _unpinned(runtime, image.tagged))
    assert found is not None, "CRI still reports it pinned"


async def a_pin_two_owners_hold_stays_until_both_let_go(
    runtime: ImageRuntime, binder: TagBinder, image: Sample
) -> None:
    await runtime.pull(image.by_digest)
    names = [image.by_digest]
    await binder.pin(names, OWNER)
    await binder.pin(names, OTHER_OWNER)
    mine = [r for r in await binder.release(OWNER) if r.name == image.by_digest]
    assert mine and mine[0].kept_by == (OTHER_OWNER,), mine
    held = (await binder.pins())[image.by_digest]
    assert held.pinned and [name for _, name in held.owners] == [OTHER_OWNER], held
    theirs = [r for r in await binder.release(OTHER_OWNER) if r.name == image.by_digest]
    assert theirs and theirs[0].kept_by == (), theirs
    assert image.by_digest not in await binder.pins(), "no holder left, no pin"


def _names(released: Sequence[Released]) -> set[str]:
    return {r.name for r in released}


async def _unpinned(runtime: ImageRuntime, name: str) -> NodeImage | None:
    """The image `name` names, once CRI reports it present and not pinned."""
    found = await runtime.image_status(name)
    return found if found is not None and not found.pinned else None


async def a_tag_the_registry_lacks_fails_its_pull_for_good(
    runtime: ImageRuntime, binder: TagBinder, image: Sample
) -> None:
    try:
        await runtime.pull(f"{image.name}:absent")
    except ImageError as exc:
        assert exc.permanent, f"a missing tag is not worth retrying: {exc}"
    else:
        raise AssertionError("pulling a tag the registry lacks succeeded")
    assert await runtime.image_status(f"{image.name}:absent") is None


async def binding_a_tag_to_absent_content_is_an_image_error(
    runtime: ImageRuntime, binder: TagBinder, image: Sample
) -> None:
    try:
        await binder.bind_tag(image.tagged, image.by_digest)
    except ImageError as exc:
        assert image.tagged in str(exc) or image.by_digest in str(exc), exc
    else:
        raise AssertionError("a tag was bound to content the node does not hold")
    assert await runtime.image_status(image.tagged) is None


CASES: list[Callable[[ImageRuntime, TagBinder, Sample], Awaitable[None]]] = [
    an_absent_image_has_no_status,
    a_tag_and_digest_pull_records_only_the_digest,
    a_bound_tag_names_the_content_at_once,
    a_tag_pull_and_a_digest_pull_are_one_image,
    pinning_labels_each_name_once,
    a_bind_labels_only_the_records_it_is_told_to,
    released_pins_are_this_agents_and_leave_the_records_it_keeps,
    a_pin_two_owners_hold_stays_until_both_let_go,
    a_tag_the_registry_lacks_fails_its_pull_for_good,
    binding_a_tag_to_absent_content_is_an_image_error,
]


# -- the registry ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pushed:
    """A multi-platform image the registry holds: `ref` (a tag) names the index `digest`, which
    has a manifest for `node`; `missing` names a repository the registry never saw."""

    ref: Reference
    digest: str
    node: Platform
    missing: Reference


OTHER = Platform("linux", "s390x")


async def a_tag_names_its_index(registry: Resolver, image: Pushed) -> None:
    digest, media_type = await registry.head_digest(image.ref)
    assert digest == image.digest
    assert "index" in media_type or "manifest.list" in media_type, media_type


async def a_missing_repository_is_a_permanent_registry_error(
    registry: Resolver, image: Pushed
) -> None:
    try:
        await registry.head_digest(image.missing)
    except TransientRegistryError as exc:
        raise AssertionError(f"a missing repository is not transient: {exc}") from exc
    except RegistryError as exc:
        assert exc.status == 404, exc.status
    else:
        raise AssertionError("a repository the registry never saw resolved")


async def the_nodes_manifest_is_chosen(registry: Resolver, image: Pushed) -> None:
    resolution = await registry.resolve(image.ref, image.node)
    assert resolution.digest == image.digest
    assert resolution.chosen is not None and resolution.chosen.platform == image.node
    assert image.node in resolution.offered
    assert resolution.refusal() is None


async def a_platform_not_offered_is_refused(registry: Resolver, image: Pushed) -> None:
    resolution = await registry.resolve(image.ref, OTHER)
    assert resolution.chosen is None
    refusal = resolution.refusal()
    assert refusal is not None and str(OTHER) in refusal, refusal


async def the_chosen_manifest_names_its_layers_and_their_sizes_can_be_read(
    registry: Resolver, image: Pushed
) -> None:
    resolution = await registry.resolve(image.ref, image.node)
    assert resolution.chosen is not None
    manifest = await registry.fetch_manifest(image.ref, resolution.chosen.digest)
    assert manifest.layers, "a manifest with no layers"
    gzip: Descriptor = next(layer for layer in manifest.layers if layer.media_type.endswith("gzip"))
    tail = await registry.blob_range(image.ref, gzip.digest, "-4")
    assert tail is not None and len(tail) == 4, tail


REGISTRY_CASES: list[Callable[[Resolver, Pushed], Awaitable[None]]] = [
    a_tag_names_its_index,
    a_missing_repository_is_a_permanent_registry_error,
    the_nodes_manifest_is_chosen,
    a_platform_not_offered_is_refused,
    the_chosen_manifest_names_its_layers_and_their_sizes_can_be_read,
]
