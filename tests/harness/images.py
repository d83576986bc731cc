"""Synthesized OCI images (random layers, a manifest per platform, an index), pushed for real."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass, field

from agent.core.images import manifest as mt
from agent.core.images.platform import detect
from tests.harness.registry import Registry

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class PushedImage:
    """What a test needs to know about an image it pushed."""

    registry: str
    repo: str
    tag: str | None
    digest: str
    """The top-level digest: the index for a multi-arch image."""
    manifests: dict[str, str] = field(default_factory=dict)
    """platform ("linux/arm64") → per-platform manifest digest."""
    configs: dict[str, str] = field(default_factory=dict)
    """platform → config digest, which is the image id containerd reports."""
    layers: dict[str, str] = field(default_factory=dict)
    """platform → layer blob digest."""
    size: int = 0

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repo}"

    @property
    def tagged(self) -> str:
        return f"{self.name}:{self.tag}"

    def by_digest(self, digest: str | None = None) -> str:
        return f"{self.name}@{digest or self.digest}"

    def pinned(self) -> str:
        return f"{self.tagged}@{self.digest}"


BUSYBOX = "/bin/busybox"  # Debian's busybox-static: one static binary that runs anywhere


def _busybox_layer(filler_bytes: int = 0) -> tuple[bytes, str]:
    """A layer holding /bin/busybox and /bin/sh, for images that must really run, and
    `filler_bytes` of random data (the weight of a real application image)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        tar.add(BUSYBOX, arcname="bin/busybox")
        link = tarfile.TarInfo("bin/sh")
        link.type, link.linkname = tarfile.SYMTYPE, "busybox"
        tar.addfile(link)
        if filler_bytes:
            filler = tarfile.TarInfo("filler.bin")
            filler.size = filler_bytes
            tar.addfile(filler, io.BytesIO(os.urandom(filler_bytes)))
    uncompressed = raw.getvalue()
    return gzip.compress(uncompressed, compresslevel=1, mtime=0), sha256(uncompressed)


def _push_single(
    registry: Registry,
    repo: str,
    tag: str | None,
    platform: str,
    layer: tuple[bytes, str] | list[tuple[bytes, str]],
    image_config: dict[str, object],
) -> tuple[bytes, str, str, str]:
    """Push the layer(s), the config and manifest: (manifest body, manifest, config and first
    layer digest)."""
    os_name, arch, *variant = platform.split("/")
    layers = layer if isinstance(layer, list) else [layer]
    config_doc: dict[str, object] = {
        "architecture": arch,
        "os": os_name,
        "rootfs": {"type": "layers", "diff_ids": [diff_id for _, diff_id in layers]},
        # A nonce label: every push is new content, even with equal layers.
        "config": {**image_config, "Labels": {"prepull.test/nonce": os.urandom(8).hex()}},
    }
    if variant:
        config_doc["variant"] = variant[0]
    config = json.dumps(config_doc).encode()
    for blob, _ in layers:
        registry.push_blob(repo, blob, sha256(blob))
    registry.push_blob(repo, config, sha256(config))
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
            "layers": [
                {"mediaType": OCI_LAYER_GZIP, "digest": sha256(blob), "size": len(blob)}
                for blob, _ in layers
            ],
        }
    ).encode()
    digest = registry.push_manifest(repo, tag or sha256(manifest), manifest, mt.OCI_MANIFEST)
    assert digest == sha256(manifest), "the registry changed the manifest"
    return manifest, digest, sha256(config), sha256(layers[0][0])


def push_runnable(
    registry: Registry, repo: str, tag: str, command: list[str], filler_bytes: int = 0
) -> PushedImage:
    """A single-platform image for this machine whose entrypoint really runs (busybox)."""
    platform = str(detect())
    layer = _busybox_layer(filler_bytes)
    _, digest, config, layer_digest = _push_single(
        registry, repo, tag, platform, layer, {"Entrypoint": command}
    )
    return PushedImage(
        registry.host,
        repo,
        tag,
        digest,
        {platform: digest},
        {platform: config},
        {platform: layer_digest},
    )


