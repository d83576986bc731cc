"""The image the DaemonSet runs, built offline (`make image`: scripts/build_image.py) and run the
way the DaemonSet runs it: a CRI pod on the test containerd, the containerd socket and the list
mounted, read-only root filesystem, every capability dropped, the args of deploy/."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import yaml

from agent._proto.runtime.v1 import api_pb2 as pb
from tests.harness.agent import image_status, pull, run_agent
from tests.harness.containerd import Containerd
from tests.harness.images import push_runnable
from tests.harness.pods import exec_sync, remove_pod, run_pod, sandbox_config, start_container
from tests.harness.procs import free_port
from tests.harness.registry import Registry

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import build_image  # noqa: E402

sys.path.pop(0)


def push_layout(registry: Registry, layout: Path, repo: str, tag: str) -> str:
    """Push the OCI layout's one image to `registry` as repo:tag over the registry API."""
    (entry,) = json.loads((layout / "index.json").read_text())["manifests"]
    blobs = layout / "blobs" / "sha256"

    def blob(digest: str) -> bytes:
        return (blobs / digest.removeprefix("sha256:")).read_bytes()

    manifest = blob(entry["digest"])
    document = json.loads(manifest)
    for descriptor in [document["config"], *document["layers"]]:
        registry.push_blob(repo, blob(descriptor["digest"]), descriptor["digest"])
    registry.push_manifest(repo, tag, manifest, document["mediaType"])
    return f"{registry.host}/{repo}:{tag}"


