"""The reconcile loop with in-memory fakes of the runtime and the registry."""

from __future__ import annotations

import asyncio

import pytest

from agent.core.engine import deadline, slots
from agent.core.engine.disk import DiskGuard, DiskUsage
from agent.core.engine.reconcile import Reconciler
from agent.core.errors import RuntimeUnavailable
from agent.core.images.manifest import Resolution
from agent.core.images.platform import Platform
from agent.core.images.reference import Reference
from agent.core.lists.config import parse
from agent.core.ports import Outcome
from tests.fakes import D1, NODE, FakeBinder, FakeRegistry, FakeRuntime


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


async def test_what_the_check_read_is_in_the_runtimes_store_while_its_pull_runs() -> None:
    config = parse(f"images:\n  - r.io/a/app@{D1}\n  - r.io/a/other:2\nconcurrency: 1\n")
    runtime = FakeRuntime()
    binder = FakeBinder(runtime)

    outcomes = await Reconciler(runtime, FakeRegistry(), None, NODE, seeder=binder).converge(config)

    assert [o.status for o in outcomes] == ["pulled", "pulled"]
    # Each pull ran inside its own seeding of the documents its check read.
    seeded = {image: (documents, pulls) for image, documents, pulls in binder.seeded_for}
    assert seeded.keys() == {f"r.io/a/app@{D1}", "r.io/a/other:2"}
    for image, (documents, pulls) in seeded.items():
        assert documents == (D1,) and image in pulls, (image, pulls)
    assert binder.seeding == [], "every seeding ended"


async def test_documents_are_seeded_before_the_pull_slot_is_taken() -> None:
    """Writing them is a commit containerd syncs to disk: within the slot it delayed every
    small image's pull. With one slot, the second image seeds while the first one pulls."""
    config = parse(f"images:\n  - r.io/a/app@{D1}\n  - r.io/a/other:2\nconcurrency: 1\n")
    runtime = FakeRuntime()
    binder = FakeBinder(runtime)
    second_seeded = asyncio.Event()
    runtime.pull_waits_for[f"r.io/a/app@{D1}"] = second_seeded
    binder.on_seeded = lambda image: second_seeded.set() if image == "r.io/a/other:2" else None
    reconciler = Reconciler(runtime, FakeRegistry(), None, NODE, seeder=binder)

    outcomes = await asyncio.wait_for(reconciler.converge(config), timeout=10)

    assert [o.status for o in outcomes] == ["pulled", "pulled"]
    assert runtime.max_in_flight == 1


async def test_content_for_another_platform_is_never_pulled() -> None:
    config = parse(f"images:\n  - r.io/a/app@{D1}\n")
    runtime = FakeRuntime()

    started: list[str] = []
    (outcome,) = await Reconciler(
        runtime,
        FakeRegistry(),
        None,
        Platform("linux", "s390x"),
        on_start=lambda entry: started.append(entry.written),
    ).converge(config)

    assert started == [], "`-v once` says started only for a pull that starts"
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
    outcomes = await reconciler.converge(config)

    assert sorted(binder.pinned) == ["r.io/a/app:1", "r.io/a/tag:2"]
    assert all(o.pinned for o in outcomes if o.status != "skipped"), outcomes


async def test_a_converged_node_whose_runtime_reports_pins_costs_no_pin_call() -> None:
    config = parse(f"images:\n  - r.io/a/app:1@{D1}\n  - r.io/a/tag:2\n")
    runtime = FakeRuntime()
    binder = FakeBinder(runtime)
    reconciler = Reconciler(runtime, FakeRegistry(), binder, NODE)
    await reconciler.converge(config)
    calls = binder.pin_calls

    outcomes = await reconciler.converge(config)

    assert binder.pin_calls == calls and all(o.pinned for o in outcomes)
    blind = Reconciler(runtime, FakeRegistry(), binder, NODE, pins_honoured=False)
    await blind.converge(config)
    assert binder.pin_calls == calls + 1, "unreported pins must be looked up"


