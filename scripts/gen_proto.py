"""Regenerate agent/_proto from proto/: `make proto` (tests/unit/project/test_proto_fresh.py
checks it)."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
PACKAGE = "agent._proto"
# protoc writes imports relative to the proto root ("from runtime.v1 import …");
# the stubs live inside the agent package, so those imports are made absolute.
_LOCAL_IMPORT = re.compile(r"^from (runtime|containerd)((?:\.\w+)*) import", re.MULTILINE)


def generate(out_dir: Path) -> list[Path]:
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    written = []
    for path in sorted(p for p in out_dir.rglob("*.py*") if p.suffix in (".py", ".pyi")):
        text = _LOCAL_IMPORT.sub(rf"from {PACKAGE}.\1\2 import", path.read_text())
        path.write_text(text)
        written.append(path)
    folders = (p for p in out_dir.rglob("*") if p.is_dir() and p.name != "__pycache__")
    for folder in [out_dir, *folders]:
        init = folder / "__init__.py"
        if not init.exists():
            init.write_text("")
            written.append(init)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "agent" / "_proto")
    files = generate(parser.parse_args().out)
    print(f"wrote {len(files)} files", file=sys.stderr)


if __name__ == "__main__":
    main()
