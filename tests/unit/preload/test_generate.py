from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli import main
from agent.core.errors import ConfigError
from agent.core.lists import config as configs
from agent.core.lists import yamlsafe
from agent.preload import generate
from agent.preload.generate import (
    ALWAYS,
    IF_NOT_PRESENT,
    NEVER,
    Running,
    effective_policy,
    from_manifests,
    suggest,
)

CORPUS = Path(__file__).resolve().parents[2] / "data" / "manifests"
D1 = "sha256:" + "1" * 64


@pytest.mark.parametrize(
    ("image", "written", "policy"),
    [
        ("nginx", None, ALWAYS),  # neither tag nor digest
        ("nginx:latest", None, ALWAYS),
        (f"nginx:latest@{D1}", None, ALWAYS),  # the tag latest, even with a digest
        (f"nginx@{D1}", None, IF_NOT_PRESENT),
        ("nginx:1.25", None, IF_NOT_PRESENT),
        ("registry.example.com:5000/app", None, ALWAYS),  # a port is not a tag
        ("registry.example.com:5000/app:2", None, IF_NOT_PRESENT),
        ("nginx:1.25", "Always", ALWAYS),  # an explicit policy wins
        ("nginx:latest", "Never", NEVER),
        ("nginx", "IfNotPresent", IF_NOT_PRESENT),
    ],
)
def test_the_pull_policy_is_defaulted_as_kubernetes_does(
    image: str, written: str | None, policy: str
) -> None:
    assert effective_policy(image, written) == policy


def test_every_container_of_every_workload_shape_is_found() -> None:
    documents = []
    for path in sorted(CORPUS.rglob("*")):
        if path.is_file():
            documents += yamlsafe.documents(path.read_text(), str(path))
    found = from_manifests(documents)
    # Files in name order (helm-output.yaml, k8s/…, kubectl-get.json), images as first used.
    assert list(found.keep) == [
        "quay.io/prometheus/node-exporter:v1.8.1",
        "registry.example.com:5000/shop/migrate:2024.06",
        f"registry.example.com:5000/shop/web:1.8.2@{D1}",
        "docker.io/library/nginx:1.25.3",
        "busybox:1.36",
    ]
    assert found.keep["registry.example.com:5000/shop/migrate:2024.06"] == [
        "CronJob shop/nightly-report (container uploader)",
        "Deployment shop/web (init container migrate)",
    ]
    assert found.keep["docker.io/library/nginx:1.25.3"] == [
        "Pod default/debug-7f9c (container main)",
        "Job shop/seed (container seed)",
    ], "one entry however the image is written"
    assert found.keep["busybox:1.36"] == ["Pod default/debug-7f9c (ephemeral container debugger)"]
    assert set(found.always) == {
        "ghcr.io/acme/report:latest@sha256:" + "2" * 64,
        "envoyproxy/envoy:v1.30.1",
        "busybox",
    }
    assert list(found.mutable()) == [i for i in found.keep if "@" not in i]
    (problem,) = found.invalid
    assert problem.startswith("StatefulSet monitoring/store (container broken): ")


def test_from_manifests_writes_a_list_that_parses_and_warns_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "preload.yaml"
    paths = [
        str(CORPUS / "k8s"),
        str(CORPUS / "helm-output.yaml"),
        str(CORPUS / "kubectl-get.json"),
    ]
    assert main(["from-manifests", *paths, "--output-file", str(out)]) == 0
    config = configs.load(out)
    assert [e.written for e in config.images][:2] == [
        "registry.example.com:5000/shop/migrate:2024.06",
        "registry.example.com:5000/shop/web:1.8.2@" + D1,
    ]
    assert "# CronJob shop/nightly-report (container uploader), Deployment" in out.read_text()
    err = capsys.readouterr().err
    assert (
        "warning: quay.io/prometheus/node-exporter:v1.8.1 is kept by a mutable tag "
        "(IfNotPresent)" in err
    )
    assert "DaemonSet monitoring/node-exporter (container node-exporter)" in err
    assert "note: busybox is left out: pulled on every start (imagePullPolicy Always)" in err
    assert "warning: left out, not an image reference: StatefulSet monitoring/store" in err