async def test_a_bind_labels_as_it_goes() -> None:
    config = parse(f"images:\n  - r.io/a/app:1@{D1}\n")
    runtime = FakeRuntime()
    binder = FakeBinder(runtime)

    (outcome,) = await Reconciler(runtime, FakeRegistry(), binder, NODE).converge(config)

    assert outcome.status == "pulled" and outcome.pinned
    assert binder.pinned == ["r.io/a/app:1"], "the tag alone: its content is pinned through it"


async def test_a_second_owner_of_a_pinned_image_claims_it_and_keeps_it_after_the_first() -> None:
    both = parse(f"images:\n  - r.io/a/app:1@{D1}\n  - r.io/a/tag:2\n")
    runtime = FakeRuntime()
    binder = FakeBinder(runtime)
    team_a = Reconciler(runtime, FakeRegistry(), binder, NODE, owner="a")
    team_b = Reconciler(runtime, FakeRegistry(), binder, NODE, owner="b")
    await team_a.converge(both)
    await team_b.converge(both)  # every image present and reported pinned: b still claims

    await team_a.converge(parse(f"images:\n  - r.io/a/app:1@{D1}\n"))

    assert [(r.name, r.kept_by) for r in team_a.released] == [("r.io/a/tag:2", ("b",))]
    assert sorted(binder.pinned) == ["r.io/a/app:1", "r.io/a/tag:2"]
    await team_b.converge(parse("images:\n  - r.io/a/other:3\n"))
    assert sorted(r.name for r in team_b.released if not r.kept_by) == ["r.io/a/tag:2"]
    assert sorted(binder.pinned) == ["r.io/a/app:1", "r.io/a/other:3"]


async def test_pinning_can_be_turned_off() -> None:
    config = parse(f"images:\n  - r.io/a/app@{D1}\npin: false\n")
    runtime = FakeRuntime()
    binder = FakeBinder(runtime)

    await Reconciler(runtime, FakeRegistry(), binder, NODE).converge(config)

    assert binder.pinned == []


async def test_a_steady_node_reuses_last_passes_decisions_until_an_image_changes() -> None:
    config = parse(f"images:\n  - r.io/a/app:1@{D1}\n  - r.io/a/b@{D1}\n")
    runtime = FakeRuntime()
    reconciler = Reconciler(runtime, FakeRegistry(), FakeBinder(runtime), NODE)
    await reconciler.converge(config)
    second = await reconciler.converge(config)

    third = await reconciler.converge(config)

    assert [o.status for o in third] == ["hit", "hit"]
    assert all(a is b for a, b in zip(second, third, strict=True)), "decided again"
    runtime.images = [i for i in runtime.images if f"r.io/a/b@{D1}" not in i.repo_digests]
    fourth = await reconciler.converge(config)
    assert [o.status for o in fourth] == ["hit", "pulled"]


async def test_a_converged_pass_does_not_wait_for_pins_a_runtime_never_reports() -> None:
    """Seen on containerd 1.6.20 with a client that assumed pins were honoured: 40 ListImages
    calls per converged pass, waiting for a pin that never shows."""
    config = parse(f"images:\n  - r.io/a/app:1@{D1}\n")
    runtime = FakeRuntime(reports_pins=False)
    reconciler = Reconciler(runtime, FakeRegistry(), FakeBinder(runtime), NODE)
    await reconciler.converge(config)
    calls = runtime.list_calls

    (outcome,) = await reconciler.converge(config)

    assert outcome.status == "hit" and not outcome.pinned
    assert runtime.list_calls == calls + 1


async def test_each_outcome_is_reported_as_soon_as_its_image_is_done() -> None:
    config = parse(f"images:\n  - r.io/a/slow@{D1}\n  - r.io/a/present@{D1}\n")
    runtime = FakeRuntime()
    reconciler = Reconciler(runtime, FakeRegistry(), None, NODE)
    await reconciler.converge(parse(f"images:\n  - r.io/a/present@{D1}\n"))
    heard: list[tuple[str, int]] = []

    await reconciler.converge(
        config, on_outcome=lambda o: heard.append((o.status, len(runtime.pulls)))
    )

    assert heard == [("hit", 1), ("pulled", 2)], "the hit is told before the pull ends"


