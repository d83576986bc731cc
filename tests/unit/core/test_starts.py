from __future__ import annotations

from agent.core.engine.plan import NodeImage
from agent.core.reports.starts import ContainerInfo, arrivals, classify


def test_arrival_is_the_oldest_record_naming_the_content() -> None:
    images = [
        NodeImage("sha256:a", ("r.io/x:1",), ("r.io/x@sha256:1",), 1),
        NodeImage("sha256:b", (), (), 1),
    ]
    created = {"r.io/x:1": 300, "r.io/x@sha256:1": 100, "other": 5}
    assert arrivals(images, created) == {"sha256:a": 100}


def test_hit_when_the_image_arrived_before_the_pod_miss_when_after() -> None:
    seen: set[str] = set()
    containers = [
        ContainerInfo("c-hot", "pod-1", "sha256:hot", 1000),
        ContainerInfo("c-cold", "pod-2", "sha256:cold", 1000),
        ContainerInfo("c-gone", "pod-2", "sha256:removed", 1000),
    ]
    verdicts = classify(
        containers, {"pod-1": 500, "pod-2": 500}, {"sha256:hot": 100, "sha256:cold": 700}, seen
    )
    assert [(c.id, v) for c, v in verdicts] == [("c-hot", "hit"), ("c-cold", "miss")]
    assert seen == {"c-hot", "c-cold", "c-gone"}
    assert classify(containers, {}, {"sha256:hot": 100}, seen) == [], "each container counts once"


def test_without_its_sandbox_the_container_creation_time_decides() -> None:
    verdicts = classify([ContainerInfo("c", "gone", "sha256:x", 50)], {}, {"sha256:x": 60}, set())
    assert [v for _, v in verdicts] == ["miss"]
