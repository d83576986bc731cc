"""`make image`: the agent's container image, built offline — no Docker engine, no Docker Hub —
from Debian's packages and PyPI's wheels, written by hand as an OCI image layout:

- layer 1: a minimal Debian bookworm root filesystem with its python3 (mmdebstrap
  --variant=minbase; docs, man pages and locales left out), cached in .cache/image;
- layer 2: the project's wheel and its dependencies (wheels for bookworm's CPython 3.11 and the
  target architecture) in /opt/prepull-agent, compiled, and the console script
  /usr/local/bin/prepull-agent;
- config: user 65532, entrypoint `prepull-agent`, command `run --config=/etc/prepull/preload.yaml`,
  PREPULL_IMAGE naming the image (what `prepull-agent version` prints).

The Dockerfile builds the same layout (paths, user, entrypoint, command). Usage:
  python scripts/build_image.py [--arch amd64|arm64|amd64,arm64] [--ref NAME:TAG] [--push]
writes .cache/image/oci-<arch> (an OCI layout: skopeo copy oci:.cache/image/oci-amd64:<tag> …),
and for several architectures .cache/image/oci-index, an image index over them; --push copies
it to --ref with skopeo (--all for an index)."""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "image"
SUITE = "bookworm"
PACKAGES = ("python3", "ca-certificates")
EXCLUDED = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*", "/usr/share/info/*")
SITE = "opt/prepull-agent"
ENTRYPOINT = ["prepull-agent"]
COMMAND = ["run", "--config=/etc/prepull/preload.yaml"]
USER = "65532:65532"
WHEEL_PLATFORMS = {"amd64": "manylinux2014_x86_64", "arm64": "manylinux2014_aarch64"}
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
CONSOLE_SCRIPT = ROOT / "scripts" / "console-script"
"""/usr/local/bin/prepull-agent, in both this build and the Dockerfile's."""


@dataclass(frozen=True)
class Layer:
    blob: Path
    digest: str
    diff_id: str
    size: int


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _gzip_layer(tar_path: Path, out: Path) -> Layer:
    """gzip `tar_path` into `out`: the layer's blob, digest (compressed) and diff_id (not)."""
    # mtime 0: the same tar gives the same blob, so the same digest.
    with (
        tar_path.open("rb") as source,
        out.open("wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as target,
    ):
        shutil.copyfileobj(source, target, 1 << 20)
    return Layer(out, _sha256_file(out), _sha256_file(tar_path), out.stat().st_size)


def _mirror() -> str:
    """The machine's Debian mirror (as scripts/fetch-containerd.sh finds it)."""
    sources = [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        for word in text.split():
            if word.startswith("http") and word.rstrip("/").endswith("/debian"):
                return word
    return "http://deb.debian.org/debian"


def debian_layer(arch: str) -> Layer:
    """The root filesystem layer, built once per architecture and package set."""
    key = hashlib.sha256(json.dumps([SUITE, arch, PACKAGES, EXCLUDED]).encode()).hexdigest()[:12]
    blob = CACHE / f"debian-{arch}-{key}.tar.gz"
    meta = blob.with_suffix(".json")
    if blob.exists() and meta.exists():
        return Layer(blob, **json.loads(meta.read_text()))
    if shutil.which("mmdebstrap") is None:
        raise SystemExit("mmdebstrap is needed (apt-get install mmdebstrap; make deps does it)")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as work:
        tar_path = Path(work) / "rootfs.tar"
        options = [f"--dpkgopt=path-exclude={pattern}" for pattern in EXCLUDED]
        command = [
            "mmdebstrap",
            "--quiet",
            "--variant=minbase",
            f"--architectures={arch}",
            f"--include={','.join(PACKAGES)}",
            *options,
            SUITE,
            str(tar_path),
            _mirror(),
        ]
        if subprocess.run(command).returncode != 0:
            # mmdebstrap runs the packages' maintainer scripts for `arch`: another architecture
            # needs qemu-user-static registered with binfmt_misc (or a machine of that arch).
            raise SystemExit(
                f"make image: mmdebstrap could not build the {arch} root filesystem (its message "
                f"is above); for another architecture than this machine's, register "
                f"qemu-user-static with binfmt_misc, or build on a machine of that architecture"
            )
        layer = _gzip_layer(tar_path, blob)
    meta.write_text(
        json.dumps({"digest": layer.digest, "diff_id": layer.diff_id, "size": layer.size})
    )
    return layer


def agent_layer(arch: str, work: Path) -> Layer:
    """The project and its dependencies, as bookworm's python3 on `arch` runs them."""
    wheels = work / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
        check=True,
    )
    (wheel,) = wheels.glob("prepull_agent-*.whl")
    tree = work / "tree"
    site = tree / SITE
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-compile",
            "--target",
            str(site),
            "--only-binary=:all:",
            "--implementation=cp",
            "--python-version=3.11",
            f"--platform={WHEEL_PLATFORMS[arch]}",
            str(wheel),
        ],
        check=True,
    )
    shutil.rmtree(site / "bin", ignore_errors=True)  # pip's scripts name the build machine's python
    # Compiled now: the pod's root filesystem is read-only, so nothing could be cached there.
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "--invalidation-mode=unchecked-hash", str(site)],
        check=True,
    )
    script = tree / "usr/local/bin/prepull-agent"
    script.parent.mkdir(parents=True)
    shutil.copyfile(CONSOLE_SCRIPT, script)
    script.chmod(0o755)
    tar_path = work / "agent.tar"
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(tree.rglob("*")):
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(tree)))
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = 0
            if info.isfile():
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)
    return _gzip_layer(tar_path, work / "agent.tar.gz")


def _version() -> str:
    namespace: dict[str, str] = {}
    exec((ROOT / "agent" / "__init__.py").read_text(), namespace)
    return namespace["__version__"]


def build(arch: str, ref: str) -> Path:
    """Write the OCI layout .cache/image/oci-<arch> holding `ref`'s tag; return its path."""
    layout = CACHE / f"oci-{arch}"
    shutil.rmtree(layout, ignore_errors=True)
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    with tempfile.TemporaryDirectory(dir=CACHE if CACHE.exists() else None) as work:
        layers = [debian_layer(arch), agent_layer(arch, Path(work))]
        for layer in layers:
            shutil.copyfile(layer.blob, blobs / layer.digest.removeprefix("sha256:"))
    config = {
        "architecture": arch,
        "os": "linux",
        "config": {
            "User": USER,
            "Entrypoint": ENTRYPOINT,
            "Cmd": COMMAND,
            "Env": [
                "PATH=/usr/local/bin:/usr/bin:/bin",
                "PYTHONDONTWRITEBYTECODE=1",
                f"PREPULL_IMAGE={ref}",
            ],
            "Labels": {
                "org.opencontainers.image.title": "prepull-agent",
                "org.opencontainers.image.version": _version(),
                "org.opencontainers.image.ref.name": ref,
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
    }
    config_body = json.dumps(config, sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": OCI_CONFIG,
            "digest": _put(blobs, config_body),
            "size": len(config_body),
        },
        "layers": [
            {"mediaType": OCI_LAYER, "digest": layer.digest, "size": layer.size} for layer in layers
        ],
    }
    manifest_body = json.dumps(manifest, sort_keys=True).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": _put(blobs, manifest_body),
                "size": len(manifest_body),
                "platform": {"os": "linux", "architecture": arch},
                "annotations": {"org.opencontainers.image.ref.name": ref.rpartition(":")[2]},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index, sort_keys=True))
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    return layout


OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def index(layouts: list[Path], ref: str) -> Path:
    """One OCI layout, .cache/image/oci-index, whose tag names an image index over the images of
    `layouts` (one per architecture, as `build` writes them): what a multi-arch push takes
    (`skopeo copy --all`)."""
    merged = CACHE / "oci-index"
    shutil.rmtree(merged, ignore_errors=True)
    blobs = merged / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    manifests = []
    for layout in layouts:
        for blob in (layout / "blobs" / "sha256").iterdir():
            shutil.copyfile(blob, blobs / blob.name)
        for entry in json.loads((layout / "index.json").read_text())["manifests"]:
            manifests.append({k: v for k, v in entry.items() if k != "annotations"})
    body = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}, sort_keys=True
    ).encode()
    top = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": OCI_INDEX,
                "digest": _put(blobs, body),
                "size": len(body),
                "annotations": {"org.opencontainers.image.ref.name": ref.rpartition(":")[2]},
            }
        ],
    }
    (merged / "index.json").write_text(json.dumps(top, sort_keys=True))
    (merged / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    return merged


def _put(blobs: Path, body: bytes) -> str:
    digest = hashlib.sha256(body).hexdigest()
    (blobs / digest).write_bytes(body)
    return f"sha256:{digest}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--arch",
        default="amd64",
        help=f"one of {', '.join(sorted(WHEEL_PLATFORMS))}, or several with commas: one image "
        "each, and an index over them (a multi-arch tag)",
    )
    parser.add_argument("--ref", default=f"prepull-agent:{_version()}")
    parser.add_argument("--push", action="store_true", help="skopeo copy the image to --ref")
    args = parser.parse_args()
    arches = [a.strip() for a in args.arch.split(",") if a.strip()]
    unknown = [a for a in arches if a not in WHEEL_PLATFORMS]
    if not arches or unknown:
        parser.error(f"--arch: choose from {', '.join(sorted(WHEEL_PLATFORMS))}")
    layouts = [build(arch, args.ref) for arch in arches]
    layout = layouts[0] if len(layouts) == 1 else index(layouts, args.ref)
    tag = args.ref.rpartition(":")[2]
    platforms = ", ".join(f"linux/{a}" for a in arches)
    print(f"wrote {layout.relative_to(ROOT)} ({args.ref}, {platforms})", file=sys.stderr)
    if args.push:
        destination = f"docker://{args.ref}"
        every = ["--all"] if len(layouts) > 1 else []
        subprocess.run(["skopeo", "copy", *every, f"oci:{layout}:{tag}", destination], check=True)


if __name__ == "__main__":
    os.umask(0o022)
    main()
