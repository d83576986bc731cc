"""`prepull-agent from-cluster` against a stand-in API server (tests/harness/workloadsapi.py,
checked against the real kubectl), its list preloaded on a real containerd."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.core.lists import config as configs
from tests.harness.agent import NODE, image_status, once_with_hosts_dir, run_agent
from tests.harness.containerd import Containerd
from tests.harness.daemon import DaemonProc
from tests.harness.images import PushedImage, push_image
from tests.harness.kubectl import kubectl
from tests.harness.procs import free_port
from tests.harness.registry import Registry
from tests.harness.workloadsapi import WorkloadsApiServer


def pod_spec(*images: str, selector: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]
    }
    if selector:
        spec["nodeSelector"] = selector
    return {**spec, **extra}


def meta(name: str, namespace: str = "shop", **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, **extra}


def controlled_by(kind: str, name: str) -> list[dict[str, Any]]:
    return [{"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": "u", "controller": True}]


@pytest.fixture
def images(registry: Registry, repo: str) -> dict[str, PushedImage]:
    names = ("web", "old", "pod-of-rs", "bare", "nightly", "run-of-nightly", "db-init", "db",
             "agent", "batch", "lone-rs", "gpu", "always")  # fmt: skip
    return {n: push_image(registry, f"{repo}/{n}", "1", (NODE,)) for n in names}


@pytest.fixture
def cluster(tmp_path: Path, images: dict[str, PushedImage]) -> Iterator[WorkloadsApiServer]:
    api = WorkloadsApiServer(tmp_path / "api", buffers=True, page_cap=2)
    tagged = {name: image.tagged for name, image in images.items()}
    web = {"template": {"spec": pod_spec(tagged["web"], selector={"pool": "web"})}}
    api.add("deployments", {"metadata": meta("web", labels={"tier": "web"}), "spec": web})
    api.add(
        "replicasets",
        {"metadata": meta("web-1", ownerReferences=controlled_by("Deployment", "web")),
         "spec": {"template": {"spec": pod_spec(tagged["old"])}}},
    )  # fmt: skip
    api.add(
        "pods",
        {"metadata": meta("web-1-x", ownerReferences=controlled_by("ReplicaSet", "web-1")),
         "spec": pod_spec(tagged["pod-of-rs"])},
    )  # fmt: skip
    api.add("pods", {"metadata": meta("bare"), "spec": pod_spec(tagged["bare"])})
    nightly = {"spec": {"template": {"spec": pod_spec(tagged["nightly"])}}}
    api.add("cronjobs", {"metadata": meta("nightly"), "spec": {"jobTemplate": nightly}})
    api.add(
        "jobs",
        {"metadata": meta("nightly-1", ownerReferences=controlled_by("CronJob", "nightly")),
         "spec": {"template": {"spec": pod_spec(tagged["run-of-nightly"])}}},
    )  # fmt: skip
    db = pod_spec(tagged["db"], initContainers=[{"name": "init", "image": tagged["db-init"]}])
    api.add("statefulsets", {"metadata": meta("db"), "spec": {"template": {"spec": db}}})
    agent_spec = {"template": {"spec": pod_spec(tagged["agent"])}}
    api.add("daemonsets", {"metadata": meta("agent", "ops"), "spec": agent_spec})
    api.add(
        "jobs",
        {"metadata": meta("batch"), "spec": {"template": {"spec": pod_spec(tagged["batch"])}}},
    )
    lone = {"template": {"spec": pod_spec(tagged["lone-rs"])}}
    api.add("replicasets", {"metadata": meta("lone"), "spec": lone})
    always = pod_spec(images["always"].tagged)
    always["containers"][0]["imagePullPolicy"] = "Always"
    api.add("pods", {"metadata": meta("always"), "spec": always})
    # Karpenter's buffer for GPU nodes: its PodTemplate, resolved by the buffer controller.
    gpu = {"spec": pod_spec(tagged["gpu"], selector={"pool": "gpu"})}
    api.add("podtemplates", {"metadata": meta("gpu-reserve", "ml"), "template": gpu})
    api.add(
        "capacitybuffers",
        {"metadata": meta("gpu", "ml"),
         "spec": {"podTemplateRef": {"name": "gpu-reserve"}, "replicas": 2},
         "status": {"podTemplateRef": {"name": "gpu-reserve"}, "replicas": 2}},
    )  # fmt: skip
    api.add(
        "capacitybuffers",
        {"metadata": meta("for-web"), "spec": {"scalableRef": {"apiGroup": "apps",
         "kind": "Deployment", "name": "web"}, "percentage": 20}},
    )  # fmt: skip
    api.add(
        "capacitybuffers",
        {"metadata": meta("gone", "ml"), "spec": {"podTemplateRef": {"name": "deleted"}}},
    )
    api.start()
    yield api
    api.stop()


def from_cluster(api: WorkloadsApiServer, tmp_path: Path, *args: str) -> tuple[list[str], str]:
    kubeconfig = api.kubeconfig(tmp_path / "kubeconfig")
    result = run_agent("from-cluster", "--kubeconfig", str(kubeconfig), *args)
    assert result.code == 0, result
    listed = configs.parse(result.stdout, "<stdout>").images
    return [entry.written for entry in listed], result.stderr


def test_every_kind_counts_through_its_controller_and_buffers_through_their_template(
    cluster: WorkloadsApiServer, tmp_path: Path, images: dict[str, PushedImage]
) -> None:
    listed, said = from_cluster(cluster, tmp_path, "-A")

    expected = ["web", "bare", "nightly", "db-init", "db", "agent", "batch", "lone-rs", "gpu"]
    assert sorted(listed) == sorted(images[n].tagged for n in expected), listed
    for owned in ("old", "pod-of-rs", "run-of-nightly"):
        assert images[owned].tagged not in listed, f"{owned} counts through its controller"
    assert f"{images['always'].tagged} is left out" in said
    assert "CapacityBuffer ml/gone: its PodTemplate ml/deleted is not there" in said
    assert "mutable tag" in said
    # Every list was read page by page (the stand-in hands out 2 items a page).
    assert len(cluster.lists("pods")) == 2 and cluster.lists("pods")[1].query.get("continue")


def test_namespaces_and_selectors_narrow_what_is_read(
    cluster: WorkloadsApiServer, tmp_path: Path, images: dict[str, PushedImage]
) -> None:
    in_ops, _ = from_cluster(cluster, tmp_path, "-n", "ops")
    labelled, _ = from_cluster(cluster, tmp_path, "-A", "-l", "tier=web")
    named, _ = from_cluster(cluster, tmp_path, "-A", "--field-selector", "metadata.name=db")

    assert in_ops == [images["agent"].tagged]
    assert labelled == [images["web"].tagged]
    assert named == [images["db-init"].tagged, images["db"].tagged]
    asked = [s.query.get("labelSelector") for s in cluster.lists("deployments")]
    assert "tier=web" in asked, "the selector is the API server's to apply"


def test_a_node_pool_gets_the_images_its_pods_may_run(
    cluster: WorkloadsApiServer, tmp_path: Path, images: dict[str, PushedImage]
) -> None:
    gpu_pool, _ = from_cluster(cluster, tmp_path, "-A", "--node-selector", "pool=gpu")

    assert images["gpu"].tagged in gpu_pool and images["web"].tagged not in gpu_pool
    assert images["agent"].tagged in gpu_pool, "a pod without a selector may run anywhere"


def test_the_generated_list_locks_and_preloads_on_a_real_containerd(
    cluster: WorkloadsApiServer,
    tmp_path: Path,
    fresh_containerd: Containerd,
    images: dict[str, PushedImage],
) -> None:
    hosts = str(fresh_containerd.certs_d)
    listed, _ = from_cluster(
        cluster, tmp_path, "-n", "ml", "--lock", "--containerd-hosts-dir", hosts
    )
    assert listed == [images["gpu"].pinned()], "locked: the digest the tag names"
    preload = tmp_path / "preload.yaml"
    preload.write_text("images:\n" + "".join(f"  - {image}\n" for image in listed))

    result = once_with_hosts_dir(fresh_containerd, preload)

    assert result.code == 0, result
    assert image_status(fresh_containerd, images["gpu"].tagged) is not None


def test_the_stand_in_answers_kubectl_as_an_api_server_does(
    cluster: WorkloadsApiServer, tmp_path: Path
) -> None:
    kubeconfig = cluster.kubeconfig(tmp_path / "kubeconfig")

    def get(*what: str) -> dict[str, Any]:
        run = subprocess.run(
            [kubectl(), "--kubeconfig", str(kubeconfig), "get", *what, "-o", "json"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        document: dict[str, Any] = json.loads(run.stdout)
        return document

    deployments = get("deployments", "-A", "--chunk-size", "1")
    buffers = get("capacitybuffers.autoscaling.x-k8s.io", "-n", "ml")
    assert [d["metadata"]["name"] for d in deployments["items"]] == ["web"]
    assert sorted(b["metadata"]["name"] for b in buffers["items"]) == ["gone", "gpu"]


def test_a_refusal_is_said_with_the_grants_needed_and_nothing_is_written(
    cluster: WorkloadsApiServer, tmp_path: Path
) -> None:
    cluster.forbidden.add("cronjobs")
    kubeconfig = cluster.kubeconfig(tmp_path / "kubeconfig")
    out = tmp_path / "preload.yaml"

    result = run_agent(
        "from-cluster", "--kubeconfig", str(kubeconfig), "-A", "--output-file", str(out)
    )

    assert result.code == 1, result
    assert "HTTP 403" in result.stderr and "cronjobs (batch)" in result.stderr
    assert not out.exists()
    wrong = run_agent("from-cluster", "--kubeconfig", str(kubeconfig), "--node-selector", "gpu")
    assert wrong.code == 2 and "--node-selector: 'gpu' is not key=value" in wrong.stderr


def test_the_list_is_applied_to_the_agents_configmap_and_a_bad_answer_never_empties_it(
    cluster: WorkloadsApiServer, tmp_path: Path, images: dict[str, PushedImage]
) -> None:
    kubeconfig = str(cluster.kubeconfig(tmp_path / "kubeconfig"))
    target = "prepull-system/prepull-agent-config"

    def write(*args: str) -> tuple[int, str]:
        result = run_agent("from-cluster", "--kubeconfig", kubeconfig, "--configmap", target, *args)
        assert result.code in (0, 1) and not result.stdout, result
        return result.code, result.stderr

    def applied() -> list[str]:
        return [s.content_type for s in cluster.seen if s.method == "PATCH"]

    code, said = write("-A")
    assert code == 0 and "wrote ConfigMap prepull-system/prepull-agent-config" in said, said
    stored = cluster.configmap("prepull-system", "prepull-agent-config")
    assert stored is not None
    written = configs.parse(stored["data"]["preload.yaml"], "<configmap>").images
    assert len(written) == 9
    assert stored["metadata"]["managedFields"][0]["manager"] == "prepull-from-cluster"
    assert applied() == ["application/apply-patch+yaml"]
    assert next(s.query for s in cluster.seen if s.method == "PATCH")["force"] == "true"

    code, said = write("-A")  # nothing changed: nothing written
    assert code == 0 and "unchanged" in said and len(applied()) == 1, said

    # A namespace typed wrong reads nearly nothing: held, the agents keep their list.
    code, said = write("-n", "shpo")
    assert code == 1 and "held: the new list drops 9 of the 9 images" in said, said
    assert len(applied()) == 1
    code, said = write("-n", "ml", "--max-drop", "100")
    assert code == 0 and "+0 -8 images" in said, said
    kept = cluster.configmap("prepull-system", "prepull-agent-config")
    assert kept is not None
    assert [e.written for e in configs.parse(kept["data"]["preload.yaml"], "<cm>").images] == [
        images["gpu"].tagged
    ]
    wrong = run_agent("from-cluster", "--kubeconfig", kubeconfig, "--configmap", "no-slash")
    assert wrong.code == 2 and "is not NAMESPACE/NAME" in wrong.stderr


class Keeper:
    """`from-cluster --watch` running against the stand-in."""

    def __init__(self, api: WorkloadsApiServer, tmp_path: Path, *extra: str) -> None:
        self.port = free_port()
        self.log_path = tmp_path / "keeper.log"
        kubeconfig = str(api.kubeconfig(tmp_path / "kubeconfig"))
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "from-cluster", "--kubeconfig", kubeconfig, "-A",
             "--watch", "--configmap", TARGET, "--debounce", "0.2",
             "--listen", f"127.0.0.1:{self.port}", *extra],
            stdout=subprocess.DEVNULL, stderr=self._log,
        )  # fmt: skip

    def metric(self, name: str, **labels: str) -> float:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return float(sample.value)
        return 0.0

    def stop(self) -> str:
        self.proc.terminate()
        self.proc.wait(30)
        self._log.close()
        return self.log_path.read_text(errors="replace")


TARGET = "prepull-system/prepull-agent-config"


def until(check: Callable[[], bool], what: str, keeper: Keeper, seconds: float = 60) -> None:
    """Wait for a state, never for a moment."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert keeper.proc.poll() is None, keeper.log_path.read_text()
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"waited {seconds}s for {what}:\n{keeper.log_path.read_text()[-3000:]}")


