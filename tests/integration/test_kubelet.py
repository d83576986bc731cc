"""What the kubelet makes of a preload list, on a real containerd: `doctor --config
--kubelet-config` and the daemon with `--kubelet-config`, against kubelet config files in the
formats kubelet 1.30 to 1.36 read (tests/data/kubelet)."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.agent import run_agent
from tests.harness.containerd import Containerd, selected_release
from tests.harness.daemon import DaemonProc

DATA = Path(__file__).parents[1] / "data" / "kubelet"
POLICY = "kubelet.imagePullCredentialsVerificationPolicy"
GC_LOW = "kubelet.imageGCLowThresholdPercent"
PINS_HONOURED = selected_release().line != "1.6"
"""containerd 1.6 does not report the pin label to kubelet (agent.core.runtimes)."""


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containerd]:
    started = Containerd(tmp_path_factory.mktemp("kubelet-node")).start()
    yield started
    started.stop()


def a_list(folder: Path, extra: str = "") -> Path:
    """Two public images and one of a registry the list has credentials for."""
    secret = {"auths": {"registry.example": {"auth": base64.b64encode(b"u:p").decode()}}}
    (folder / "pull-secret.json").write_text(json.dumps(secret))
    preload = folder / "preload.yaml"
    preload.write_text(
        "images:\n  - nginx:1.27\n  - registry.example/team/private:1\n"
        "  - quay.io/org/tool:2\ncredentials:\n  - pull-secret.json\n" + extra
    )
    return preload


def doctor(node: Containerd, *extra: str) -> tuple[int, dict[str, Any]]:
    result = run_agent("doctor", "--cri-endpoint", node.endpoint, "-o", "json", *extra)
    assert result.code in (0, 1), result
    return result.code, json.loads(result.stdout)


def test_a_verifying_kubelet_is_named_and_only_public_images_are_offered(
    node: Containerd, tmp_path: Path
) -> None:
    preload = a_list(tmp_path)
    kubelet_file = str(DATA / "kubeadm-1.35.yaml")

    code, said = doctor(node, "--config", str(preload), "--kubelet-config", kubelet_file)

    assert code == 1, said
    assert said["kubelet"]["config"] == kubelet_file
    found = {f["setting"]: f for f in said["kubelet"]["findings"]}
    policy = found[POLICY]
    assert policy["current"].startswith("AlwaysVerify: 3 of 3 listed images"), policy
    assert "[docker.io/library/nginx, quay.io/org/tool]" in policy["recommended"], policy
    assert "registry.example" not in policy["recommended"]
    # The same with the operator marking the private image public: it is offered too.
    _, marked = doctor(
        node,
        "--config",
        str(preload),
        "--kubelet-config",
        kubelet_file,
        "--public",
        "registry.example/team/private",
    )
    offered = {f["setting"]: f for f in marked["kubelet"]["findings"]}[POLICY]["recommended"]
    assert "registry.example/team/private" in offered, offered
    text = run_agent(
        "doctor", "--cri-endpoint", node.endpoint, "--config", str(preload),
        "--kubelet-config", kubelet_file,
    )  # fmt: skip
    assert text.code == 1 and "KUBELET FINDINGS" in text.stdout, text
    assert f"kubelet config: {kubelet_file}" in text.stdout


def test_private_images_under_the_default_policy_are_a_change_on_a_multi_tenant_pool(
    node: Containerd, tmp_path: Path
) -> None:
    preload = a_list(tmp_path, "maxDiskUsagePercent: 70\n")
    kubelet_file = str(DATA / "kubeadm-1.36.yaml")

    single_code, single = doctor(node, "--config", str(preload), "--kubelet-config", kubelet_file)
    code, shared = doctor(
        node, "--config", str(preload), "--kubelet-config", kubelet_file, "--multi-tenant"
    )

    alone = {f["setting"]: f for f in single["kubelet"]["findings"]}[POLICY]
    tenants = {f["setting"]: f for f in shared["kubelet"]["findings"]}[POLICY]
    assert alone["recommended"] is None and "1 private images" in alone["current"]
    assert "any namespace can run these private images" in tenants["impact"]
    assert "NeverVerifyAllowlistedImages" in tenants["recommended"]
    assert code == 1
    if single_code == 1:  # containerd's own findings may recommend changes
        assert single["findings"] or single["apply"], single


def test_a_kubelet_config_kubelet_would_refuse_is_bad_input_naming_file_and_line(
    node: Containerd, tmp_path: Path
) -> None:
    broken = tmp_path / "config.yaml"
    broken.write_text(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
        "imageGCLowThresholdPercent: 95\n"
    )

    result = run_agent(
        "doctor", "--cri-endpoint", node.endpoint, "--kubelet-config", str(broken)
    )  # fmt: skip

    assert result.code == 2, result
    assert f"{broken}:3: imageGCLowThresholdPercent: 95 is above the high threshold" in (
        result.stderr
    )


def test_the_daemon_says_what_the_kubelet_makes_of_the_list(
    node: Containerd, tmp_path: Path
) -> None:
    preload = a_list(tmp_path, "resync: 1s\n")
    kubelet_file = tmp_path / "kubelet" / "config.yaml"
    kubelet_file.parent.mkdir()
    shutil.copy(DATA / "eks-1.32.json", kubelet_file)
    daemon = DaemonProc(preload, node.endpoint, "--kubelet-config", str(kubelet_file))
    try:

        def read() -> dict[str, Any] | None:
            found: dict[str, Any] | None = json.loads(daemon.get("/status")[1]).get("kubelet")
            return found

        daemon.wait_for(lambda: read() is not None, 60, "/status to say what the kubelet does")
        said = read()
        assert said is not None and said["config"] == str(kubelet_file), said
        gc = {f["setting"]: f for f in said["findings"]}[GC_LOW]
        assert gc["recommended"] == "maxDiskUsagePercent: 70 in the list", gc
        assert ("FreeDiskSpaceFailed" in gc["impact"]) == PINS_HONOURED, gc
        metrics = daemon.get("/metrics")[1]
        assert f'prepull_kubelet_finding{{change="1",setting="{GC_LOW}"}} 1.0' in metrics
        judged = daemon.log().count("the kubelet (")
        assert judged >= 1, daemon.log()
        # The operator raises the GC thresholds: the list's budget (80) is now below them.
        kubelet_file.write_text(
            kubelet_file.read_text()
            .replace('"imageGCHighThresholdPercent": 85', '"imageGCHighThresholdPercent": 95')
            .replace('"imageGCLowThresholdPercent": 75', '"imageGCLowThresholdPercent": 90')
        )
        daemon.wait_for(
            lambda: GC_LOW not in {f["setting"] for f in (read() or {}).get("findings", [])},
            60,
            "the daemon to judge the changed kubelet file",
        )
        assert daemon.log().count("the kubelet (") > judged, daemon.log()
    finally:
        daemon.terminate()
