from __future__ import annotations

import pytest

from agent.core.engine.plan import Action, NodeImage, NodeState, plan, plan_one
from agent.core.images.platform import Platform
from agent.core.lists.config import parse

AMD64 = Platform("linux", "amd64")
ARM64 = Platform("linux", "arm64")
D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
NAME = "ghcr.io/acme/api"


def entry(text: str):
    return parse(f"images:\n  - {text}\n").images[0]


def image(id_: str, tags: tuple[str, ...] = (), digests: tuple[str, ...] = ()) -> NodeImage:
    return NodeImage(id_, tags, digests, 100)


def test_skip_when_the_entry_is_for_other_platforms() -> None:
    skipped = parse("images:\n  - image: ghcr.io/a/b:1\n    platforms: [linux/arm64]\n").images[0]
    step = plan_one(skipped, AMD64, NodeState([]), None)
    assert step.action is Action.SKIP
    assert "linux/arm64" in step.reason and "linux/amd64" in step.reason
    assert plan_one(skipped, ARM64, NodeState([]), D1).action is Action.PULL


def test_digest_entry_hit_and_pull() -> None:
    e = entry(f"{NAME}@{D1}")
    present = NodeState([image("sha256:id", digests=(f"{NAME}@{D1}",))])
    assert plan_one(e, AMD64, present, None).action is Action.HIT
    step = plan_one(e, AMD64, NodeState([]), None)
    assert (step.action, step.pull_ref, step.bind_tag) == (Action.PULL, f"{NAME}@{D1}", None)


def test_pinned_entry_is_a_hit_only_when_the_tag_names_the_pinned_content() -> None:
    e = entry(f"{NAME}:2.4.1@{D1}")
    state = NodeState([image("sha256:a", (f"{NAME}:2.4.1",), (f"{NAME}@{D1}",))])
    assert plan_one(e, AMD64, state, None).action is Action.HIT


def test_pinned_entry_binds_when_content_is_present_but_the_tag_is_elsewhere() -> None:
    e = entry(f"{NAME}:2.4.1@{D1}")
    state = NodeState(
        [
            image("sha256:a", (), (f"{NAME}@{D1}",)),
            image("sha256:b", (f"{NAME}:2.4.1",), (f"{NAME}@{D2}",)),
        ]
    )
    step = plan_one(e, AMD64, state, None)
    assert (step.action, step.bind_tag, step.drift) == (Action.BIND, f"{NAME}:2.4.1", True)


def test_pinned_entry_binds_an_unbound_tag_without_drift() -> None:
    e = entry(f"{NAME}:2.4.1@{D1}")
    step = plan_one(e, AMD64, NodeState([image("sha256:a", (), (f"{NAME}@{D1}",))]), None)
    assert (step.action, step.drift) == (Action.BIND, False)


def test_pinned_entry_pulls_by_digest_then_binds() -> None:
    e = entry(f"{NAME}:2.4.1@{D1}")
    step = plan_one(e, AMD64, NodeState([]), None)
    assert step.action is Action.PULL
    assert step.pull_ref == f"{NAME}@{D1}", (
        "tag+digest pulls drop the tag (containerd CRI, ParseDockerRef)"
    )
    assert step.bind_tag == f"{NAME}:2.4.1"


def test_tag_entry_hit_when_the_tag_names_the_resolved_digest() -> None:
    e = entry(f"{NAME}:1")
    state = NodeState([image("sha256:a", (f"{NAME}:1",), (f"{NAME}@{D1}",))])
    assert plan_one(e, AMD64, state, D1).action is Action.HIT


def test_tag_entry_pulls_when_the_tag_moved() -> None:
    e = entry(f"{NAME}:1")
    state = NodeState([image("sha256:a", (f"{NAME}:1",), (f"{NAME}@{D1}",))])
    step = plan_one(e, AMD64, state, D2)
    assert (step.action, step.pull_ref, step.drift) == (Action.PULL, f"{NAME}:1", True)
    assert D1 in step.reason and D2 in step.reason


def test_tag_entry_pulls_when_absent() -> None:
    step = plan_one(entry(f"{NAME}:1"), AMD64, NodeState([]), D1)
    assert (step.action, step.drift, step.digest) == (Action.PULL, False, D1)


def test_tag_entry_needs_its_digest() -> None:
    with pytest.raises(ValueError, match="resolved digest"):
        plan_one(entry(f"{NAME}:1"), AMD64, NodeState([]), None)


def test_docker_hub_short_names_match_the_node_records() -> None:
    e = entry("nginx:1.25.3")
    state = NodeState(
        [image("sha256:a", ("docker.io/library/nginx:1.25.3",), (f"docker.io/library/nginx@{D1}",))]
    )
    assert plan([e], AMD64, state, {e: D1})[0].action is Action.HIT