def held_images(api: WorkloadsApiServer) -> list[str]:
    stored = api.configmap(*TARGET.split("/"))
    if stored is None:
        return []
    return [e.written for e in configs.parse(stored["data"]["preload.yaml"], "<cm>").images]


def test_the_watching_keeper_follows_changes_bookmarks_and_a_410_and_a_daemon_converges(
    cluster: WorkloadsApiServer,
    tmp_path: Path,
    fresh_containerd: Containerd,
    registry: Registry,
    repo: str,
    images: dict[str, PushedImage],
) -> None:
    cluster.watch_cap = 1.0  # watches end early and are started again from the last bookmark
    # The node's copy of the ConfigMap, as kubelet keeps a ConfigMap volume, read by a daemon.
    preload = tmp_path / "configmap-volume" / "preload.yaml"
    preload.parent.mkdir()
    preload.write_text("images: []\n")
    hosts = ("--containerd-hosts-dir", str(fresh_containerd.certs_d))
    daemon = DaemonProc(preload, fresh_containerd.endpoint, *hosts)
    keeper = Keeper(cluster, tmp_path)
    try:
        until(lambda: len(held_images(cluster)) == 9, "the first list in the ConfigMap", keeper)
        until(lambda: bool(cluster.watches("daemonsets")), "the watches to start", keeper)
        first_watch = cluster.watches("daemonsets")[0]
        listed_at = int(first_watch.query["resourceVersion"])  # the version the list said

        extra = push_image(registry, f"{repo}/extra", "1", (NODE,))
        extra_spec = {"template": {"spec": pod_spec(extra.tagged)}}
        cluster.add("deployments", {"metadata": meta("extra"), "spec": extra_spec})
        until(lambda: extra.tagged in held_images(cluster), "the new workload's image", keeper)

        # Bookmarks carried the watch on past the version the list was read at.
        until(
            lambda: any(
                int(s.query["resourceVersion"]) > listed_at for s in cluster.watches("daemonsets")
            ),
            "a watch started from a bookmark's version",
            keeper,
        )

        # etcd compacted: the watched versions are gone, the keeper lists again and goes on.
        cluster.compact()
        until(lambda: keeper.metric("prepull_from_cluster_relists_total", reason="expired") >= 1,
              "a relist after 410", keeper)  # fmt: skip
        late = push_image(registry, f"{repo}/late", "1", (NODE,))
        late_spec = {"template": {"spec": pod_spec(late.tagged)}}
        cluster.add("statefulsets", {"metadata": meta("late"), "spec": late_spec})
        until(lambda: late.tagged in held_images(cluster), "a change after the relist", keeper)
        assert keeper.metric("prepull_from_cluster_writes_total", result="wrote") >= 3

        # The node gets the ConfigMap's list; the daemon preloads what the cluster runs.
        stored = cluster.configmap(*TARGET.split("/"))
        assert stored is not None
        preload.write_text(stored["data"]["preload.yaml"])
        daemon.wait_for(
            lambda: image_status(fresh_containerd, late.tagged) is not None,
            120,
            "the daemon to preload the image the keeper added",
        )
    finally:
        daemon.terminate()
        said = keeper.stop()
    assert "wrote ConfigMap prepull-system/prepull-agent-config" in said
    recorded = cluster.objects.get("events", [])
    assert {e["reason"] for e in recorded} == {"ListUpdated"}, recorded
    assert all(e["involvedObject"]["kind"] == "ConfigMap" for e in recorded)
    assert any(late.repo in e["message"] for e in recorded), "the Event says what it added"
