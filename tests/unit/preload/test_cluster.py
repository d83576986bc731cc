"""Which objects run pods of their own, where those pods may run, and what CapacityBuffers keep
nodes for (agent.preload.cluster)."""

from __future__ import annotations

from typing import Any

import pytest

from agent.preload import cluster
from agent.preload.cluster import Placement


def owned(kind: str, by: str, controller: bool = True) -> dict[str, Any]:
    ref = {"kind": by, "name": "x", "controller": controller}
    return {"kind": kind, "metadata": {"name": "y", "ownerReferences": [ref]}}


@pytest.mark.parametrize(
    ("item", "counted"),
    [
        (owned("ReplicaSet", "Deployment"), False),
        (owned("Pod", "ReplicaSet"), False),
        (owned("Pod", "StatefulSet"), False),
        (owned("Job", "CronJob"), False),
        (owned("Pod", "Node"), True),  # a static pod's mirror
        (owned("Pod", "Workflow"), True),  # a custom controller's: its template is not read
        (owned("ReplicaSet", "Deployment", controller=False), True),
        ({"kind": "Pod", "metadata": {"name": "bare"}}, True),
        ({"kind": "Pod", "metadata": "broken"}, True),
    ],
)
def test_an_object_a_read_controller_owns_counts_through_it(
    item: dict[str, Any], counted: bool
) -> None:
    assert cluster.counted(item) is counted


def test_node_selectors_and_required_affinity_decide_the_pools_a_template_fits() -> None:
    term = {
        "matchExpressions": [
            {"key": "zone", "operator": "In", "values": ["a", "b"]},
            {"key": "spot", "operator": "DoesNotExist"},
            {"key": "cores", "operator": "Gt", "values": ["8"]},
        ]
    }
    placed = Placement({"pool": "gpu"}, (term,))

    assert placed.admits({"pool": "gpu", "zone": "a", "cores": "16"})
    assert not placed.admits({"pool": "gpu", "zone": "c", "cores": "16"})
    assert not placed.admits({"pool": "gpu", "zone": "a", "cores": "16", "spot": "1"})
    assert not placed.admits({"pool": "gpu", "zone": "a", "cores": "4"})
    assert not placed.admits({"pool": "web", "zone": "a", "cores": "16"})
    assert Placement().admits({})
    either = Placement({}, ({"matchExpressions": [{"key": "x", "operator": "Exists"}]}, term))
    assert either.admits({"x": "1"}), "any one term of required affinity suffices"
    broken = Placement({}, ({"matchExpressions": [{"key": "x", "operator": "Bogus"}]},))
    assert not broken.admits({"x": "1"})


def test_placement_is_read_from_a_pod_spec_whatever_its_shape() -> None:
    spec = {
        "nodeSelector": {"pool": "gpu"},
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": []}, "junk"]
                }
            }
        },
        "tolerations": [{"key": "gpu", "operator": "Exists"}, 7],
    }
    placed = cluster.placement(spec)
    assert placed.node_selector == {"pool": "gpu"}
    assert placed.required == ({"matchExpressions": []},)
    assert placed.tolerations == ({"key": "gpu", "operator": "Exists"},)
    assert cluster.placement({"affinity": "x", "tolerations": "y"}) == Placement()


def test_a_buffer_keeps_nodes_for_the_template_its_controller_resolved_first() -> None:
    both = {
        "metadata": {"name": "b", "namespace": "ml"},
        "spec": {"podTemplateRef": {"name": "written"}},
        "status": {"podTemplateRef": {"name": "resolved"}},
    }
    spec_only = {"metadata": {"name": "b"}, "spec": {"podTemplateRef": {"name": "written"}}}
    scalable = {"metadata": {"name": "b"}, "spec": {"scalableRef": {"name": "web"}}}

    assert cluster.buffer_template(both) == ("ml", "resolved")
    assert cluster.buffer_template(spec_only) == ("default", "written")
    assert cluster.buffer_template(scalable) is None


def test_templates_and_images_per_node_pool() -> None:
    web = {
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"template": {"spec": {"nodeSelector": {"pool": "web"},
                                       "containers": [{"name": "c", "image": "r.io/web:1"}]}}},
    }  # fmt: skip
    agent = {
        "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": "ops"},
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "r.io/agent:1"}]}}},
    }
    broken = {"kind": "Deployment", "metadata": {"name": "x"}, "spec": "not a spec"}
    buffer = {"metadata": {"name": "gpu", "namespace": "ml"},
              "status": {"podTemplateRef": {"name": "t"}}}  # fmt: skip
    template = {"metadata": {"name": "t"}, "template": {"spec": {"nodeSelector": {"pool": "gpu"},
                "containers": [{"name": "c", "image": "r.io/gpu:1"}]}}}  # fmt: skip

    found = cluster.templates([web, agent, broken], [buffer], {("ml", "t"): template})

    assert found.skipped == ["Deployment default/x: no pod template"]
    images, where = cluster.found_images(found)
    assert list(images.keep) == ["r.io/web:1", "r.io/agent:1", "r.io/gpu:1"]
    assert images.keep["r.io/gpu:1"] == ["CapacityBuffer ml/gpu (container c)"]
    assert where["r.io/gpu:1"] == [Placement({"pool": "gpu"})]
    gpu_pool, _ = cluster.found_images(found, {"pool": "gpu"})
    assert list(gpu_pool.keep) == ["r.io/agent:1", "r.io/gpu:1"]


def test_a_node_pool_is_named_by_its_labels() -> None:
    assert cluster.parse_labels("karpenter.sh/nodepool=gpu, zone=a") == {
        "karpenter.sh/nodepool": "gpu",
        "zone": "a",
    }
    with pytest.raises(ValueError, match="'gpu' is not key=value"):
        cluster.parse_labels("gpu")


def listed(*images: str) -> str:
    return "images:\n" + "".join(f"  - {image}\n" for image in images)


def test_a_list_that_would_lose_too_much_at_once_is_held_and_says_what() -> None:
    now = listed("r.io/a:1", "r.io/b:1", "r.io/c:1", "r.io/d:1")

    assert cluster.held(now, listed("r.io/a:1", "r.io/b:1"), 50) is None
    said = cluster.held(now, listed("r.io/a:1"), 50)
    assert said is not None and "drops 3 of the 4 images listed now" in said
    assert "r.io/b, r.io/c, r.io/d" in said
    assert cluster.held(now, listed("r.io/a:1"), 100) is None
    assert cluster.held(now, "images: []\n", 99) is not None, "never emptied by a bad answer"


def test_a_moved_digest_is_the_same_image_and_a_broken_current_list_holds_nothing() -> None:
    before = listed(f"r.io/a:1@sha256:{'1' * 64}")
    after = listed(f"r.io/a:1@sha256:{'2' * 64}", "r.io/new:1")

    assert cluster.dropped(before, after) == (["r.io/new"], [])
    assert cluster.dropped(None, after) == (["r.io/a", "r.io/new"], [])
    assert cluster.held("not: [a list", listed(), 0) is None
