"""`prepull-agent fleet` / `kubectl prepull` end to end: real daemons, each on its own real
containerd, found as deploy/ runs them (pods made from deploy/daemonset.yaml's template) behind
the stand-in API server's pods/proxy, read with a generated kubeconfig whose user has exactly the
RBAC of deploy/components/fleet-reader. The real kubectl checks that the stand-in's proxy answers
as the API server's does, and runs the plugin."""

from __future__ import annotations

import base64
import functools
import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.cli.fleet import COLUMNS
from agent.core.images import platform as platforms
from tests.harness.agent import start_node
from tests.harness.containerd import Containerd
from tests.harness.daemon import DaemonProc, listing
from tests.harness.images import push_image
from tests.harness.kubeapi import COMPONENTS, KubeApiServer, granted, node
from tests.harness.kubectl import DEPLOY, kubectl
from tests.harness.procs import free_port
from tests.harness.registry import Registry
from tests.harness.tls import client_cert

NAMESPACE = "prepull-system"
PLATFORM = str(platforms.detect())
DEADLINE = 5
"""Each agent's time to answer: the real ones answer well within it on a loaded machine; the
one that never answers costs it on each run that asks it."""
READER = granted(COMPONENTS / "fleet-reader/rbac.yaml")


DAEMONSET_UID = "5a1d0000-0000-4000-8000-000000000001"


def agent_daemonset() -> dict[str, Any]:
    """The DaemonSet of deploy/daemonset.yaml, as the API server holds it."""
    daemonset: dict[str, Any] = next(
        d for d in yaml.safe_load_all((DEPLOY / "daemonset.yaml").read_text())
        if d["kind"] == "DaemonSet"
    )  # fmt: skip
    daemonset["metadata"]["uid"] = DAEMONSET_UID
    return daemonset


def agent_pod(node_name: str, port: int, ip: str | None = "127.0.0.1", phase: str = "Running"):
    """The pod the DaemonSet of deploy/daemonset.yaml makes on `node_name`, as the API server
    holds it once scheduled; its port `metrics` at `port` (every daemon here shares one IP)."""
    daemonset = agent_daemonset()
    template = json.loads(json.dumps(daemonset["spec"]["template"]))
    spec = template["spec"] | {"nodeName": node_name}
    for declared in spec["containers"][0]["ports"]:
        if declared["name"] == "metrics":
            declared["containerPort"] = port
    status: dict[str, Any] = {"phase": phase}
    if ip:
        status |= {"podIP": ip, "podIPs": [{"ip": ip}]}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"prepull-agent-{node_name}",
            "namespace": NAMESPACE,
            "labels": template["metadata"]["labels"],
            "creationTimestamp": "2026-12-05T00:00:00Z",
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "DaemonSet",
                    "name": "prepull-agent",
                    "uid": DAEMONSET_UID,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
        "status": status,
    }


@dataclass
class Fleet:
    api: KubeApiServer
    daemons: dict[str, DaemonProc]
    lists: dict[str, str]
    """node → the image that fails there, or the list's images."""
    kubeconfig: Path
    missing: str


@pytest.fixture
def fleet(tmp_path: Path, registry: Registry, containerd: Containerd, pause_image: str):
    """Seven nodes: n1 ready; n2 ready, one image failing for good; n3 not ready (its registry
    is down); n4's agent accepts and never answers; n5 has no agent; n6's agent is not
    listening (the proxy cannot reach it); n7 is a Windows node the DaemonSet never targets.
    n1, n2 and n7 in pool a, the rest in pool b."""
    repo = f"fleet/{os.urandom(4).hex()}"
    images = [push_image(registry, repo, tag, (PLATFORM,)).tagged for tag in ("1", "2")]
    missing = f"{registry.host}/{repo}:absent"
    down = f"127.0.0.1:{free_port()}/{repo}:1"
    nodes = [node(f"n{i}") for i in range(1, 8)]
    for item in nodes:
        pool = "a" if item["metadata"]["name"] in ("n1", "n2", "n7") else "b"
        item["metadata"]["labels"]["pool"] = pool
    nodes[-1]["metadata"]["labels"]["kubernetes.io/os"] = "windows"
    api = KubeApiServer(tmp_path / "kube", nodes, token="unused")
    api.client_ca = api.tls.ca
    api.tokens["reader-token"] = READER
    api.tokens["pods-only-token"] = READER - {("list", "nodes")}
    api.cert_users["fleet-operator"] = READER
    api.start()
    api.add_daemonset(agent_daemonset())
    others = [start_node(tmp_path / f"node{i}", registry, pause_image) for i in (2, 3)]
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(8)  # connections queue and are never accepted: an agent that never answers
    daemons: dict[str, DaemonProc] = {}
    try:
        configs = {
            "n1": listing(registry, images),
            "n2": listing(registry, [*images, missing]),
            "n3": listing(
                registry, [images[0], down], f"  {down.split('/')[0]}:\n    insecure: true\n"
            ),
        }
        for (name, text), runtime in zip(configs.items(), [containerd, *others], strict=True):
            config = tmp_path / f"{name}.yaml"
            config.write_text(text)
            daemons[name] = DaemonProc(config, runtime.endpoint)
            api.add_pod(agent_pod(name, daemons[name].port))
        api.add_pod(agent_pod("n4", hung.getsockname()[1]))
        api.add_pod(agent_pod("n6", free_port()))
        for name in ("n1", "n2"):
            daemons[name].wait_for(functools.partial(_ready, daemons[name]), 120, f"{name} ready")
        daemons["n2"].wait_for(
            lambda: any(i["state"] == "failed" for i in _status(daemons["n2"])["images"]),
            60,
            "n2 to report the missing image",
        )
        yield Fleet(
            api, daemons, configs, api.kubeconfig(tmp_path / "kubeconfig", "reader-token"), missing
        )
    finally:
        for daemon in daemons.values():
            daemon.terminate()
        hung.close()  # the proxy's request to it ends before the stand-in stops
        api.stop()
        for other in others:
            other.stop()
    assert not api.invalid, api.invalid


