"""kubectl as `make deps` fetches it (Debian trixie's, unpacked into .cache/ by
scripts/fetch-containerd.sh): its built-in kustomize renders deploy/, and it checks the readiness
gate's stand-in API server. The machine's own kubectl, if any, is never used."""

from __future__ import annotations

import os
from pathlib import Path

KUBECTL = Path(__file__).resolve().parents[2] / ".cache/kubectl/usr/bin/kubectl"


def kubectl() -> str:
    """The path of the project's kubectl; RuntimeError saying how to get it if it is missing."""
    if not os.access(KUBECTL, os.X_OK):
        raise RuntimeError(f"{KUBECTL} is missing: run `make deps` (it fetches Debian's kubectl)")
    return str(KUBECTL)