def _layer(payload: bytes, label: str) -> tuple[bytes, str]:
    """A gzipped tar holding one file; returns (blob, diff_id of the uncompressed tar)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo(f"prepull-test/{label}.bin")
        info.size = len(payload)
        info.mtime = 0
        tar.addfile(info, io.BytesIO(payload))
    uncompressed = raw.getvalue()
    # Level 1: the payload is random, no level compresses it, and 9 takes seconds per 100 MB.
    return gzip.compress(uncompressed, compresslevel=1, mtime=0), sha256(uncompressed)


def payload(size: int, unpack_ratio: int = 1) -> bytes:
    """`size` bytes that gzip packs to about 1/`unpack_ratio` of it: random 64 KiB runs, each
    followed by zeros (a real layer's mix of binaries and sparse or text files)."""
    run = 64 * 1024
    chunks: list[bytes] = []
    while sum(len(chunk) for chunk in chunks) < size:
        chunks += [os.urandom(run), bytes((unpack_ratio - 1) * run)]
    return b"".join(chunks)[:size]


def push_platform_manifest(
    registry: Registry,
    repo: str,
    platform: str,
    layer_bytes: int = 4096,
    tag: str | None = None,
    unpack_ratio: int = 1,
) -> tuple[bytes, str, str, str]:
    """Push one single-platform image: (manifest body, manifest digest, config and layer digest)."""
    data = payload(layer_bytes, unpack_ratio) if unpack_ratio > 1 else os.urandom(layer_bytes)
    layer = _layer(data, platform.split("/")[1])
    return _push_single(registry, repo, tag, platform, layer, {})


def random_layers(count: int, layer_bytes: int) -> list[tuple[bytes, str]]:
    """`count` gzipped tar layers of one random (incompressible) file of `layer_bytes` each:
    (blob, diff_id)."""
    return [_layer(os.urandom(layer_bytes), f"layer{n}") for n in range(count)]


def push_layered(
    registry: Registry, repo: str, tag: str, platform: str, blobs: list[tuple[bytes, str]]
) -> PushedImage:
    """A single-platform image of the layers `blobs` (random_layers)."""
    _, digest, config, first = _push_single(registry, repo, tag, platform, blobs, {})
    return PushedImage(
        registry.host, repo, tag, digest, {platform: digest}, {platform: config}, {platform: first}
    )


def push_image(
    registry: Registry,
    repo: str,
    tag: str | None,
    platforms: tuple[str, ...] = ("linux/amd64", "linux/arm64"),
    layer_bytes: int = 4096,
    unpack_ratio: int = 1,
) -> PushedImage:
    """Push a multi-arch image (an OCI index over one manifest per platform) with fresh content:
    a layer of `layer_bytes` unpacked, gzipped to about 1/`unpack_ratio` of that."""
    entries, manifests, configs, layers = [], {}, {}, {}
    for platform in platforms:
        body, digest, config, layer = push_platform_manifest(
            registry, repo, platform, layer_bytes, unpack_ratio=unpack_ratio
        )
        layers[platform] = layer
        os_name, arch, *variant = platform.split("/")
        described: dict[str, object] = {"architecture": arch, "os": os_name}
        if variant:
            described["variant"] = variant[0]
        entries.append(
            {
                "mediaType": mt.OCI_MANIFEST,
                "digest": digest,
                "size": len(body),
                "platform": described,
            }
        )
        manifests[platform] = digest
        configs[platform] = config
    index = json.dumps(
        {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries}
    ).encode()
    digest = registry.push_manifest(repo, tag or sha256(index), index, mt.OCI_INDEX)
    return PushedImage(registry.host, repo, tag, digest, manifests, configs, layers)


def push_single(
    registry: Registry, repo: str, tag: str | None, platform: str, layer_bytes: int = 4096
) -> PushedImage:
    """Push a single-platform image (no index) under `tag`."""
    _, digest, config, layer = push_platform_manifest(registry, repo, platform, layer_bytes, tag)
    return PushedImage(
        registry.host, repo, tag, digest, {platform: digest}, {platform: config}, {platform: layer}
    )
