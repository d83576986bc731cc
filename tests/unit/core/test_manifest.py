from __future__ import annotations

import json

import pytest

from agent.core.images.manifest import (
    DOCKER_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    ManifestError,
    Resolution,
    config_platform,
    parse_manifest,
    sha256_digest,
    verify,
)
from agent.core.images.platform import Platform
from agent.core.images.reference import parse

D = "sha256:" + "d" * 64


def test_index_lists_platforms_normalized() -> None:
    body = json.dumps(
        {
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": D,
                    "size": 5,
                    "platform": {"os": "linux", "architecture": "aarch64"},
                },
                {"mediaType": OCI_MANIFEST, "digest": D, "size": 5},
            ],
        }
    ).encode()
    index = parse_manifest(body, sha256_digest(body))
    assert index.is_index
    assert index.platforms == (Platform("linux", "arm64"),)


def test_media_type_from_header_when_the_body_has_none() -> None:
    body = json.dumps({"manifests": []}).encode()
    assert parse_manifest(body, D, f"{DOCKER_LIST}; charset=utf-8").media_type == DOCKER_LIST


def test_image_manifest_has_its_config() -> None:
    body = json.dumps(
        {"mediaType": OCI_MANIFEST, "config": {"digest": D, "size": 2}, "layers": []}
    ).encode()
    manifest = parse_manifest(body, D)
    assert not manifest.is_index and manifest.config is not None and manifest.config.digest == D


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not JSON"),
        (b"[]", "not a JSON object"),
        (
            json.dumps(
                {"mediaType": "application/vnd.docker.distribution.manifest.v1+json"}
            ).encode(),
            "unsupported",
        ),
        (json.dumps({"mediaType": OCI_INDEX, "manifests": [{"size": 1}]}).encode(), "no digest"),
    ],
)
def test_bad_documents(body: bytes, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse_manifest(body, D)


def test_verify_rejects_content_that_does_not_match() -> None:
    verify(b"abc", sha256_digest(b"abc"))
    with pytest.raises(ManifestError, match="does not match"):
        verify(b"abd", sha256_digest(b"abc"))


def test_config_platform() -> None:
    assert config_platform(b'{"os":"linux","architecture":"arm","variant":"v6"}') == Platform(
        "linux", "arm", "v6"
    )
    with pytest.raises(ManifestError, match="no os/architecture"):
        config_platform(b"{}")


def test_refusal_messages() -> None:
    amd64, arm64 = Platform("linux", "amd64"), Platform("linux", "arm64")
    ref = parse(f"r.io/a/b:1@{D}")
    chosen = Descriptor(OCI_MANIFEST, D, 1, arm64)
    assert Resolution(ref, D, OCI_INDEX, arm64, (arm64,), chosen).refusal() is None
    assert Resolution(ref, D, OCI_INDEX, None, (arm64,), None).refusal() is None
    index = Resolution(ref, D, OCI_INDEX, amd64, (arm64,), None)
    assert index.refusal() == f"no linux/amd64 manifest in r.io/a/b:1@{D} (it has linux/arm64)"
    single = Resolution(ref, D, OCI_MANIFEST, amd64, (arm64,), None).refusal()
    assert single is not None and "single-platform linux/arm64 image" in single
    assert "refused before pulling" in single
