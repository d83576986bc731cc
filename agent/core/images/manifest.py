"""OCI and Docker manifest documents: media types, parsing, digests. Pure."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from agent.core.images.platform import Platform, best_match, can_run, describe, normalize
from agent.core.images.reference import Reference

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
# Without every one of these in Accept, Docker-style registries serve schema1 or an
# amd64-only rewrite (opencontainers/distribution-spec spec.md, "Pulling manifests": Accept).
ACCEPT = ", ".join((*INDEX_TYPES, *MANIFEST_TYPES))
# distribution-spec: registries SHOULD accept manifests up to 4 MiB; refuse bigger bodies.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024


class ManifestError(ValueError):
    """A document that is not a manifest we understand."""


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None


@dataclass(frozen=True)
class Manifest:
    """An image index (`manifests`) or a single-platform image manifest (`config`)."""

    digest: str
    media_type: str
    manifests: tuple[Descriptor, ...] = ()
    config: Descriptor | None = None
    layers: tuple[Descriptor, ...] = ()
    size: int = 0
    """Bytes of the document itself."""
    body: bytes = field(default=b"", repr=False, compare=False)
    """The document as the registry sent it (its digest verified): what a pull would fetch."""

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    @property
    def platforms(self) -> tuple[Platform, ...]:
        return tuple(m.platform for m in self.manifests if m.platform is not None)


@dataclass(frozen=True)
class Resolution:
    """What a reference names in its registry, and the manifest a platform would run."""

    reference: Reference
    """The reference pinned to `digest`."""
    digest: str
    """The top-level digest: the index for a multi-arch image."""
    media_type: str
    platform: Platform | None = None
    """The platform the manifest was chosen for; None when only the digest was asked for."""
    offered: tuple[Platform, ...] = ()
    """The platforms the content has manifests for."""
    chosen: Descriptor | None = None
    """The manifest `platform` would run, if any."""
    blobs: tuple[Descriptor, ...] = ()
    """The config and layers of the chosen manifest, when its document was read (single-
    platform content): what pulling it downloads."""
    documents: tuple[tuple[str, bytes], ...] = field(default=(), repr=False, compare=False)
    """(digest, body) of each verified document read to resolve it (manifests, config): what
    the pull would fetch again, unless they are put in the runtime's store first."""

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    def refusal(self) -> str | None:
        """Why this content must not go on a `platform` node, or None: never preload what the
        node cannot run."""
        if self.platform is None or self.chosen is not None:
            return None
        if self.is_index:
            return (
                f"no {self.platform} manifest in {self.reference} (it has {describe(self.offered)})"
            )
        return (
            f"{self.reference} is a single-platform {describe(self.offered)} image; "
            f"this node is {self.platform}: refused before pulling"
        )


def sha256_digest(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def verify(body: bytes, expected: str) -> None:
    """Raise ManifestError unless `body` hashes to `expected` (sha256 or sha512)."""
    algorithm, _, hex_part = expected.partition(":")
    if algorithm not in ("sha256", "sha512"):
        raise ManifestError(f"cannot verify a {algorithm!r} digest")
    actual = hashlib.new(algorithm, body).hexdigest()
    if actual != hex_part:
        raise ManifestError(f"content digest {algorithm}:{actual} does not match {expected}")


def parse_manifest(body: bytes, digest: str, header_type: str | None = None) -> Manifest:
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise ManifestError(f"manifest is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ManifestError("manifest is not a JSON object")
    media_type = document.get("mediaType") or (header_type or "").split(";")[0].strip()
    if not media_type and "manifests" in document:
        media_type = OCI_INDEX
    if not media_type and "config" in document:
        media_type = OCI_MANIFEST
    if media_type in INDEX_TYPES:
        found = tuple(_descriptors(document, "manifests"))
        return Manifest(digest, media_type, manifests=found, size=len(body), body=body)
    if media_type in MANIFEST_TYPES:
        configs = _descriptors({"c": [document.get("config")]}, "c")
        layers = tuple(_descriptors(document, "layers"))
        return Manifest(
            digest, media_type, config=configs[0], layers=layers, size=len(body), body=body
        )
    raise ManifestError(f"unsupported manifest media type {media_type or 'unknown'!r}")


def _descriptors(document: dict[str, object], key: str) -> list[Descriptor]:
    items = document.get(key)
    if not isinstance(items, list):
        raise ManifestError(f"manifest has no {key!r} list")
    result = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("digest"), str):
            raise ManifestError(f"an entry of {key!r} has no digest")
        result.append(
            Descriptor(
                media_type=str(item.get("mediaType", "")),
                digest=item["digest"],
                size=int(item.get("size", 0)),
                platform=_platform(item.get("platform")),
            )
        )
    return result


def _platform(value: object) -> Platform | None:
    if not isinstance(value, dict):
        return None
    os, arch = value.get("os"), value.get("architecture")
    if not isinstance(os, str) or not isinstance(arch, str):
        return None
    return normalize(os, arch, str(value.get("variant", "")))


def config_platform(body: bytes) -> Platform:
    """The platform an image config declares (`os`, `architecture`, `variant`)."""
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise ManifestError(f"image config is not JSON: {exc}") from exc
    platform = _platform(document)
    if platform is None:
        raise ManifestError("image config names no os/architecture")
    return platform


def choose(
    ref: Reference, document: Manifest, platform: Platform, declared: Platform | None = None
) -> Resolution:
    """The manifest `platform` would run from `document` (containerd's platform matching).
    A single-platform manifest says its platform only in its image config: `declared`."""
    pinned = ref.pinned(document.digest)
    if document.is_index:
        offered = document.platforms
        candidates = ((d.platform, d) for d in document.manifests if d.platform)
        chosen = best_match(platform, candidates)
    else:
        assert declared is not None, "a single-platform manifest needs its config's platform"
        offered = (declared,)
        this = Descriptor(document.media_type, document.digest, document.size, declared)
        chosen = this if can_run(platform, declared) else None
    blobs = manifest_blobs(document)
    return Resolution(
        pinned, document.digest, document.media_type, platform, offered, chosen, blobs
    )


def manifest_blobs(document: Manifest) -> tuple[Descriptor, ...]:
    """What pulling a single-platform manifest downloads: its config and layers."""
    if document.config is None:
        return ()
    return (document.config, *document.layers)
