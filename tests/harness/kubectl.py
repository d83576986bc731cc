"""kubectl as `make deps` fetches it (Debian trixie's, unpacked into .cache/ by
scripts/fetch-containerd.sh): its built-in kustomize renders deploy/, and it checks the readiness
gate's stand-in API server. The machine's own kubectl, if any, is never used."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

KUBECTL = Path(__file__).resolve().parents[2] / ".cache/kubectl/usr/bin/kubectl"
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def kubectl() -> str:
    """The path of the project's kubectl; RuntimeError saying how to get it if it is missing."""
    if not os.access(KUBECTL, os.X_OK):
        raise RuntimeError(f"{KUBECTL} is missing: run `make deps` (it fetches Debian's kubectl)")
    return str(KUBECTL)


def kustomize(folder: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize folder` (kubectl's built-in kustomize), as objects."""
    run = subprocess.run([kubectl(), "kustomize", str(folder)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return list(yaml.safe_load_all(run.stdout))