def _ready(daemon: DaemonProc) -> bool:
    return bool(_status(daemon)["ready"])


def _status(daemon: DaemonProc) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(daemon.get("/status")[1])
    return document


def _fleet(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent",
            "fleet",
            "--kubeconfig",
            str(config),
            "--timeout",
            str(DEADLINE),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in run.stderr, run.stderr
    return run


def _kubectl(fleet: Fleet, *args: str) -> subprocess.CompletedProcess[str]:
    # The plugin is found on PATH, as kubectl finds every plugin: next to this Python. Both
    # read the kubeconfig from KUBECONFIG (kubectl takes no flag before a plugin's name).
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return subprocess.run(
        [kubectl(), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PATH": path, "KUBECONFIG": str(fleet.kubeconfig)},
    )


def test_the_stand_in_proxies_to_an_agent_as_the_api_server_does(fleet: Fleet) -> None:
    base = f"/api/v1/namespaces/{NAMESPACE}/pods"
    pod = f"prepull-agent-n1:{fleet.daemons['n1'].port}"
    through = _kubectl(fleet, "get", "--raw", f"{base}/{pod}/proxy/status")
    assert through.returncode == 0, through.stderr
    proxied, direct = json.loads(through.stdout), _status(fleet.daemons["n1"])
    for key in ("ready", "config", "served_list", "node_platform"):
        assert proxied[key] == direct[key], key
    assert [i["digest"] for i in proxied["images"]] == [i["digest"] for i in direct["images"]]

    listed = _kubectl(
        fleet,
        "get",
        "pods",
        "-n",
        NAMESPACE,
        "-l",
        "app.kubernetes.io/name=prepull-agent",
        "-o",
        "name",
    )
    assert listed.stdout.split() == [f"pod/prepull-agent-n{i}" for i in (1, 2, 3, 4, 6)], listed
    refused = _kubectl(fleet, "get", "--raw", f"{base}/prepull-agent-n6/proxy/status")
    assert refused.returncode != 0
    assert (
        "ServiceUnavailable" in refused.stderr and "error trying to reach service" in refused.stderr
    )
    nodes = _kubectl(fleet, "get", "nodes", "-l", "pool=a", "-o", "name")
    assert nodes.stdout.split() == ["node/n1", "node/n2", "node/n7"], nodes


def test_kubectl_prepull_shows_every_node_with_what_it_lacks_and_why(fleet: Fleet) -> None:
    run = _kubectl(fleet, "prepull", "--timeout", str(DEADLINE), "-o", "json")
    assert run.returncode == 1 and run.stdout, run.stderr  # not every node is ready
    document = json.loads(run.stdout)
    rows = {row["node"]: row for row in document["nodes"]}
    assert list(rows) == ["n1", "n2", "n3", "n4", "n5", "n6", "n7"]
    assert rows["n7"]["targeted"] is False and not rows["n7"]["answered"]
    assert rows["n7"]["error"] == "not targeted: nodeSelector kubernetes.io/os=linux"
    assert all(rows[f"n{i}"]["targeted"] for i in range(1, 7))

    n1, n2, n3 = rows["n1"], rows["n2"], rows["n3"]
    assert n1["ready"] and n1["images"] == {"ready": 2, "desired": 2} and not n1["failing"]
    assert n1["served_list"] == _status(fleet.daemons["n1"])["config"]["digest"]
    assert n2["ready"] and n2["images"] == {"ready": 2, "desired": 3}
    assert [f["image"] for f in n2["failing"]] == [fleet.missing]
    assert "absent" in n2["failing"][0]["reason"] or "not found" in n2["failing"][0]["reason"]
    assert n2["served_list"] != n1["served_list"], "two lists served: visible"
    assert n3["answered"] and not n3["ready"] and n3["served_list"] is None
    assert rows["n4"] == rows["n4"] | {
        "answered": False,
        "ready": False,
        "error": f"no answer in {DEADLINE}s",
    }
    assert rows["n5"]["error"] == "no agent pod on this node" and not rows["n5"]["answered"]
    assert "error trying to reach service" in rows["n6"]["error"]
    assert "NetworkPolicy" in rows["n6"]["error"], "the likely cause named"

    summary = document["summary"]
    counts = ("nodes", "ready", "not_ready", "not_answering", "not_targeted")
    assert [summary[key] for key in counts] == [6, 2, 1, 3, 1], summary
    assert summary["failing"] == {fleet.missing: ["n2"]}
    assert summary["lists_served"] == {n1["served_list"]: 1, n2["served_list"]: 1, "none": 1}


def test_the_table_the_filters_and_other_credentials(fleet: Fleet, tmp_path: Path) -> None:
    table = _fleet(fleet.kubeconfig, "--not-ready")
    assert table.returncode == 1, table.stderr
    lines = table.stdout.splitlines()
    assert tuple(lines[0].split()) == COLUMNS
    assert [line.split()[0] for line in lines[1:-1]] == ["n3", "n4", "n5", "n6"]
    assert lines[-1].startswith(
        "6 nodes: 2 ready, 1 not ready, 3 not answering (+1 the agent does not target);"
    ), lines[-1]

    # Pool a: two ready nodes and a Windows node the DaemonSet never targets: all is well.
    pool = _fleet(fleet.kubeconfig, "-l", "pool=a", "--no-headers")
    assert pool.returncode == 0, (pool.stdout, pool.stderr)
    assert [line.split()[:3] for line in pool.stdout.splitlines()] == [
        ["n1", "yes", "2/2"],
        ["n2", "yes", "2/3"],
        ["n7", "-", "-"],
    ]
    assert "not targeted: nodeSelector kubernetes.io/os=linux" in pool.stdout

    # A client certificate (inline, as kubeadm writes admin.conf) and an exec plugin's token.
    cert, key = client_cert(fleet.api.tls, "fleet-operator")
    config = json.loads(fleet.kubeconfig.read_text())
    config["users"] = [{"name": "agent", "user": {
        "client-certificate-data": base64.b64encode(cert).decode(),
        "client-key-data": base64.b64encode(key).decode(),
    }}]  # fmt: skip
    by_cert = tmp_path / "by-cert.yaml"
    by_cert.write_text(yaml.safe_dump(config))
    run = _fleet(by_cert, "-l", "pool=a", "-o", "yaml")
    assert run.returncode == 0, run.stderr
    assert [row["node"] for row in yaml.safe_load(run.stdout)["nodes"]] == ["n1", "n2", "n7"]

    plugin = tmp_path / "token-plugin"
    credential = {"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                  "status": {"token": "reader-token"}}  # fmt: skip
    plugin.write_text(f"#!/bin/sh\ncat <<'EOF'\n{json.dumps(credential)}\nEOF\n")
    plugin.chmod(0o755)
    config["users"] = [{"name": "agent", "user": {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1", "command": "./token-plugin",
        "interactiveMode": "Never",
    }}}]  # fmt: skip
    by_exec = tmp_path / "by-exec.yaml"
    by_exec.write_text(yaml.safe_dump(config))
    run = _fleet(by_exec, "-l", "pool=a", "-o", "json")
    assert run.returncode == 0, run.stderr
    assert len(json.loads(run.stdout)["nodes"]) == 3
    assert "reader-token" not in run.stdout + run.stderr

    # May not list Nodes: the nodes the agents run on, and a word that the rest are not shown.
    config["users"] = [{"name": "agent", "user": {"token": "pods-only-token"}}]
    pods_only = tmp_path / "pods-only.yaml"
    pods_only.write_text(yaml.safe_dump(config))
    run = _fleet(pods_only, "-o", "json")
    assert [row["node"] for row in json.loads(run.stdout)["nodes"]] == [
        "n1",
        "n2",
        "n3",
        "n4",
        "n6",
    ]
    assert "may not list nodes" in run.stderr
    no_nodes = _fleet(pods_only, "-l", "pool=a")
    assert no_nodes.returncode == 1, "a selector needs the Nodes"
    assert "HTTP 403" in no_nodes.stderr and "components/fleet-reader" in no_nodes.stderr

    config["users"] = [{"name": "agent", "user": {"token": "stolen"}}]
    refused = tmp_path / "refused.yaml"
    refused.write_text(yaml.safe_dump(config))
    run = _fleet(refused)
    assert run.returncode == 1 and "HTTP 401" in run.stderr, run.stderr
    assert "stolen" not in run.stderr
