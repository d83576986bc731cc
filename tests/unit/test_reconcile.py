"""The reconcile loop with in-memory fakes of the runtime and the registry."""

from __future__ import annotations

import asyncio

import pytest

from agent.config import parse
from agent.errors import RegistryError, RuntimeUnavailable
from agent.manifest import OCI_INDEX, OCI_MANIFEST, Descriptor, Resolution
from agent.plan import NodeImage
from agent.platform import Platform
from agent.reconcile import Reconciler
from agent.reference import Reference

NODE = Platform("linux", "amd64")
D1 = "sha256:" + "1" * 64


class FakeRuntime:
    """Pulls succeed instantly and are recorded the way containerd records them."""

    endpoint = "fake://runtime"

    def __init__(self, fail_list: bool = False) -> None:
        self.images: list[NodeImage] = []
        self.pulls: list[str] = []
        self.credentials_used: list[object] = []
        self.fail_list = fail_list
        self.in_flight = 0
        self.max_in_flight = 0

    async def list_images(self) -> list[NodeImage]:
        if self.fail_list:
            raise RuntimeUnavailable(self.endpoint, "socket missing")
        return list(self.images)

    async def image_status(self, reference: str) -> NodeImage | None:
        for image in self.images:
            if reference in image.repo_tags or reference in image.repo_digests:
                return image
        return None

    async def pull(self, reference: str, credential: object = None) -> str:
        self.credentials_used.append(credential)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        await asyncio.sleep(0.01)
        self.in_flight -= 1
        self.pulls.append(reference)
        name, sep, _ = reference.partition("@")
        if sep:
            record = NodeImage(f"id-{reference}", (), (reference,), 10)
        else:
            record = NodeImage(
                f"id-{reference}", (reference,), (f"{name.rpartition(':')[0]}@{D1}",), 10
            )
        self.images.append(record)
        return record.id


class FakeBinder:
    def __init__(self, runtime: FakeRuntime) -> None:
        self.runtime = runtime
        self.pinned: list[str] = []

    async def pin(self, names: list[str]) -> list[str]:
        known = {n for i in self.runtime.images for n in (*i.repo_tags, *i.repo_digests)}
        new = [n for n in names if n in known and n not in self.pinned]
        self.pinned.extend(new)
        return new

    async def bind_tag(self, tag_name: str, content_name: str) -> None:
        content = await self.runtime.image_status(content_name)
        assert content is not None
        self.runtime.images = [
            NodeImage(i.id, tuple(t for t in i.repo_tags if t != tag_name), i.repo_digests, i.size)
            for i in self.runtime.images
        ]
        self.runtime.images.append(
            NodeImage(
                content.id, (*content.repo_tags, tag_name), content.repo_digests, content.size
            )
        )
        self.runtime.images.remove(content)


class FakeRegistry:
    def __init__(self, missing: frozenset[str] = frozenset()) -> None:
        self.missing = missing
        self.requests = 0

    async def head_digest(self, ref: Reference) -> tuple[str, str]:
        self.requests += 1
        if ref.path in self.missing:
            raise RegistryError(ref.domain, ref.path, "not found", status=404)
        return D1, OCI_INDEX

    async def resolve(self, ref: Reference, platform: Platform | None) -> Resolution:
        self.requests += 1
        chosen = Descriptor(OCI_MANIFEST, "sha256:" + "9" * 64, 1, NODE)
        offered = (NODE,)
        return Resolution(
            ref, D1, OCI_INDEX, platform, offered, chosen if platform == NODE else None
        )


async def test_one_failing_image_does_not_stop_the_others() -> None:
    config = parse("images:\n  - r.io/a/missing:1\n  - r.io/a/good:1\n  - r.io/a/other:2\n")
    runtime = FakeRuntime()
    reconciler = Reconciler(runtime, FakeRegistry(frozenset({"a/missing"})), None, NODE)

    outcomes = await reconciler.converge(config)

    assert [o.status for o in outcomes] == ["failed", "pulled", "pulled"]
    assert "not found" in outcomes[0].detail and "r.io" in outcomes[0].detail
    assert runtime.pulls == ["r.io/a/good:1", "r.io/a/other:2"]


async def test_pulls_stay_within_the_concurrency_limit() -> None:
    images = "".join(f"  - r.io/a/img{i}@{D1}\n" for i in range(8))
    config = parse(f"images:\n{images}concurrency: 2\n")
    runtime = FakeRuntime()

    outcomes = await Reconciler(runtime, FakeRegistry(), None, NODE).converge(config)

    assert all(o.status == "pulled" for o in outcomes)
    assert runtime.max_in_flight == 2


async def test_pinned_tag_without_a_binder_preloads_the_digest_and_says_why_not_the_tag() -> None:
    config = parse(f"images:\n  - r.io/a/app:1@{D1}\n")
    runtime = FakeRuntime()

    (outcome,) = await Reconciler(runtime, FakeRegistry(), None, NODE).converge(config)

    assert outcome.status == "failed"
    assert "cannot be bound" in outcome.detail and f"r.io/a/app@{D1} is preloaded" in outcome.detail
    assert runtime.pulls == [f"r.io/a/app@{D1}"]


async def test_pinned_tag_is_bound_after_the_digest_pull() -> None:
    config = parse(f"images:\n  - r.io/a/app:1@{D1}\n")
    runtime = FakeRuntime()

    (outcome,) = await Reconciler(runtime, FakeRegistry(), FakeBinder(runtime), NODE).converge(
        config
    )

    assert outcome.status == "pulled", outcome
    assert (await runtime.image_status("r.io/a/app:1")) is not None


async def test_content_for_another_platform_is_never_pulled() -> None:
    config = parse(f"images:\n  - r.io/a/app@{D1}\n")
    runtime = FakeRuntime()

    (outcome,) = await Reconciler(
        runtime, FakeRegistry(), None, Platform("linux", "s390x")
    ).converge(config)

    assert outcome.status == "refused" and "no linux/s390x manifest" in outcome.detail
    assert outcome.permanent and not outcome.pull_attempted
    assert runtime.pulls == []


async def test_an_unreachable_runtime_stops_the_pass_with_the_endpoint() -> None:
    config = parse("images:\n  - r.io/a/app:1\n")
    registry = FakeRegistry()
    with pytest.raises(RuntimeUnavailable, match="fake://runtime"):
        await Reconciler(FakeRuntime(fail_list=True), registry, None, NODE).converge(config)
    assert registry.requests == 0


async def test_preloaded_images_are_labelled_pinned_once() -> None:
    config = parse(
        f"images:\n  - r.io/a/app:1@{D1}\n  - r.io/a/tag:2\n"
        "  - image: r.io/a/other:1\n    platforms: [linux/arm64]\n"
    )
    runtime = FakeRuntime()
    binder = FakeBinder(runtime)
    reconciler = Reconciler(runtime, FakeRegistry(), binder, NODE)

    await reconciler.converge(config)
    await reconciler.converge(config)

    assert binder.pinned == ["r.io/a/app:1", f"r.io/a/app@{D1}", "r.io/a/tag:2"]


async def test_pinning_can_be_turned_off() -> None:
    config = parse(f"images:\n  - r.io/a/app@{D1}\npin: false\n")
    runtime = FakeRuntime()
    binder = FakeBinder(runtime)

    await Reconciler(runtime, FakeRegistry(), binder, NODE).converge(config)

    assert binder.pinned == []
