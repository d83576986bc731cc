"""Nodes that already hold many images, fast: one OCI archive with N distinct images (own
config and manifest, one shared one-file layer) imported by `ctr images import`, which writes
the records containerd and CRI see after a pull, `name:tag` and `name@digest` alike. Pushing and
pulling 10 000 images through a registry would take the bench an hour."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from agent import wiring
from agent.core.images import manifest as media_types
from agent.core.images.platform import Platform
from tests.harness.containerd import Containerd
from tests.harness.procs import HarnessError

# A host nobody resolves: the bench proves no registry request is made by never having one.
HOST = "bench.invalid"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
NAME_ANNOTATION = "io.containerd.image.name"
IMAGES_PER_ARCHIVE = 1000


@dataclass(frozen=True)
class Present:
    """One imported image: `name:1` and `name@digest` both name it on the node."""

    name: str
    digest: str

    @property
    def pinned(self) -> str:
        return f"{self.name}:1@{self.digest}"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def import_images(node: Containerd, count: int, platform: Platform, workdir: Path) -> list[Present]:
    """Give `node` `count` distinct images for `platform`, unlabelled (as a pull leaves them)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as layer_tar:
        _member(layer_tar, "hello", b"hello\n")
    diff_id = _digest(raw.getvalue())
    layer = gzip.compress(raw.getvalue(), mtime=0)
    images: list[Present] = []
    # ctr refuses an archive with more than 10 000 descriptors (each image brings six).
    for first in range(0, count, IMAGES_PER_ARCHIVE):
        blobs = {_digest(layer): layer}
        index = []
        for i in range(first, min(count, first + IMAGES_PER_ARCHIVE)):
            config = json.dumps(
                {
                    "architecture": platform.architecture,
                    "os": platform.os,
                    "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                    "config": {"Labels": {"bench.prepull/n": str(i)}},
                }
            ).encode()
            manifest = json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": media_types.OCI_MANIFEST,
                    "config": {
                        "mediaType": OCI_CONFIG,
                        "digest": _digest(config),
                        "size": len(config),
                    },
                    "layers": [
                        {"mediaType": OCI_LAYER_GZIP, "digest": _digest(layer), "size": len(layer)}
                    ],
                }
            ).encode()
            digest = _digest(manifest)
            blobs[_digest(config)] = config
            blobs[digest] = manifest
            image = Present(f"{HOST}/bench/warm{i}", digest)
            images.append(image)
            for name in (f"{image.name}:1", f"{image.name}@{digest}"):
                index.append(
                    {
                        "mediaType": media_types.OCI_MANIFEST,
                        "digest": digest,
                        "size": len(manifest),
                        "annotations": {NAME_ANNOTATION: name},
                    }
                )
        archive = workdir / f"images-{first}.tar"
        with tarfile.open(archive, "w") as tar:
            _member(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
            document = {"schemaVersion": 2, "manifests": index}
            _member(tar, "index.json", json.dumps(document).encode())
            for digest, data in blobs.items():
                _member(tar, "blobs/sha256/" + digest.removeprefix("sha256:"), data)
        node.ctr("images", "import", "--no-unpack", str(archive), timeout=600)
        archive.unlink()
    # CRI learns of the records from containerd's event stream, some seconds behind.
    deadline = time.monotonic() + 600
    while _listed(node.endpoint) < count:
        if time.monotonic() > deadline:
            raise HarnessError(f"CRI does not list the {count} imported images after 600s")
        time.sleep(0.5)
    return images


def _listed(endpoint: str) -> int:
    async def count() -> int:
        async with wiring.runtime(endpoint) as runtime:
            return len(await runtime.cri.list_images())

    return asyncio.run(count())
