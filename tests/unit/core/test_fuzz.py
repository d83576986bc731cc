"""Property-based fuzzing of every parser that reads outside input: the preload list, pull
secrets, hosts.toml, image references and manifests. Whatever the input, the only exceptions
that may come out are the project's own (a clear message, never a traceback).

The budget is FUZZ_EXAMPLES per property (default 300; `FUZZ_EXAMPLES=20000 make unit` for a
long run)."""

from __future__ import annotations

import contextlib
import json
import os
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.adapters.registry.hosts import parse_hosts_toml
from agent.core.errors import AgentError
from agent.core.images import manifest as manifests
from agent.core.images import reference as references
from agent.core.images.manifest import ManifestError
from agent.core.lists import config as configs
from agent.core.lists import credentials, yamlsafe
from agent.preload import generate

BUDGET = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# JSON-like values, nested: what a hostile or broken producer can put anywhere.
scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)

# YAML scalars that PyYAML builds into surprising types, and tags that force construction.
yaml_atoms = st.sampled_from(
    [
        "2024-02-30",
        "2024-02-29",
        ".nan",
        "-.inf",
        "1e400",
        "0x1F",
        "0o17",
        "~",
        "null",
        "yes",
        "on",
        "!!int abc",
        "!!float x",
        "!!binary '@@'",
        "!!timestamp nope",
        "!!set {a}",
        "!!python/object:os.system ls",
        "&a [*a]",
        "*undefined",
        "'quoted'",
        '"\\x00"',
        "|\n  x",
        "[",
        "{",
        "- a",
        "? a",
        "nginx",
        "nginx:1.25",
        "r.io/a@sha256:" + "a" * 64,
        "5m",
        "0s",
    ]
)
keys = st.sampled_from(
    [
        "images",
        "registries",
        "credentials",
        "concurrency",
        "resync",
        "pin",
        "image",
        "platforms",
        "insecure",
        "ca",
        "mirrors",
        "bogus",
    ]
)


@st.composite
def yaml_documents(draw: st.DrawFn) -> str:
    """Mostly well-formed YAML of the list's shape, with hostile values in every slot; often
    with a valid `images:` first, so validation gets as far as the other keys."""
    lines = ["images:", "  - nginx"] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(1, 6))):
        key = draw(keys)
        indent = " " * draw(st.sampled_from([0, 0, 0, 2, 4]))
        if draw(st.booleans()):
            lines.append(f"{indent}{key}: {draw(yaml_atoms)}")
        elif draw(st.booleans()):
            lines.append(f"{indent}{key}:")
            for _ in range(draw(st.integers(0, 3))):
                lines.append(f"{indent}  - {draw(yaml_atoms)}")
        else:
            lines.append(f"{indent}{key}:")
            lines.append(f"{indent}  {draw(yaml_atoms)}:")
            for _ in range(draw(st.integers(0, 3))):
                lines.append(f"{indent}    {draw(keys)}: {draw(yaml_atoms)}")
    return "\n".join(lines) + "\n"


def only_our_errors(parse, *args: object) -> None:
    with contextlib.suppress(AgentError, ManifestError):
        parse(*args)


@BUDGET
@given(yaml_documents())
def test_preload_list_shaped_documents(text: str) -> None:
    only_our_errors(configs.parse, text, "fuzz.yaml")


@BUDGET
@given(st.text(max_size=300))
def test_preload_list_arbitrary_text(text: str) -> None:
    only_our_errors(configs.parse, text, "fuzz.yaml")


@BUDGET
@given(json_values)
def test_preload_list_from_any_json_document(value: object) -> None:
    # JSON is YAML: a list rendered by a tool that does not know the schema.
    only_our_errors(configs.parse, json.dumps({"images": value, "resync": value}), "fuzz.yaml")


# The fields a dockerconfigjson entry has, each holding anything.
secret_fields = json_values | st.sampled_from(
    ["dXNlcjpwYXNz", "bm9jb2xvbg==", "!!", "", "\x80", "/w=="]
)
secret_entries = st.fixed_dictionaries(
    {},
    optional={k: secret_fields for k in ("auth", "username", "password", "identitytoken")},
)


@BUDGET
@given(st.dictionaries(st.text(max_size=30), secret_entries | json_values, max_size=4))
def test_pull_secret_entries_of_any_shape(auths: dict[str, object]) -> None:
    try:
        pairs = credentials.parse(json.dumps({"auths": auths}), "secret.json")
    except AgentError:
        return
    # What is accepted is usable: CRI's AuthConfig and HTTP headers take strings only.
    for _, found in pairs:
        assert all(
            isinstance(v, str) for v in (found.username, found.password, found.identity_token)
        )


