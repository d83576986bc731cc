"""deploy/ is validated offline against the Kubernetes schemas and checked against the code:
ports, paths, flags, config keys and metric names must be the ones the agent really has."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from prometheus_client import CollectorRegistry

from agent.adapters.kube.workloads import WORKLOADS
from agent.adapters.runtime import rpc
from agent.cli import common, converge
from agent.cli.parser import parser
from agent.core.images.platform import Platform
from agent.core.lists import config as configs
from agent.core.reports.gate import CONDITION_TYPE
from agent.core.reports.status import NodeReport
from agent.daemon.metrics import Metrics
from agent.daemon.server import make_app
from agent.daemon.settings import DEFAULT_LISTEN, parse_listen
from tests.harness.kubectl import kustomize

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
KUBERNETES_VERSION = "1.35.0"


def objects() -> list[dict[str, Any]]:
    return list(yaml.safe_load_all((DEPLOY / "daemonset.yaml").read_text()))


def one(kind: str) -> dict[str, Any]:
    (found,) = [o for o in objects() if o["kind"] == kind]
    return found


def container() -> dict[str, Any]:
    agent: dict[str, Any]
    (agent,) = one("DaemonSet")["spec"]["template"]["spec"]["containers"]
    return agent


def flag(args: list[str], name: str) -> str:
    (value,) = [a.split("=", 1)[1] for a in args if a.startswith(f"{name}=")]
    return value


@pytest.mark.parametrize("index", range(len(objects())))
def test_every_object_validates_against_the_kubernetes_schema(index: int) -> None:
    kubernetes_validate.validate(objects()[index], KUBERNETES_VERSION, strict=True)


def test_the_args_are_flags_the_cli_accepts() -> None:
    parsed = parser().parse_args(container()["args"])
    assert parsed.command.load() is converge.run


def test_the_shipped_preload_list_is_valid_and_mounted_where_the_agent_reads_it() -> None:
    agent = container()
    config_path = Path(flag(agent["args"], "--config"))
    mounts = {m["name"]: m for m in agent["volumeMounts"]}
    volumes = {v["name"]: v for v in one("DaemonSet")["spec"]["template"]["spec"]["volumes"]}
    (config_volume,) = [n for n, v in volumes.items() if "configMap" in v]
    assert str(config_path.parent) == mounts[config_volume]["mountPath"]
    assert "subPath" not in mounts[config_volume], "subPath mounts never see ConfigMap updates"
    data = one("ConfigMap")["data"]
    assert volumes[config_volume]["configMap"]["name"] == one("ConfigMap")["metadata"]["name"]
    configs.parse(data[config_path.name], "ConfigMap preload.yaml")


def test_ports_agree_everywhere() -> None:
    agent = container()
    _, port = parse_listen(flag(agent["args"], "--listen"))
    assert port == parse_listen(DEFAULT_LISTEN)[1]
    (container_port,) = agent["ports"]
    assert container_port["containerPort"] == port
    annotations = one("DaemonSet")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)
    (service_port,) = one("Service")["spec"]["ports"]
    assert service_port["port"] == port and service_port["targetPort"] == container_port["name"]


def test_the_network_policy_admits_only_scrapers_and_only_to_the_agents_port() -> None:
    policy = one("NetworkPolicy")["spec"]
    selector = one("DaemonSet")["spec"]["selector"]["matchLabels"]
    assert policy["podSelector"]["matchLabels"] == selector
    assert policy["policyTypes"] == ["Ingress"], "egress stays open: registries are anywhere"
    (rule,) = policy["ingress"]
    (port,) = container()["ports"]
    assert rule["ports"] == [{"protocol": "TCP", "port": port["containerPort"]}]
    assert all(source.get("podSelector", {}).get("matchLabels") for source in rule["from"]), (
        "every source names the pods it admits"
    )


def test_probes_and_scrape_path_are_served() -> None:
    app = make_app(
        NodeReport(Platform("linux", "amd64")), CollectorRegistry(), _healthy, lambda: False
    )
    served = {resource.canonical for resource in app.router.resources()}
    agent = container()
    assert agent["livenessProbe"]["httpGet"]["path"] == "/healthz" in served
    assert agent["readinessProbe"]["httpGet"]["path"] == "/readyz" in served
    annotations = one("DaemonSet")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] in served


async def _healthy() -> None:
    return None


def test_the_socket_mount_matches_the_endpoint() -> None:
    agent = container()
    env = {e["name"]: e.get("value") for e in agent["env"]}
    socket = env[common.ENDPOINT_ENV].removeprefix("unix://")
    assert rpc.target(env[common.ENDPOINT_ENV]) == env[common.ENDPOINT_ENV]
    mounts = [m for m in agent["volumeMounts"] if m["mountPath"] == socket]
    assert mounts, f"nothing mounted at {socket}"
    volumes = {v["name"]: v for v in one("DaemonSet")["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mounts[0]["name"]]["hostPath"] == {"path": socket, "type": "Socket"}


def test_shutdown_grace_fits_in_the_termination_grace_period() -> None:
    grace = float(flag(container()["args"], "--shutdown-grace"))
    assert grace < one("DaemonSet")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]


def test_the_pod_runs_everywhere_with_no_more_rights_than_the_socket_needs() -> None:
    pod = one("DaemonSet")["spec"]["template"]["spec"]
    assert {"operator": "Exists"} in pod["tolerations"]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}, "Windows nodes run no agent"
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["automountServiceAccountToken"] is False
    security = container()["securityContext"]
    assert security["capabilities"]["drop"] == ["ALL"]
    assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"]


def exported_metric_names() -> set[str]:
    registry = CollectorRegistry()
    Metrics(registry)
    names = set()
    for family in registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
        for suffix in suffixes.get(family.type, [""]):
            names.add(family.name + suffix)
    return names


def metric_names_in(text: str) -> set[str]:
    return set(re.findall(r"\bprepull_[a-z_]+\b", text))


def promtool(*args: str) -> None:
    """Run promtool (Debian's prometheus package); fail with its output if it does."""
    binary = shutil.which("promtool")
    assert binary, "promtool missing: install the Debian package 'prometheus' (make deps)"
    run = subprocess.run([binary, *args], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_alert_rules_pass_promtool_and_use_real_metrics() -> None:
    rules = DEPLOY / "prometheus-rules.yaml"
    promtool("check", "rules", str(rules))
    used = metric_names_in(rules.read_text())
    assert used and used <= exported_metric_names(), used - exported_metric_names()


def test_dashboard_queries_use_real_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = set().union(*(metric_names_in(e) for e in exprs))
    assert used and used <= exported_metric_names(), used - exported_metric_names()
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in (
        "ready",
        "found their image preloaded",
        "latency",
        "drift",
        "evictions",
        "pinned",
        "rate-limit",
        "since each node was last ready",
        "failed permanently",
        "fleet",
        "lists served",
        "not ready, by image",
    ):
        assert topic in titles, f"no panel about {topic}"
    variables = [v["name"] for v in dashboard["templating"]["list"]]
    assert "node" in variables and all("$node" in e for e in exprs)


def test_alert_rules_fire_and_stay_quiet_as_their_tests_say() -> None:
    tests = DEPLOY / "prometheus-rules.test.yaml"
    promtool("test", "rules", str(tests))
    rules = yaml.safe_load((DEPLOY / "prometheus-rules.yaml").read_text())["groups"][0]["rules"]
    tested = set(re.findall(r"alertname: (\w+)", tests.read_text()))
    assert {r["alert"] for r in rules} <= tested, "every alert has a promtool test"
    assert all("for" in r for r in rules), "every alert has a for:"


def test_dockerfile_runs_the_console_script_with_valid_arguments() -> None:
    text = (ROOT / "Dockerfile").read_text()
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (.+)$", text, re.M).group(1))  # type: ignore[union-attr]
    command = json.loads(re.search(r"^CMD (.+)$", text, re.M).group(1))  # type: ignore[union-attr]
    assert entrypoint == ["prepull-agent"] and "prepull-agent" in scripts
    assert parser().parse_args(command).command.load() is converge.run
    assert re.search(r"^USER 65532", text, re.M), "the image should not run as root by default"


def test_containerds_config_folder_is_mounted_read_only_where_the_agent_looks() -> None:
    """containerd's hosts directory (resolving as containerd pulls) and its config file (how it
    pulls) both sit in the one host folder mounted at the same path."""
    from agent.adapters.registry.hosts import DEFAULT_HOSTS_DIR
    from agent.adapters.runtime.containerd_config import DEFAULT_PATH

    mounts = {m["mountPath"]: m for m in container()["volumeMounts"]}
    volumes = {v["name"]: v for v in one("DaemonSet")["spec"]["template"]["spec"]["volumes"]}
    for needed in (DEFAULT_HOSTS_DIR, DEFAULT_PATH):
        (mount,) = [m for path, m in mounts.items() if needed.is_relative_to(path)]
        assert mount["readOnly"], mount
        assert volumes[mount["name"]]["hostPath"]["path"] == mount["mountPath"]


def test_the_image_filesystem_is_visible_read_only_for_the_disk_budget() -> None:
    mounts = {m["name"]: m for m in container()["volumeMounts"]}
    volumes = {v["name"]: v for v in one("DaemonSet")["spec"]["template"]["spec"]["volumes"]}
    mount = mounts["containerd-root"]
    assert mount["readOnly"] is True
    # containerd reports its snapshotter's directory under its root: the same path in the pod.
    assert volumes["containerd-root"]["hostPath"]["path"] == mount["mountPath"]
    assert mount["mountPath"] == "/var/lib/containerd"


def test_the_commented_credentials_path_is_the_secret_mount() -> None:
    text = one("ConfigMap")["data"]["preload.yaml"]
    mounts = {m["name"]: m["mountPath"] for m in container()["volumeMounts"]}
    assert f"{mounts['pull-secret']}/.dockerconfigjson" in text


UNIT = Path(__file__).resolve().parents[3] / "deploy" / "systemd" / "prepull-agent.service"


def _exec_start() -> list[str]:
    (line,) = [x for x in UNIT.read_text().splitlines() if x.startswith("ExecStart=")]
    return shlex.split(line.removeprefix("ExecStart="))


def test_the_systemd_unit_runs_the_daemon_with_flags_the_cli_accepts() -> None:
    program, *args = _exec_start()
    assert program.endswith("/prepull-agent")
    parsed = parser().parse_args(args)
    assert parsed.command.load() is converge.run and parsed.listen.startswith("127.0.0.1:")


def test_systemd_itself_accepts_the_unit(tmp_path: Path) -> None:
    """systemd-analyze verify (Debian's systemd) with ExecStart on this venv's prepull-agent."""
    installed = Path(sys.executable).parent / "prepull-agent"
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/prepull-agent", str(installed)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert str(unit.name) not in result.stderr, result.stderr


OVERLAYS = sorted(p.parent.name for p in (DEPLOY / "overlays").glob("*/kustomization.yaml"))


def test_the_rendered_files_are_their_sources_as_rendered_now() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import render_deploy
    finally:
        sys.path.pop(0)
    assert (DEPLOY / "daemonset.yaml").read_text() == render_deploy.render(), (
        "deploy/daemonset.yaml is stale: run make deploy"
    )
    assert render_deploy.PROMETHEUS_RULE.read_text() == render_deploy.render_rule(), (
        "the PrometheusRule is stale: run make deploy"
    )


CRDS = ROOT / "tests" / "data" / "crds"
VENDORED_GROUPS = {path.name.partition("_")[0] for path in CRDS.glob("*.json")}
"""API groups whose custom resources are checked against their vendored CRD schema."""


def crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    """The published OpenAPI schema of a custom resource, vendored in tests/data/crds, made
    strict: the API server drops unknown fields of a structural schema without a word, so a
    misspelt field must fail here instead."""
    group, version = api_version.split("/")
    for path in CRDS.glob(f"{group}_*.{version}.json"):
        document = json.loads(path.read_text())
        if document["kind"] == kind:
            schema: dict[str, Any] = _strict(document["openAPIV3Schema"])
            return schema
    raise AssertionError(f"no vendored schema for {api_version} {kind} in {CRDS}")


def _strict(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {key: _strict(value) for key, value in schema.items()}
    if isinstance(schema.get("pattern"), str) and "(?i)" in schema["pattern"]:
        # Go's RE2 takes a flag anywhere (`^(?i)(abort|warn)?$`); Python only at the start.
        strict["pattern"] = "(?i)" + schema["pattern"].replace("(?i)", "")
    if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        strict.setdefault("additionalProperties", False)
    return strict


def validate(item: dict[str, Any]) -> None:
    """Against the Kubernetes schemas, or a custom resource against its CRD's."""
    if "/" in item["apiVersion"] and item["apiVersion"].split("/")[0] in VENDORED_GROUPS:
        metadata = {k: v for k, v in item.items() if k != "metadata"}
        jsonschema.validate(metadata, crd_schema(item["apiVersion"], item["kind"]))
    else:
        kubernetes_validate.validate(item, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_renders_objects_their_schemas_accept(overlay: str) -> None:
    rendered = kustomize(DEPLOY / "overlays" / overlay)
    assert {o["kind"] for o in objects()} <= {o["kind"] for o in rendered}, "the base is kept"
    for item in rendered:
        validate(item)


def test_a_misspelt_custom_resource_field_is_caught() -> None:
    rendered = kustomize(DEPLOY / "overlays" / "prometheus-operator")
    (monitor,) = [o for o in rendered if o["kind"] == "PodMonitor"]
    monitor["spec"]["podMetricEndpoints"] = monitor["spec"].pop("podMetricsEndpoints")
    with pytest.raises(jsonschema.ValidationError, match="podMetricEndpoints"):
        validate(monitor)


def test_the_prometheus_operator_overlay_scrapes_the_agent_and_carries_the_tested_rules() -> None:
    rendered = kustomize(DEPLOY / "overlays" / "prometheus-operator")
    (monitor,) = [o for o in rendered if o["kind"] == "PodMonitor"]
    (daemonset,) = [o for o in rendered if o["kind"] == "DaemonSet"]
    labels = daemonset["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = {p["name"] for p in container()["ports"]}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
    (rule,) = [o for o in rendered if o["kind"] == "PrometheusRule"]
    tested = yaml.safe_load((DEPLOY / "prometheus-rules.yaml").read_text())["groups"]
    assert rule["spec"]["groups"] == tested, "the rules promtool tests are the rules shipped"


def test_the_private_registry_overlay_requires_the_pull_secret_the_list_names() -> None:
    rendered = kustomize(DEPLOY / "overlays" / "private-registry")
    (daemonset,) = [o for o in rendered if o["kind"] == "DaemonSet"]
    volumes = {v["name"]: v for v in daemonset["spec"]["template"]["spec"]["volumes"]}
    assert volumes["pull-secret"]["secret"] == {
        "secretName": "prepull-pull-secret",
        "optional": False,
    }
    base = {v["name"]: v for v in one("DaemonSet")["spec"]["template"]["spec"]["volumes"]}
    assert base["pull-secret"]["secret"]["optional"] is True, "the base runs without one"


def test_the_kubelet_config_overlay_mounts_the_file_read_only_and_names_it() -> None:
    rendered = kustomize(DEPLOY / "overlays" / "kubelet-config")
    (daemonset,) = [o for o in rendered if o["kind"] == "DaemonSet"]
    pod = daemonset["spec"]["template"]["spec"]
    (agent,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in agent["volumeMounts"]}
    # A file, never created: a missing one stops the pod instead of planting a directory.
    assert volumes["kubelet-config"]["hostPath"] == {
        "path": "/var/lib/kubelet/config.yaml",
        "type": "File",
    }
    assert mounts["kubelet-config"]["readOnly"] is True
    named = [a for a in agent["args"] if a.startswith("--kubelet-config=")]
    assert named == [f"--kubelet-config={mounts['kubelet-config']['mountPath']}"]
    args = parser().parse_args([*agent["args"], "--cri-endpoint", "unix:///x"])
    assert str(args.kubelet_config) == mounts["kubelet-config"]["mountPath"]
    assert "kubelet-config" not in {
        v["name"] for v in one("DaemonSet")["spec"]["template"]["spec"]["volumes"]
    }


def test_the_from_cluster_keeper_is_granted_what_it_reads_and_writes_and_no_more() -> None:
    rendered = kustomize(DEPLOY / "overlays" / "from-cluster")
    (deployment,) = [o for o in rendered if o["kind"] == "Deployment"]
    (keeper,) = deployment["spec"]["template"]["spec"]["containers"]
    args = parser().parse_args(keeper["args"])
    assert args.watch and args.lock and args.all_namespaces
    namespace, name = args.configmap.split("/")
    (role,) = [
        o
        for o in rendered
        if o["kind"] == "ClusterRole" and "from-cluster" in o["metadata"]["name"]
    ]
    granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"]
               for r in rule["resources"] for v in rule["verbs"]}  # fmt: skip
    read = {(prefix.removeprefix("/apis/").removesuffix("/v1") if prefix != "/api/v1" else "",
             resource) for _, prefix, resource in WORKLOADS}  # fmt: skip
    read.add(("autoscaling.x-k8s.io", "capacitybuffers"))
    assert granted == {(g, r, v) for g, r in read for v in ("list", "watch")} | {
        ("", "podtemplates", "get")
    }
    (writer,) = [
        o for o in rendered if o["kind"] == "Role" and "from-cluster" in o["metadata"]["name"]
    ]
    assert writer["metadata"]["namespace"] == namespace
    assert writer["rules"] == [
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [name],
         "verbs": ["get", "patch"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    ]  # fmt: skip
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] != "prepull-agent", "not taken for an agent pod"


def test_the_readiness_gate_overlay_turns_on_the_gate_with_the_rights_it_uses() -> None:
    rendered = kustomize(DEPLOY / "overlays" / "readiness-gate")
    (daemonset,) = [o for o in rendered if o["kind"] == "DaemonSet"]
    pod = daemonset["spec"]["template"]["spec"]
    (agent,) = pod["containers"]
    args = parser().parse_args(agent["args"])
    assert args.node_condition and args.remove_startup_taint == "prepull.io/not-ready"
    assert args.ready_timeout == 1800
    env = {e["name"]: e for e in agent["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert pod["automountServiceAccountToken"] is True
    (account,) = [o for o in rendered if o["kind"] == "ServiceAccount"]
    assert account["automountServiceAccountToken"] is True
    (role,) = [o for o in rendered if o["kind"] == "ClusterRole"]
    granted = {(v, r) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}
    # Exactly what adapters.kube calls: GET and PATCH the node, PATCH its status; nothing else.
    assert granted == {("get", "nodes"), ("patch", "nodes"), ("patch", "nodes/status")}
    (binding,) = [o for o in rendered if o["kind"] == "ClusterRoleBinding"]
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": account["metadata"]["namespace"],
        }
    ]
    # The base itself never talks to the API.
    assert one("ServiceAccount")["automountServiceAccountToken"] is False
    assert not [o for o in objects() if o["kind"].startswith("ClusterRole")]


def test_the_node_readiness_controller_overlay_reports_the_condition_its_rule_maps() -> None:
    """The Node Readiness Controller removes the taint: the agent only reports the condition,
    with the rights that takes (no patch of the Node itself), and the rule names that
    condition and a taint under readiness.k8s.io/, released once (bootstrap-only)."""
    rendered = kustomize(DEPLOY / "overlays" / "node-readiness-controller")
    (daemonset,) = [o for o in rendered if o["kind"] == "DaemonSet"]
    (agent,) = daemonset["spec"]["template"]["spec"]["containers"]
    args = parser().parse_args(agent["args"])
    assert args.node_condition and args.remove_startup_taint is None
    (rule,) = [o for o in rendered if o["kind"] == "NodeReadinessRule"]
    assert rule["spec"]["conditions"] == [{"type": CONDITION_TYPE, "requiredStatus": "True"}]
    assert rule["spec"]["taint"]["key"].startswith("readiness.k8s.io/")
    assert rule["spec"]["enforcementMode"] == "bootstrap-only"
    validate(rule)
    (role,) = [o for o in rendered if o["kind"] == "ClusterRole"]
    granted = {(v, r) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}
    assert granted == {("get", "nodes"), ("patch", "nodes/status")}


def test_a_rule_the_controller_would_refuse_is_caught() -> None:
    rendered = kustomize(DEPLOY / "overlays" / "node-readiness-controller")
    (rule,) = [o for o in rendered if o["kind"] == "NodeReadinessRule"]
    broken = {**rule, "spec": {**rule["spec"], "enforcementMode": "once"}}
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)


def test_the_prometheus_operator_objects_carry_the_release_label_and_nothing_else_does() -> None:
    rendered = kustomize(DEPLOY / "overlays" / "prometheus-operator")
    labelled = {o["kind"] for o in rendered if "release" in o["metadata"].get("labels", {})}
    assert labelled == {"PodMonitor", "PrometheusRule"}


def test_the_agent_owns_its_pins_as_its_daemonset() -> None:
    """Two DaemonSets on one node are two owners: the pod's name and namespace reach the agent
    (the downward API), and its default owner is the DaemonSet they name."""
    from agent.core.engine.claims import owner_of

    refs = {
        e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        for e in container()["env"]
    }
    assert refs["POD_NAME"] == "metadata.name" and refs["POD_NAMESPACE"] == "metadata.namespace"
    daemonset = one("DaemonSet")["metadata"]
    pod = f"{daemonset['name']}-x7k2p"  # the API server's generateName: 5 random characters
    assert owner_of(None, "/etc/prepull/preload.yaml", pod_name=pod, pod_namespace="ns") == (
        f"daemonset:ns/{daemonset['name']}"
    )


def test_the_readmes_install_example_renders_with_the_users_image_list_and_placement(
    tmp_path: Path,
) -> None:
    """The README's install example, copied out of the README (so the two cannot drift), in a
    folder beside a checkout of the project, rendered with the kubectl `make deps` provides."""
    readme = (DEPLOY.parent / "README.md").read_text()
    marker = readme.index("<!-- install-example:")
    example = readme[readme.index("```yaml\n", marker) + 8 : readme.index("```\n", marker + 20)]
    (tmp_path / "prepull-agent").symlink_to(DEPLOY.parent)
    mine = tmp_path / "my-install"
    mine.mkdir()
    (mine / "kustomization.yaml").write_text(example)
    listed = "images:\n  - registry.example.com/shop/web:1.8.2@sha256:" + "1" * 64 + "\n"
    (mine / "preload.yaml").write_text(listed)

    rendered = kustomize(mine)

    (daemonset,) = [o for o in rendered if o["kind"] == "DaemonSet"]
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry.example.com/platform/prepull-agent:0.1.0"
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux", "node-pool": "gpu"}
    assert pod["tolerations"] == [{"operator": "Exists"}]
    (config,) = [o for o in rendered if o["kind"] == "ConfigMap"]
    assert config["metadata"]["name"] == "prepull-agent-config"
    assert config["data"] == {"preload.yaml": listed}, "the user's list, whole, alone"
    volumes = [v.get("configMap", {}).get("name") for v in pod["volumes"]]
    assert "prepull-agent-config" in volumes
    assert {o["metadata"].get("namespace") for o in rendered if o["kind"] != "Namespace"} <= {
        "prepull-system",
        None,
    }
    assert any(o["kind"] == "ValidatingAdmissionPolicy" for o in rendered), "the overlay named"


def test_each_overlay_says_its_prerequisites_at_its_top() -> None:
    for overlay in sorted((DEPLOY / "overlays").iterdir()):
        text = (overlay / "kustomization.yaml").read_text()
        head = text[: text.index("apiVersion:")]
        assert "Needs:" in head and "Grants" in head, overlay.name
