"""The readiness gate end to end: the real agent against a real containerd and registry, and
the stand-in API server (tests/harness/kubeapi.py), itself checked against the real kubectl."""

from __future__ import annotations

import json
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.core.images import platform as platforms
from agent.core.reports.gate import CONDITION_TYPE
from tests.harness.agent import run_agent, slow_listed_image
from tests.harness.containerd import Containerd
from tests.harness.daemon import ConfigMapVolume, DaemonProc, listing
from tests.harness.images import push_image
from tests.harness.kubeapi import COMPONENTS, KubeApiServer, granted, node
from tests.harness.kubectl import DEPLOY, kustomize
from tests.harness.kubectl import kubectl as kubectl_binary
from tests.harness.procs import free_port
from tests.harness.registry import Registry

NODE = str(platforms.detect())
KEY = "prepull.io/not-ready"
STARTUP_TAINT = {"key": KEY, "effect": "NoSchedule"}
OTHER_TAINT = {"key": "gpu.example.com/driver", "value": "installing", "effect": "NoSchedule"}
LATE_TAINT = {"key": "late/writer", "effect": "PreferNoSchedule"}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[KubeApiServer]:
    server = KubeApiServer(
        tmp_path / "kube", [node("n1", [STARTUP_TAINT, OTHER_TAINT]), node("n2", [STARTUP_TAINT])]
    ).start()
    yield server
    server.stop()
    assert not server.invalid, f"objects the Node schema refuses were written: {server.invalid}"


