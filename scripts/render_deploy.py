"""Render deploy/base into deploy/daemonset.yaml (`make deploy`), the manifest `kubectl apply -f`
takes. tests/unit/test_deploy.py checks that the committed file is this rendering."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "deploy" / "base"
RENDERED = ROOT / "deploy" / "daemonset.yaml"
HEADER = """\
# prepull-agent, rendered from deploy/base by `make deploy` (kubectl kustomize): do not edit,
# edit deploy/base (its comments explain each choice). kubectl apply -f deploy/daemonset.yaml
# Opt-in parts: kubectl apply -k deploy/overlays/<name> (see README, "Deploy").
"""


def render() -> str:
    """`kubectl kustomize deploy/base`, with the header above."""
    try:
        output = subprocess.run(
            ["kubectl", "kustomize", str(BASE)], capture_output=True, text=True, check=True
        ).stdout
    except FileNotFoundError:
        raise SystemExit("kubectl is needed to render deploy/ (kustomize is built in)") from None
    return HEADER + output


def main() -> None:
    RENDERED.write_text(render())
    print(f"wrote {RENDERED.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
