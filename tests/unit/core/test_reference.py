from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.core.errors import InvalidReference
from agent.core.images.reference import DOCKER_HUB_API_HOST, Reference, _parse_step_by_step, parse

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("written", "normalized"),
    [
        ("nginx", "docker.io/library/nginx:latest"),
        ("nginx:1.25.3", "docker.io/library/nginx:1.25.3"),
        ("library/nginx:1", "docker.io/library/nginx:1"),
        ("docker.io/nginx:1", "docker.io/library/nginx:1"),
        ("index.docker.io/acme/app:1", "docker.io/acme/app:1"),
        ("acme/app", "docker.io/acme/app:latest"),
        ("ghcr.io/acme/api:2.4.1@" + DIGEST, "ghcr.io/acme/api:2.4.1@" + DIGEST),
        ("quay.io/acme/worker@" + DIGEST, "quay.io/acme/worker@" + DIGEST),
        ("localhost/app:1", "localhost/app:1"),
        ("localhost:5000/app", "localhost:5000/app:latest"),
        ("127.0.0.1:5000/a/b/c:v1.0-rc_1", "127.0.0.1:5000/a/b/c:v1.0-rc_1"),
        ("registry.example.com/tools/debug:3", "registry.example.com/tools/debug:3"),
        ("a/b__c/d-e.f:1", "docker.io/a/b__c/d-e.f:1"),
    ],
)
def test_parse_normalizes_like_containerd(written: str, normalized: str) -> None:
    assert str(parse(written)) == normalized


def test_docker_hub_names_use_the_api_host() -> None:
    ref = parse("nginx:1")
    assert ref.domain == "docker.io"
    assert ref.api_host == DOCKER_HUB_API_HOST
    assert parse("ghcr.io/a/b").api_host == "ghcr.io"


def test_digest_only_reference_has_no_tag() -> None:
    ref = parse("quay.io/acme/worker@" + DIGEST)
    assert ref.tag is None and ref.digest == DIGEST
    assert ref.by_digest() == "quay.io/acme/worker@" + DIGEST
    with pytest.raises(ValueError, match="no tag"):
        _ = ref.tagged


@pytest.mark.parametrize(
    ("written", "reason"),
    [
        ("", "empty"),
        (" nginx", "whitespace"),
        ("nginx@", "digest"),
        ("nginx@sha256:abc", "64"),
        ("nginx@md5:" + "a" * 32, "sha256"),
        ("nginx@sha256:" + "A" * 64, "lower-case hex"),
        ("nginx:bad tag", "tag"),
        ("nginx:" + "a" * 129, "tag"),
        ("foo/Bar:1", "lower-case"),
        ("ghcr.io/a//b", "component ''"),
        ("ghcr.io/-a/b", "component '-a'"),
        ("bad_host.io:x/a", "registry host"),
        ("ghcr.io/", "missing repository"),
        ("ghcr.io/" + "a" * 260, "255"),
    ],
)
def test_invalid_references_are_named_with_the_reason(written: str, reason: str) -> None:
    with pytest.raises(InvalidReference) as info:
        parse(written)
    assert info.value.reference == written
    assert reason in str(info.value)


# No "." here: a first component with a dot is a registry host by Docker's rule.
_component = st.from_regex(r"[a-z0-9]{1,5}(?:(?:_|__|-+)[a-z0-9]{1,5}){0,2}", fullmatch=True)
_tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)
_digest = st.from_regex(r"[0-9a-f]{64}", fullmatch=True).map(lambda h: f"sha256:{h}")
_domain = st.sampled_from(["", "ghcr.io/", "localhost:5000/", "127.0.0.1:5000/", "docker.io/"])


@given(_domain, st.lists(_component, min_size=1, max_size=3), st.none() | _tag, st.none() | _digest)
def test_normalized_form_is_a_fixed_point(
    domain: str, path: list[str], tag: str | None, digest: str | None
) -> None:
    text = domain + "/".join(path) + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    ref = parse(text)
    assert parse(str(ref)) == ref
    assert ref.digest == digest
    assert ref.tag == (tag or (None if digest else "latest"))
    assert str(ref).endswith(
        "/".join(path) + (f":{ref.tag}" if ref.tag else "") + (f"@{digest}" if digest else "")
    )


_reference_shaped = st.from_regex(
    r"(?:[a-zA-Z0-9.-]{1,12}(?::[0-9]{1,5})?/)?[a-z0-9._/-]{1,20}(?::[A-Za-z0-9_.-]{1,10})?"
    r"(?:@sha256:[0-9a-f]{64})?",
    fullmatch=True,
)


@given(_reference_shaped | st.text(alphabet="ab.:/@_-A1", max_size=40))
def test_the_one_match_path_agrees_with_the_step_by_step_parse(text: str) -> None:
    """parse() takes a shortcut for well-formed references; it must accept, reject and
    normalize exactly as the full parse does."""
    try:
        expected: Reference | str = _parse_step_by_step(text)
    except InvalidReference as exc:
        expected = str(exc)
    try:
        got: Reference | str = parse(text)
    except InvalidReference as exc:
        got = str(exc)
    assert got == expected
    if isinstance(got, Reference):
        assert isinstance(expected, Reference)
        assert (got.name, hash(got)) == (expected.name, hash(expected))


@pytest.mark.parametrize(
    "written",
    [
        "ghcr.io/acme/api:2.4.1@" + DIGEST,
        "127.0.0.1:5000/a/b:1",
        "localhost:5000/app",
        "docker.io/nginx:1",
        "index.docker.io/acme/app:1",
        "Ghcr.io/a/b:1",
        "ghcr.io/" + "a" * 247,
    ],
)
def test_well_formed_references_normalize_the_same_either_way(written: str) -> None:
    assert parse(written) == _parse_step_by_step(written)
    assert str(parse(written)) == str(_parse_step_by_step(written))
