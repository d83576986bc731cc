"""Import rules keeping each external system behind one module (as an import-linter contract)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

AGENT = Path(__file__).resolve().parents[2] / "agent"
# module prefix → the only agent modules allowed to import it
OWNERS = {
    "agent._proto.runtime": {"cri"},
    "agent._proto.containerd": {"containerd"},
    "grpc": {"rpc", "cri", "containerd"},
    "google.protobuf": {"containerd"},
    # transport.py holds the registries' client session; server.py serves the probes; kube.py
    # is the Kubernetes API's client (the readiness gate, on a session app.py opens).
    "aiohttp": {"transport", "server", "app", "kube"},
    "yaml": {"config"},
}
# The pure core does no I/O: it may not import the adapters either.
PURE = {
    "reference", "platform", "manifest", "plan", "config", "errors", "retry", "auth", "runtimes",
    "settings", "starts", "gate", "progress",
}  # fmt: skip
ADAPTERS = {
    "agent.cri", "agent.containerd", "agent.registry", "agent.transport", "agent.rpc",
    "agent.reconcile", "agent.wiring", "agent.app", "agent.kube",
}  # fmt: skip


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


MODULES = sorted(p for p in AGENT.glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_external_systems_stay_behind_their_module(path: Path) -> None:
    for name in imports_of(path):
        for prefix, owners in OWNERS.items():
            if name == prefix or name.startswith(prefix + "."):
                assert path.stem in owners, f"agent/{path.name} imports {name}; only {owners} may"


@pytest.mark.parametrize("path", [p for p in MODULES if p.stem in PURE], ids=lambda p: p.stem)
def test_pure_modules_import_no_adapter(path: Path) -> None:
    leaks = {n for n in imports_of(path) if ".".join(n.split(".")[:2]) in ADAPTERS}
    assert not leaks, f"agent/{path.name} imports adapters {leaks}"