class SlowFirst(FakeRegistry):
    """Resolves the first images of the list last: their lookups finish after the others'."""

    async def resolve(self, ref: Reference, platform: Platform | None) -> Resolution:
        if ref.path.endswith(("img00", "img01", "img02")):
            await asyncio.sleep(0.05)
        return await super().resolve(ref, platform)


async def test_room_on_disk_goes_in_list_order_and_what_is_preloaded_is_a_prefix() -> None:
    images = "".join(f"  - r.io/a/img{i:02d}:1\n" for i in range(20))
    config = parse(f"images:\n{images}concurrency: 4\nmaxDiskUsagePercent: 50\n")
    runtime = FakeRuntime()
    # Each image takes 41 bytes: a 1-byte config, a 10-byte gzip layer unpacking to 30. The
    # filesystem (1000 bytes) sees what was pulled, as statvfs does.

    async def mountpoint() -> str | None:
        return "/images"

    disk = DiskGuard(mountpoint, lambda path: DiskUsage(1000, 1000 - 41 * len(runtime.pulls)))
    reconciler = Reconciler(runtime, SlowFirst(), None, NODE, disk=disk)

    outcomes = await reconciler.converge(config)

    statuses = [o.status for o in outcomes]
    assert statuses == ["pulled"] * 12 + ["deferred"] * 8, statuses
    assert "this image would take it to 53%" in outcomes[12].detail, outcomes[12].detail
    assert outcomes[13].detail.startswith("over disk budget: behind r.io/a/img12:1 in the list"), (
        outcomes[13].detail
    )


async def test_layers_whose_size_cannot_be_read_are_estimated_and_said_so() -> None:
    config = parse("images:\n  - r.io/a/big:1\nmaxDiskUsagePercent: 50\n")

    async def mountpoint() -> str | None:
        return "/images"

    disk = DiskGuard(mountpoint, lambda path: DiskUsage(1000, 1000))
    # 100-byte layers unpack to ~400 by the default ratio: 501 bytes, past 50%.
    registry = FakeRegistry(layer_bytes=100, ranges=False)
    (outcome,) = await Reconciler(FakeRuntime(), registry, None, NODE, disk=disk).converge(config)

    assert outcome.status == "deferred", outcome
    assert "400 B of it estimated (layer sizes not readable)" in outcome.detail, outcome.detail


class DeadFirst(FakeRegistry):
    """The first image's registry never answers."""

    async def resolve(self, ref: Reference, platform: Platform | None) -> Resolution:
        if ref.path.endswith("dead"):
            await asyncio.Event().wait()
        return await super().resolve(ref, platform)


async def test_an_entry_whose_registry_never_answers_holds_up_the_others_briefly_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(slots, "TURN_PATIENCE", 0.2)
    monkeypatch.setattr(deadline, "LOOKUP_DEADLINE", 5.0)
    config = parse("images:\n  - r.io/a/dead:1\n  - r.io/a/good:1\nmaxDiskUsagePercent: 90\n")
    runtime = FakeRuntime()

    async def mountpoint() -> str | None:
        return "/images"

    disk = DiskGuard(mountpoint, lambda path: DiskUsage(1000, 1000))
    reconciler = Reconciler(runtime, DeadFirst(), None, NODE, disk=disk)
    seen: dict[str, float] = {}
    loop = asyncio.get_running_loop()
    started = loop.time()

    def done(outcome: Outcome) -> None:
        seen[outcome.entry.written] = loop.time() - started

    outcomes = await reconciler.converge(config, done)

    assert [o.status for o in outcomes] == ["failed", "pulled"]
    # Waiting for its turn, the good image would finish only once the dead one had failed.
    assert seen["r.io/a/good:1"] < seen["r.io/a/dead:1"], seen