def deploy_container() -> dict[str, Any]:
    documents = yaml.safe_load_all((ROOT / "deploy" / "daemonset.yaml").read_text())
    (daemonset,) = [d for d in documents if d["kind"] == "DaemonSet"]
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    return dict(container)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def test_the_offline_built_image_preloads_a_list_as_the_daemonset_runs_it(
    tmp_path: Path, registry: Registry, containerd: Containerd
) -> None:
    repo = f"test/agent-{uuid.uuid4().hex[:8]}"
    layout = build_image.build("amd64", f"{registry.host}/{repo}:ci")
    agent_image = push_layout(registry, layout, repo, "ci")
    wanted = push_runnable(registry, f"{repo}-payload", "1", ["/bin/busybox", "true"])
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "preload.yaml").write_text(
        f"images:\n  - {wanted.tagged}\nregistries:\n  {registry.host}:\n    insecure: true\n"
    )
    spec = deploy_container()
    port = free_port()
    # deploy/'s args, but on a free port: the pod shares the host's network here.
    args = [
        a if not a.startswith("--listen=") else f"--listen=127.0.0.1:{port}" for a in spec["args"]
    ]
    assert len(args) == len(spec["args"]) and f"--listen=127.0.0.1:{port}" in args
    env = {e["name"]: e["value"] for e in spec["env"] if "value" in e}
    mounts = {m["name"]: m["mountPath"] for m in spec["volumeMounts"]}
    security = spec["securityContext"]
    assert security["readOnlyRootFilesystem"] and security["capabilities"]["drop"] == ["ALL"]

    pull(containerd, agent_image)  # as kubelet does before creating the container
    sandbox = sandbox_config(f"agent-{uuid.uuid4().hex[:6]}")
    sandbox.log_directory = str(tmp_path / "logs")
    pod = run_pod(containerd.endpoint, sandbox)
    try:
        container = start_container(
            containerd.endpoint,
            pod,
            sandbox,
            agent_image,
            args=args,
            env=env,
            mounts=[
                pb.Mount(
                    container_path=mounts["containerd-socket"],
                    host_path=containerd.endpoint.removeprefix("unix://"),
                ),
                pb.Mount(container_path=mounts["config"], host_path=str(config_dir), readonly=True),
            ],
            security=pb.LinuxContainerSecurityContext(
                capabilities=pb.Capability(drop_capabilities=["ALL"]),
                run_as_user=pb.Int64Value(value=security["runAsUser"]),
                readonly_rootfs=True,
                no_new_privs=not security["allowPrivilegeEscalation"],
            ),
            log_path="agent.log",
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while get(url + "/readyz")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        log = (tmp_path / "logs" / "agent.log").read_text(errors="replace")
        assert get(url + "/readyz")[0] == 200, f"the agent in the image never got ready:\n{log}"
        status, metrics = get(url + "/metrics")
        assert status == 200 and "prepull_node_ready 1.0" in metrics, metrics[:2000]
        assert image_status(containerd, wanted.tagged) is not None, "the list was not preloaded"
        version = exec_sync(containerd.endpoint, container, ["prepull-agent", "version"])
        text = version.stdout.decode()
        assert version.exit_code == 0 and text.startswith("prepull-agent "), version
        assert f"(image {registry.host}/{repo}:ci)" in text, text
        assert "Traceback" not in log, log
    finally:
        remove_pod(containerd.endpoint, pod)
    multi_arch_push(registry, layout, repo, tmp_path)


def multi_arch_push(registry: Registry, amd64: Path, repo: str, tmp_path: Path) -> None:
    """`make image ARCH=amd64,arm64 PUSH=1`'s index and push, with the amd64 image built above
    and an arm64 twin made from it here (this machine cannot build arm64: no binfmt_misc):
    skopeo pushes the index and both images; each platform resolves to its own manifest."""
    arm64 = tmp_path / "oci-arm64"
    shutil.copytree(amd64, arm64)
    (entry,) = json.loads((arm64 / "index.json").read_text())["manifests"]
    blobs = arm64 / "blobs" / "sha256"
    manifest = json.loads((blobs / entry["digest"].removeprefix("sha256:")).read_text())
    config = json.loads((blobs / manifest["config"]["digest"].removeprefix("sha256:")).read_text())
    config["architecture"] = "arm64"
    manifest["config"] = {**manifest["config"], **blob_of(blobs, config)}
    entry = {**entry, **blob_of(blobs, manifest), "platform": {"os": "linux",
             "architecture": "arm64"}}  # fmt: skip
    (arm64 / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    ref = f"{registry.host}/{repo}:multi"
    merged = build_image.index([amd64, arm64], ref)
    subprocess.run(
        ["skopeo", "copy", "--all", "--dest-tls-verify=false", f"oci:{merged}:multi",
         f"docker://{ref}"],
        check=True, capture_output=True,
    )  # fmt: skip
    digests = {}
    for platform in ("linux/amd64", "linux/arm64"):
        found = run_agent("resolve", ref, "--platform", platform, "--insecure", "-o", "json")
        assert found.code == 0, found
        digests[platform] = json.loads(found.stdout)["platform_digest"]
    assert digests["linux/arm64"] == entry["digest"], digests
    assert digests["linux/amd64"] != digests["linux/arm64"], digests


def blob_of(blobs: Path, document: dict[str, Any]) -> dict[str, Any]:
    """Store `document` as a blob; its digest and size."""
    body = json.dumps(document, sort_keys=True).encode()
    digest = hashlib.sha256(body).hexdigest()
    (blobs / digest).write_bytes(body)
    return {"digest": f"sha256:{digest}", "size": len(body)}


def test_the_image_and_the_dockerfile_share_one_layout() -> None:
    """Entrypoint, command, user and paths: `make image` and the Dockerfile build the same."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    instructions = [line.split(" ", 1) for line in dockerfile.splitlines() if line[:1].isupper()]
    last = {key: value for key, value in instructions}
    assert json.loads(last["ENTRYPOINT"]) == build_image.ENTRYPOINT
    assert json.loads(last["CMD"]) == build_image.COMMAND
    assert last["USER"] == build_image.USER
    assert f"/{build_image.SITE}" in dockerfile and "/usr/local/bin/prepull-agent" in dockerfile
    assert "PYTHONDONTWRITEBYTECODE=1" in dockerfile