def test_bad_yaml_in_a_manifest_is_named_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Pod\nspec:\n  containers: [\n")
    assert main(["from-manifests", str(bad)]) == 2
    assert f"{bad}:4: invalid YAML" in capsys.readouterr().err


def test_suggest_pins_what_runs_most_used_first() -> None:
    web = Running(("r.io/web:1",), (f"r.io/web@{D1}",))
    db = Running(("r.io/db:15",), ("r.io/db@sha256:" + "3" * 64,))
    untagged = Running((), ("r.io/job@sha256:" + "4" * 64,))
    nameless = Running((), ())
    model = Running(("r.io/model:7",), ("r.io/model@sha256:" + "5" * 64,), volume=True)
    assert suggest([db, web, web, untagged, nameless, web, model, model]) == [
        (f"r.io/web:1@{D1}", 3, 0),
        ("r.io/model:7@sha256:" + "5" * 64, 0, 2),
        ("r.io/db:15@sha256:" + "3" * 64, 1, 0),
        ("r.io/job@sha256:" + "4" * 64, 1, 0),
    ]


def test_image_volumes_are_kept_with_the_pull_policy_kubernetes_defaults_them_to() -> None:
    """KEP-4639: kubelet pulls `volumes[].image.reference` as a container's image, its
    `pullPolicy` defaulted by the same rule."""
    pod = {
        "kind": "Deployment",
        "metadata": {"name": "serve", "namespace": "ml"},
        "spec": {
            "template": {
                "spec": {
                    "containers": [{"name": "server", "image": "r.io/ml/server:3"}],
                    "volumes": [
                        {"name": "weights", "image": {"reference": f"r.io/ml/llama:8b@{D1}"}},
                        {"name": "latest", "image": {"reference": "r.io/ml/tokenizer"}},
                        {
                            "name": "never",
                            "image": {"reference": "r.io/ml/cfg:1", "pullPolicy": "Never"},
                        },
                        {"name": "data", "emptyDir": {}},
                        {"name": "broken", "image": {"reference": 7}},
                    ],
                }
            }
        },
    }

    found = from_manifests([pod])

    assert found.keep == {
        "r.io/ml/server:3": ["Deployment ml/serve (container server)"],
        f"r.io/ml/llama:8b@{D1}": ["Deployment ml/serve (image volume weights)"],
        "r.io/ml/cfg:1": ["Deployment ml/serve (image volume never)"],
    }
    assert found.policies["r.io/ml/cfg:1"] == {"Never"}, "said as it is, not as IfNotPresent"
    assert found.policies["r.io/ml/server:3"] == {"IfNotPresent"}
    assert found.always == {"r.io/ml/tokenizer": ["Deployment ml/serve (image volume latest)"]}


def test_names_with_line_breaks_cannot_add_lines_to_a_generated_list() -> None:
    hostile = (
        "web\n  - evil.example.com/miner:1\nregistries:\n  evil.example.com:\n    insecure: true"
    )
    pod = {
        "kind": "Pod",
        "metadata": {"name": hostile, "namespace": "shop\u2028x"},
        "spec": {"containers": [{"name": "c\r\n- x", "image": "nginx:1.25.3"}]},
    }
    found = generate.from_manifests([pod])
    text = generate.render_list(
        ((image, ", ".join(users)) for image, users in found.keep.items()), "header\x1b[2J"
    )
    config = configs.parse(text, "generated.yaml")
    assert [e.written for e in config.images] == ["nginx:1.25.3"]
    assert config.registries == {}
    assert len(text.splitlines()) == 3, text
    assert "\\x0a  - evil.example.com/miner:1" in text and "\x1b" not in text


def test_suggest_leaves_out_names_that_are_not_references() -> None:
    running = [
        generate.Running(("nginx:1\n- evil:1",), ()),
        generate.Running(("busybox:1.36",), ()),
    ]
    assert generate.suggest(running) == [("busybox:1.36", 1, 0)]


def test_yaml_aliases_that_expand_without_bound_are_refused_at_once() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    bomb = "\n".join([*lines, "kind: List", "items: [*a9]"]) + "\n"
    assert len(bomb) < 1024
    with pytest.raises(ConfigError, match=r"YAML aliases expand .* refused") as caught:
        yamlsafe.documents(bomb, "bomb.yaml")
    assert str(caught.value).startswith("bomb.yaml:1: ")
    with pytest.raises(ConfigError, match="YAML aliases expand"):
        configs.parse(bomb.replace("kind: List\nitems: [*a9]", "images: *a9"), "list.yaml")
    with pytest.raises(ConfigError, match="refers to itself"):
        yamlsafe.documents("a: &a [*a]\n", "loop.yaml")
    # Aliases within reason (shared env blocks, as Helm output has) are kept.
    shared = "env: &env [{name: A, value: '1'}]\nx: *env\ny: *env\n"
    assert yamlsafe.documents(shared, "ok.yaml") == [
        {
            "env": [{"name": "A", "value": "1"}],
            "x": [{"name": "A", "value": "1"}],
            "y": [{"name": "A", "value": "1"}],
        }
    ]


def test_a_stream_of_json_documents_is_read_as_many_tools_emit_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`kubectl get pods -o json | jq -c '.items[]'`: objects back to back, which no YAML parser
    takes; a broken one is named with its line; JSON and YAML flow documents still parse."""
    pod = '{"kind": "Pod", "metadata": {"name": "%s"}, "spec": {"containers": [{"name": "c", "image": "r.io/a/%s:1"}]}}'  # noqa: E501
    stream = f"{pod % ('a', 'a')}\n{pod % ('b', 'b')}{pod % ('c', 'c')}\n"

    found = from_manifests(yamlsafe.documents(stream, "pods.json"))

    assert list(found.keep) == ["r.io/a/a:1", "r.io/a/b:1", "r.io/a/c:1"]
    assert yamlsafe.documents('{"kind": "Pod"}', "one.json") == [{"kind": "Pod"}]
    assert yamlsafe.documents("{kind: Pod}", "flow.yaml") == [{"kind": "Pod"}]
    with pytest.raises(ConfigError, match=r"pods.json:3: invalid JSON in a stream"):
        yamlsafe.documents(f"{pod % ('a', 'a')}\n\n" + '{"kind": Pod}\n', "pods.json")