def kubectl(api: KubeApiServer, tmp_path: Path, *args: str, token: str = "admin-token") -> Any:
    config = api.kubeconfig(tmp_path / f"kubeconfig-{token}", token)
    return subprocess.run(
        [kubectl_binary(), "--kubeconfig", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def gate_flags(api: KubeApiServer, tmp_path: Path, *extra: str) -> list[str]:
    token = tmp_path / "token"
    if not token.exists():
        token.write_text("agent-token\n")
    return [
        "--node-name",
        "n1",
        "--kube-api",
        api.url,
        "--kube-token-file",
        str(token),
        "--kube-ca-file",
        str(api.tls.ca),
        "--events-namespace",
        "prepull-system",
        *extra,
    ]


def raw_patch(api: KubeApiServer, path: str, body: Any, acting: str | None) -> tuple[int, str]:
    """A strategic merge PATCH with the agent's token, maybe acting as `acting`: its status and
    the start of the refusal's message (kubectl cannot send a PATCH without a GET first)."""
    headers = {
        "Authorization": "Bearer agent-token",
        "Content-Type": "application/strategic-merge-patch+json",
    }
    if acting is not None:
        headers["Impersonate-User"] = acting
    request = urllib.request.Request(
        api.url + path, json.dumps(body).encode(), headers, method="PATCH"
    )
    context = ssl.create_default_context(cafile=str(api.tls.ca))
    try:
        with urllib.request.urlopen(request, context=context, timeout=30) as response:
            return response.status, ""
    except urllib.error.HTTPError as exc:
        message = json.loads(exc.read())["message"]
        for known in ("not the node this token", 'modify node "n2"'):
            if known in message:
                return exc.code, known
        return exc.code, message


def status_of(daemon: DaemonProc) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(daemon.get("/status")[1])
    return document


def test_the_stand_in_behaves_as_kubectl_expects(api: KubeApiServer, tmp_path: Path) -> None:
    listed = kubectl(api, tmp_path, "get", "nodes")
    assert listed.returncode == 0 and {"n1", "n2"} <= set(listed.stdout.split()), listed
    read = kubectl(api, tmp_path, "get", "node", "n1", "-o", "json")
    assert json.loads(read.stdout)["spec"]["taints"] == [STARTUP_TAINT, OTHER_TAINT], read

    condition = {"type": "Example", "status": "True", "reason": "Test", "message": "m"}
    patched = kubectl(
        api,
        tmp_path,
        "patch",
        "node",
        "n1",
        "--subresource=status",
        "--type=strategic",
        "-p",
        json.dumps({"status": {"conditions": [condition]}}),
    )
    assert patched.returncode == 0, patched
    kinds = [c["type"] for c in api.nodes["n1"]["status"]["conditions"]]
    assert kinds == ["Ready", "Example"], "merged by type: kubelet's Ready condition stays"

    tainted = kubectl(api, tmp_path, "taint", "nodes", "n2", "dedicated=ci:NoExecute")
    assert tainted.returncode == 0, tainted
    assert {"key": "dedicated", "value": "ci", "effect": "NoExecute"} in api.taints("n2")

    stale = [{"op": "test", "path": "/spec/taints", "value": []}]
    refused = kubectl(api, tmp_path, "patch", "node", "n1", "--type=json", "-p", json.dumps(stale))
    assert refused.returncode != 0 and "testing value /spec/taints failed" in refused.stderr
    stale_version = {"metadata": {"resourceVersion": "1", "labels": {"team": "a"}}}
    conflict = kubectl(api, tmp_path, "patch", "node", "n1", "-p", json.dumps(stale_version))
    assert conflict.returncode != 0 and "the object has been modified" in conflict.stderr
    assert "team" not in api.nodes["n1"]["metadata"]["labels"]
    denied = kubectl(api, tmp_path, "get", "nodes", token="stolen")
    assert denied.returncode != 0 and "Unauthorized" in denied.stderr, denied
    forbidden = kubectl(
        api, tmp_path, "taint", "nodes", "n1", "x=y:NoSchedule", token="agent-token"
    )
    assert forbidden.returncode == 0, "the agent's role may patch nodes (the taint)"
    status_read = kubectl(
        api, tmp_path, "get", "node", "n1", "--subresource=status", token="agent-token"
    )
    assert status_read.returncode != 0 and "forbidden" in status_read.stderr.lower()


def test_the_taint_goes_only_once_the_list_is_present_and_the_condition_follows(
    api: KubeApiServer,
    volume: ConfigMapVolume,
    registry: Registry,
    containerd: Containerd,
    repo: str,
    start_daemon: Any,
    tmp_path: Path,
) -> None:
    # A pull of a few seconds through a slow link: long enough to see the node held back.
    with slow_listed_image(registry, containerd, volume, repo, 6 << 20, delay=0.02):
        # Someone else adds a taint while the agent removes its own: that write must survive.
        def late_writer(path: str) -> bool:
            if path != "/api/v1/nodes/n1":
                return False
            api.nodes["n1"]["spec"]["taints"].append(LATE_TAINT)
            return True

        api.before_patch = late_writer
        api.faults.append(("/nodes/n1/status", 409))  # the first condition write conflicts
        # What an agent before 0.2 wrote: removed, kubelet's Ready kept.
        legacy = {"type": "PrepullReady", "status": "False", "reason": "Preloading"}
        api.nodes["n1"]["status"]["conditions"].append(legacy)
        flags = gate_flags(api, tmp_path, "--node-condition", "--remove-startup-taint", KEY)
        daemon = start_daemon(volume.path, *flags)

        def held_back() -> bool:
            written = api.condition("n1", CONDITION_TYPE)
            image = status_of(daemon)["images"][0]
            pulling = image["state"] == "pulling"
            return written is not None and written["status"] == "False" and pulling

        daemon.wait_for(held_back, 60, "the condition to say False while the image pulls")
        assert STARTUP_TAINT in api.taints("n1"), "released before the list was present"
        waiting = api.condition("n1", CONDITION_TYPE)
        assert waiting is not None and waiting["reason"] == "Preloading", waiting
        daemon.wait_for(lambda: daemon.get("/readyz")[0] == 200, 90, "the pull to finish")
        daemon.wait_for(
            lambda: STARTUP_TAINT not in api.taints("n1"), 15, "the startup taint to go"
        )

    ready = api.condition("n1", CONDITION_TYPE)
    assert ready is not None and (ready["status"], ready["reason"]) == ("True", "Preloaded")
    kinds = [c["type"] for c in api.nodes["n1"]["status"]["conditions"]]
    assert kinds == ["Ready", CONDITION_TYPE], kinds
    assert ready["message"] == "1 image present"
    assert ready["lastTransitionTime"] >= waiting["lastTransitionTime"]
    assert api.taints("n1") == [OTHER_TAINT, LATE_TAINT]
    assert api.taints("n2") == [STARTUP_TAINT], "another node was touched"
    assert all("/nodes/n2" not in r.path for r in api.requests), "another node was asked"
    removals = [r for r in api.writes() if r.path == "/api/v1/nodes/n1"]
    assert [r.status for r in removals] == [422, 200], "a lost race is retried, not forced"
    assert all(r.body[0]["op"] == "test" for r in removals)
    status_writes = [r.status for r in api.writes() if r.path.endswith("/status")]
    assert status_writes[0] == 409 and status_writes[-1] == 200, status_writes
    # /status follows the gate's writes a moment after the API server has them.
    daemon.wait_for(
        lambda: status_of(daemon)["gate"]["taint_released"] == "ready", 15, "/status to say so"
    )
    assert status_of(daemon)["gate"]["reason"] == "Preloaded"
    assert '"event": "gate_error"' in daemon.log(), "the 409 is logged"


def node_readiness_controller(api: KubeApiServer, rule: dict[str, Any], name: str) -> None:
    """What the Node Readiness Controller does with a bootstrap-only rule (not packaged for
    these machines; its documented behaviour, kubernetes-sigs/node-readiness-controller): once
    every condition the rule names has its required status, the rule's taint goes."""
    spec = rule["spec"]
    met = all(
        (api.condition(name, c["type"]) or {}).get("status") == c["requiredStatus"]
        for c in spec["conditions"]
    )
    if met:
        kept = [t for t in api.taints(name) if t["key"] != spec["taint"]["key"]]
        api.nodes[name]["spec"]["taints"] = kept


def test_with_the_node_readiness_controller_the_agent_only_reports_and_the_rule_releases(
    api: KubeApiServer,
    volume: ConfigMapVolume,
    registry: Registry,
    containerd: Containerd,
    repo: str,
    start_daemon: Any,
    tmp_path: Path,
) -> None:
    rendered = kustomize(DEPLOY / "overlays" / "node-readiness-controller")
    (rule,) = [o for o in rendered if o["kind"] == "NodeReadinessRule"]
    (daemonset,) = [o for o in rendered if o["kind"] == "DaemonSet"]
    args = daemonset["spec"]["template"]["spec"]["containers"][0]
    taint = {"key": rule["spec"]["taint"]["key"], "effect": rule["spec"]["taint"]["effect"]}
    api.nodes["n1"]["spec"]["taints"] = [taint]
    # The agent gets only what the overlay's RBAC grants it: no patch of the Node itself.
    api.tokens["agent-token"] = granted(COMPONENTS / "node-readiness-controller/rbac.yaml")
    gate_args = [a for a in args["args"] if a.startswith(("--node-condition", "--remove"))]
    assert gate_args == ["--node-condition"], "the overlay has the agent only report"
    with slow_listed_image(registry, containerd, volume, repo, 6 << 20, delay=0.02):
        daemon = start_daemon(volume.path, *gate_flags(api, tmp_path, *gate_args))

        def held_while_pulling() -> bool:
            node_readiness_controller(api, rule, "n1")
            written = api.condition("n1", CONDITION_TYPE)
            pulling = status_of(daemon)["images"][0]["state"] == "pulling"
            return written is not None and written["status"] == "False" and pulling

        daemon.wait_for(held_while_pulling, 60, "the condition to say False while the image pulls")
        assert taint in api.taints("n1"), "the rule released the node before the list was there"

        def released() -> bool:
            node_readiness_controller(api, rule, "n1")
            return taint not in api.taints("n1")

        daemon.wait_for(released, 90, "the rule to release the node once the condition is True")
    assert daemon.get("/readyz")[0] == 200
    assert not [r for r in api.writes() if r.path == "/api/v1/nodes/n1"], (
        "the agent patched the Node"
    )
    assert all(r.status < 400 for r in api.requests), "the overlay's RBAC lacks something"
    daemon.wait_for(
        lambda: any(e["reason"] == "ImagesPreloaded" for e in api.node_events("n1")),
        15,
        "the Event saying so",
    )
    assert all(r.status < 400 for r in api.requests), "the overlay's RBAC lacks something"


def test_acting_as_its_node_the_agent_reports_and_can_write_no_other_node(
    api: KubeApiServer,
    volume: ConfigMapVolume,
    registry: Registry,
    containerd: Containerd,
    repo: str,
    start_daemon: Any,
    tmp_path: Path,
) -> None:
    rendered = kustomize(DEPLOY / "overlays" / "node-readiness-controller-impersonation")
    (rule,) = [o for o in rendered if o["kind"] == "NodeReadinessRule"]
    (daemonset,) = [o for o in rendered if o["kind"] == "DaemonSet"]
    args = daemonset["spec"]["template"]["spec"]["containers"][0]["args"]
    gate_args = [a for a in args if a in ("--node-condition", "--impersonate-node")]
    assert gate_args == ["--node-condition", "--impersonate-node"], args
    assert not [o for o in rendered if o["kind"] in ("Role", "RoleBinding")], "broad grants kept"
    taint = {"key": rule["spec"]["taint"]["key"], "effect": rule["spec"]["taint"]["effect"]}
    api.nodes["n1"]["spec"]["taints"] = [taint]
    # The token has no right of its own on Nodes or Events: only to act as its node.
    api.tokens["agent-token"] = granted(COMPONENTS / "node-impersonation/rbac.yaml")
    image = push_image(registry, repo, "1", (NODE,))
    volume.write(listing(registry, [image.tagged]))
    daemon = start_daemon(volume.path, *gate_flags(api, tmp_path, *gate_args))

    def released() -> bool:
        node_readiness_controller(api, rule, "n1")
        return taint not in api.taints("n1")

    daemon.wait_for(released, 60, "the rule to release the node once the condition is True")
    daemon.wait_for(
        lambda: any(e["reason"] == "ImagesPreloaded" for e in api.node_events("n1")),
        15,
        "the Event, written as the node",
    )
    assert all(r.status < 400 for r in api.requests), [r for r in api.requests if r.status >= 400]

    # What a compromised agent would try with the same token: each refused by the API server.
    condition = {"type": CONDITION_TYPE, "status": "True", "reason": "Forged", "message": "m"}
    forged = {"status": {"conditions": [condition]}}
    n2_status = "/api/v1/nodes/n2/status"
    assert raw_patch(api, n2_status, forged, "system:node:n2") == (403, "not the node this token")
    assert raw_patch(api, n2_status, forged, "system:node:n1") == (403, 'modify node "n2"')
    assert raw_patch(api, n2_status, forged, None)[0] == 403
    api.nodes["n1"]["spec"]["taints"] = [taint]
    untaint = kubectl(
        api,
        tmp_path,
        "taint",
        "nodes",
        "n1",
        f"{taint['key']}-",
        "--as=system:node:n1",
        token="agent-token",
    )
    assert untaint.returncode != 0 and 'cannot patch resource "nodes"' in untaint.stderr, untaint
    assert api.condition("n2", CONDITION_TYPE) is None and taint in api.taints("n1")


def test_the_timeout_releases_a_node_whose_registry_is_down_and_says_so(
    api: KubeApiServer,
    volume: ConfigMapVolume,
    registry: Registry,
    containerd: Containerd,
    repo: str,
    start_daemon: Any,
    tmp_path: Path,
) -> None:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens: transient, so readiness waits
    containerd.trust_http_registry(dead)
    volume.write(f"images:\n  - {dead}/{repo}:1\nregistries:\n  {dead}:\n    insecure: true\n")
    flags = gate_flags(
        api, tmp_path, "--node-condition", "--remove-startup-taint", KEY, "--ready-timeout", "3"
    )
    daemon = start_daemon(volume.path, *flags)
    daemon.wait_for(lambda: STARTUP_TAINT not in api.taints("n1"), 30, "the timeout to release")
    assert daemon.get("/readyz")[0] == 503, "released, but not ready"
    written = api.condition("n1", CONDITION_TYPE)
    assert written is not None and (written["status"], written["reason"]) == (
        "False",
        "ReadyTimeout",
    )
    assert written["message"].startswith("released after 3s without the list preloaded;")
    assert f"{dead}/{repo}:1" in written["message"]
    daemon.wait_for(
        lambda: status_of(daemon)["gate"]["taint_released"] == "timeout", 15, "/status to say so"
    )
    daemon.wait_for(
        lambda: "removed the startup taint prepull.io/not-ready anyway" in daemon.log(),
        15,
        "the log to say so",
    )


def test_kubectl_describe_node_says_why_the_node_was_held_in_aggregated_events(
    api: KubeApiServer,
    volume: ConfigMapVolume,
    registry: Registry,
    containerd: Containerd,
    repo: str,
    start_daemon: Any,
    tmp_path: Path,
) -> None:
    missing = f"{registry.host}/{repo}:no-such-tag"  # permanent: reported, not waited for
    dead = f"127.0.0.1:{free_port()}"  # nothing listens: transient, so the node waits
    containerd.trust_http_registry(dead)
    volume.write(
        f"images:\n  - {missing}\n  - {dead}/{repo}:1\nresync: 1s\n"
        f"registries:\n  {registry.host}:\n    insecure: true\n  {dead}:\n    insecure: true\n"
    )
    flags = gate_flags(
        api, tmp_path, "--node-condition", "--remove-startup-taint", KEY, "--ready-timeout", "3"
    )
    daemon = start_daemon(volume.path, *flags)

    def failures_counted() -> bool:
        failed = [e for e in api.node_events("n1") if e["reason"] == "PreloadFailed"]
        return any(missing in e["message"] and e["count"] >= 3 for e in failed)

    daemon.wait_for(failures_counted, 60, "the failure of every pass counted on one Event")
    daemon.wait_for(lambda: STARTUP_TAINT not in api.taints("n1"), 30, "the timeout to release")
    daemon.wait_for(
        lambda: any(e["reason"] == "StartupTaintRemoved" for e in api.node_events("n1")),
        30,
        "the release to be recorded",
    )
    events = api.node_events("n1")
    reasons = [(e["type"], e["reason"]) for e in events]
    for expected in [
        ("Normal", "PreloadingImages"),
        ("Warning", "PreloadTimedOut"),
        ("Warning", "StartupTaintRemoved"),
        ("Warning", "PreloadFailed"),
    ]:
        assert expected in reasons, reasons
    assert len(reasons) == len(set((e["reason"], e["message"]) for e in events)), (
        "a repeat raised a count; it made no new Event"
    )
    assert all(e["metadata"]["namespace"] == "prepull-system" for e in events)
    assert api.node_events("n2") == [], "another node's Events were written"

    described = kubectl(api, tmp_path, "describe", "node", "n1")
    assert described.returncode == 0, described
    shown = described.stdout[described.stdout.index("Events:") :]
    assert "PreloadFailed" in shown and "no-such-tag" in shown, shown
    assert "StartupTaintRemoved" in shown and "prepull-agent" in shown, shown
    assert shown.count("StartupTaintRemoved") == 1, "each Event shown once"
    assert "(x" in shown, "a repeated failure is shown with its count"
    assert status_of(daemon)["gate"]["events"]["error"] is None


def test_a_rotated_token_is_used_and_a_missing_permission_is_named(
    api: KubeApiServer,
    volume: ConfigMapVolume,
    registry: Registry,
    containerd: Containerd,
    repo: str,
    start_daemon: Any,
    tmp_path: Path,
) -> None:
    image = push_image(registry, repo, "1", (NODE,))
    volume.write(listing(registry, [image.tagged]))
    # The token in the file may read nodes but not write their status.
    api.tokens["weak-token"] = frozenset({("get", "nodes")})
    (tmp_path / "token").write_text("weak-token\n")
    daemon = start_daemon(volume.path, *gate_flags(api, tmp_path, "--node-condition"))
    daemon.wait_for(
        lambda: (status_of(daemon).get("gate") or {}).get("error") is not None, 30, "the error"
    )
    error = status_of(daemon)["gate"]["error"]
    assert "HTTP 403" in error and "RBAC" in error and "weak-token" not in error, error
    daemon.wait_for(lambda: daemon.get("/readyz")[0] == 200, 30, "readiness despite the gate")
    assert api.condition("n1", CONDITION_TYPE) is None
    # kubelet rotates the projected token: the next request uses the new one.
    (tmp_path / "token").write_text("agent-token\n")
    daemon.wait_for(
        lambda: api.condition("n1", CONDITION_TYPE) is not None, 30, "the condition after rotation"
    )
    # The gate's error is cleared when its sync returns, a moment after the write: wait for it.
    daemon.wait_for(
        lambda: status_of(daemon)["gate"]["error"] is None, 30, "the error to clear after rotation"
    )
    assert "weak-token" not in daemon.log() and "agent-token" not in daemon.log()


def test_the_gate_without_what_it_needs_is_bad_input(tmp_path: Path) -> None:
    config = tmp_path / "preload.yaml"
    config.write_text("images:\n  - nginx:1.25.3\n")
    result = run_agent("run", "--config", str(config), "--remove-startup-taint", KEY)
    assert result.code == 2, result
    assert "node's name" in result.stderr or "API server" in result.stderr, result
    timeout_alone = run_agent("run", "--config", str(config), "--ready-timeout", "60")
    assert timeout_alone.code == 2 and "--remove-startup-taint" in timeout_alone.stderr
    acting_alone = run_agent("run", "--config", str(config), "--impersonate-node")
    assert acting_alone.code == 2 and "--node-condition" in acting_alone.stderr, acting_alone
    acting_untaint = run_agent(
        "run", "--config", str(config), "--impersonate-node", "--remove-startup-taint", KEY
    )
    assert acting_untaint.code == 2 and "NodeRestriction" in acting_untaint.stderr, acting_untaint
    no_ca = run_agent(
        "run",
        "--config",
        str(config),
        "--node-condition",
        "--node-name",
        "n1",
        "--kube-api",
        "https://127.0.0.1:1",
        "--kube-ca-file",
        str(tmp_path / "missing-ca.pem"),
    )
    assert no_ca.code == 2, no_ca
    assert "cannot load the API server's CA" in no_ca.stderr and "Traceback" not in no_ca.stderr


# Each was seen to end the daemon (spec or status null too: reports.gate's unit tests read them).
HOSTILE_NODES = {
    "spec a string": lambda n: {**n, "spec": "tainted"},
    "taints as a string": lambda n: {**n, "spec": {"taints": "prepull.io/not-ready"}},
    "conditions as strings": lambda n: {**n, "status": {"conditions": ["Ready", CONDITION_TYPE]}},
    "a taint without a key": lambda n: {**n, "spec": {"taints": [{"effect": "NoSchedule"}]}},
    "a list, not a Node": lambda n: [n],
}


def test_a_hostile_api_server_never_ends_the_daemon_and_a_healed_one_is_served(
    api: KubeApiServer,
    volume: ConfigMapVolume,
    registry: Registry,
    containerd: Containerd,
    repo: str,
    start_daemon: Any,
    tmp_path: Path,
) -> None:
    image = push_image(registry, repo, "1", (NODE,))
    volume.write(listing(registry, [image.tagged]))
    # A token file with a line break inside: refused before it is sent, never quoted.
    (tmp_path / "token").write_text("agent-\r\ntoken\n")
    flags = gate_flags(api, tmp_path, "--node-condition", "--remove-startup-taint", KEY)
    daemon = start_daemon(volume.path, *flags)
    daemon.wait_for(
        lambda: "control characters" in str((status_of(daemon).get("gate") or {}).get("error")),
        30,
        "the token to be refused",
    )
    (tmp_path / "token").write_text("agent-token\n")

    errors = set()
    for kind, shape in HOSTILE_NODES.items():
        api.served = shape
        daemon.wait_for(
            lambda: (
                "API server" in str(status_of(daemon)["gate"]["error"])
                and status_of(daemon)["gate"]["error"] not in errors
            ),
            30,
            f"the gate to report the {kind} Node",
        )
        errors.add(status_of(daemon)["gate"]["error"])
        assert daemon.proc.poll() is None, f"the daemon ended on a Node with {kind}"
        assert daemon.get("/healthz")[0] == 200, kind
    assert KEY in [t["key"] for t in api.taints("n1")], "nothing is removed on a bad read"

    # A healed API server that sends a large Node in small chunks is read whole.
    api.served = lambda n: {
        **n,
        "metadata": {**n["metadata"], "annotations": {"pad": "x" * 40_000}},
    }
    api.chunk = 1024
    daemon.wait_for(
        lambda: KEY not in [t["key"] for t in api.taints("n1")], 60, "the taint removal"
    )
    daemon.wait_for(
        lambda: (api.condition("n1", CONDITION_TYPE) or {}).get("status") == "True",
        30,
        "the condition",
    )
    log = daemon.log()
    assert "Traceback" not in log and "agent-token" not in log, log
    assert daemon.metric("prepull_task_failures_total", task="gate") in (None, 0.0), log


def test_the_token_never_goes_to_an_api_server_in_the_clear(tmp_path: Path) -> None:
    config = tmp_path / "preload.yaml"
    config.write_text("images:\n  - nginx:1.25.3\n")
    result = run_agent(
        "run", "--config", str(config), "--node-condition", "--node-name", "n1",
        "--kube-api", "http://127.0.0.1:1",
    )  # fmt: skip
    assert result.code == 2 and "must be an https:// URL" in result.stderr, result