@BUDGET
@given(json_values | st.text(max_size=200).map(json.dumps))
def test_pull_secret_documents_of_any_shape(value: object) -> None:
    text = value if isinstance(value, str) else json.dumps(value)
    only_our_errors(credentials.parse, text, "secret.json")


toml_values = st.sampled_from(
    [
        '"http://m:5000"',
        '"ftp://x"',
        '"http://[::1"',
        '"http://h:port"',
        '"h?x=1"',
        "5",
        "true",
        '"yes"',
        '["pull", "resolve"]',
        '["pull"]',
        '"resolve"',
        "[1, 2]",
        "{ a = 1 }",
        '["ca.pem", 3]',
        '"ca.pem"',
        "1979-05-27",
        "nan",
        "inf",
    ]
)


@st.composite
def hosts_documents(draw: st.DrawFn) -> str:
    lines = []
    if draw(st.booleans()):
        lines.append(f"server = {draw(toml_values)}")
    for key in draw(
        st.lists(st.sampled_from(["ca", "skip_verify", "capabilities"]), max_size=3, unique=True)
    ):
        lines.append(f"{key} = {draw(toml_values)}")
    for index in range(draw(st.integers(0, 3))):
        url = draw(
            st.sampled_from(["http://m:5000", "https://x", "ftp://y", "http://[::1", "", "h"])
        )
        lines.append(f'[host."{url}{index}"]')
        for key in draw(
            st.lists(
                st.sampled_from(["ca", "skip_verify", "capabilities"]), max_size=3, unique=True
            )
        ):
            lines.append(f"  {key} = {draw(toml_values)}")
    if draw(st.booleans()):
        lines.append(f"host = {draw(toml_values)}")
    return "\n".join(lines) + "\n"


@BUDGET
@given(hosts_documents() | st.text(max_size=200))
def test_hosts_toml_of_any_shape(text: str) -> None:
    only_our_errors(
        parse_hosts_toml, text, "/etc/containerd/certs.d/r.io/hosts.toml", "https://r.io"
    )


reference_alphabet = string.ascii_letters + string.digits + ":/@._-" + "üé١ \t\x00"


@BUDGET
@given(st.text(alphabet=reference_alphabet, max_size=120) | st.text(max_size=60))
def test_image_references(text: str) -> None:
    try:
        parsed = references.parse(text)
    except AgentError:
        return
    # What parses is ASCII and survives a round trip.
    assert str(parsed).isascii()
    assert references.parse(str(parsed)) == parsed


@BUDGET
@given(st.binary(max_size=400) | json_values.map(lambda v: json.dumps(v).encode()))
def test_manifest_bodies(body: bytes) -> None:
    digest = manifests.sha256_digest(body)
    for media_type in (None, "application/vnd.oci.image.index.v1+json", "text/html"):
        only_our_errors(manifests.parse_manifest, body, digest, media_type)
    only_our_errors(manifests.config_platform, body)


@BUDGET
@given(
    st.fixed_dictionaries(
        {
            "schemaVersion": scalars,
            "mediaType": st.sampled_from(
                [
                    "application/vnd.oci.image.index.v1+json",
                    "application/vnd.oci.image.manifest.v1+json",
                    5,
                ]
            ),
            "manifests": json_values,
            "config": json_values,
            "layers": json_values,
        }
    )
)
def test_manifest_shaped_documents(document: dict[str, object]) -> None:
    body = json.dumps(document).encode()
    only_our_errors(manifests.parse_manifest, body, manifests.sha256_digest(body), None)


# Kubernetes objects of any shape: the keys the manifest reader looks for, holding anything.
k8s_keys = st.sampled_from(
    ["kind", "items", "metadata", "name", "namespace", "spec", "template", "jobTemplate",
     "containers", "initContainers", "ephemeralContainers", "image", "imagePullPolicy"]
)  # fmt: skip
k8s_values = st.recursive(
    scalars | st.sampled_from(["Pod", "List", "Deployment", "CronJob", "nginx:1", "Always"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(k8s_keys, inner, max_size=5),
    max_leaves=30,
)


@BUDGET
@given(st.lists(k8s_values, max_size=4))
def test_manifests_of_any_shape(documents: list[object]) -> None:
    """The manifest reader takes any documents: what it writes is a list that parses."""
    found = generate.from_manifests(documents)
    text = generate.render_list(((i, ", ".join(u)) for i, u in found.keep.items()), "fuzz")
    configs.parse(text, "generated.yaml")


@BUDGET
@given(st.text(max_size=300))
def test_manifest_streams_of_any_text(text: str) -> None:
    only_our_errors(lambda: generate.from_manifests(yamlsafe.documents(text, "fuzz.yaml")))
