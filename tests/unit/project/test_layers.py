"""The import contract that keeps agent/'s layers what ARCHITECTURE.md says they are (as
import-linter's "layers" and "forbidden" contracts would), over every module of the package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

AGENT = Path(__file__).resolve().parents[3] / "agent"
# Lowest first: a module may import its own layer and the layers below it, never one above.
LAYERS = ("core", "preload", "adapters", "wiring", "daemon", "cli")
# The package's own entry points, above every layer.
ENTRY = {"agent", "agent.__main__"}
# module prefix → the only modules allowed to import it: each external system behind one place.
OWNERS = {
    "agent._proto.runtime": {"agent.adapters.runtime.cri"},
    "agent._proto.containerd": {"agent.adapters.runtime.containerd"},
    "grpc": {
        "agent.adapters.runtime.rpc",
        "agent.adapters.runtime.cri",
        "agent.adapters.runtime.containerd",
    },
    "google.protobuf": {"agent.adapters.runtime.containerd"},
    "aiohttp": {
        "agent.adapters.http",
        "agent.adapters.registry.transport",
        "agent.adapters.kube.client",
        "agent.daemon.server",
        "agent.daemon.app",
    },
    "prometheus_client": {
        "agent.daemon.metrics",
        "agent.daemon.server",
        "agent.daemon.app",
        "agent.daemon.keeper",
    },
    "yaml": {"agent.core.lists.config", "agent.core.lists.yamlsafe", "agent.preload.lock"},
}
# The pure core does no network or runtime I/O; asyncio's primitives it may use.
CORE_FORBIDDEN = ("socket", "ssl", "http", "urllib", "subprocess", "grpc", "aiohttp")
MAX_LINES = 450
# The core shows its parts: its concepts in subpackages, a few shared ones at its top.
MAX_CORE_TOP = 12
# Layers that reach the outside only through the composition root (agent.wiring): at run time
# they import no adapter (a type named under `if TYPE_CHECKING:` is not an import at run time).
THROUGH_WIRING = ("agent.cli", "agent.daemon")


def module_name(path: Path) -> str:
    parts = path.relative_to(AGENT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(p for p in AGENT.rglob("*.py") if "_proto" not in p.parts)
NAMES = {module_name(p) for p in MODULES}


def imports_of(path: Path, *, at_run_time: bool = False) -> set[str]:
    """Every module `path` imports, at any depth (lazy imports in functions count too);
    `at_run_time`: leaving out those under `if TYPE_CHECKING:`."""
    names: set[str] = set()
    tree = ast.parse(path.read_text())
    if at_run_time:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and ast.unparse(node.test) in _TYPE_CHECKING:
                node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


_TYPE_CHECKING = ("TYPE_CHECKING", "typing.TYPE_CHECKING")


def layer_of(name: str) -> int | None:
    """The index of `name`'s layer in LAYERS; None for the entry points."""
    if name in ENTRY:
        return None
    return LAYERS.index(name.split(".")[1])


def test_every_module_is_in_a_layer() -> None:
    for name in NAMES - ENTRY:
        layer = name.split(".")[1]
        assert layer in LAYERS or layer == "_proto", f"{name} is in no layer of {LAYERS}"
    assert len(NAMES) > 40, "the contract sees the whole package"


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_no_module_imports_a_layer_above_its_own(path: Path) -> None:
    own = layer_of(module_name(path))
    if own is None:
        return
    for name in imports_of(path):
        if not name.startswith("agent.") or name.startswith("agent._proto"):
            continue
        target = ".".join(name.split(".")[:2])
        if target in ("agent.__version__",):
            continue
        assert target.split(".")[1] in LAYERS, f"{module_name(path)} imports {name}"
        assert layer_of(target) <= own, (  # type: ignore[operator]
            f"{module_name(path)} ({LAYERS[own]}) imports {name} ({target.split('.')[1]}), "
            "a layer above it"
        )


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_external_systems_stay_behind_their_module(path: Path) -> None:
    name = module_name(path)
    for imported in imports_of(path):
        for prefix, owners in OWNERS.items():
            if imported == prefix or imported.startswith(prefix + "."):
                assert name in owners, f"{name} imports {imported}; only {sorted(owners)} may"


@pytest.mark.parametrize(
    "path", [p for p in MODULES if module_name(p).startswith("agent.core")], ids=module_name
)
def test_the_core_does_no_network_or_runtime_io(path: Path) -> None:
    leaks = {n for n in imports_of(path) if n.split(".")[0] in CORE_FORBIDDEN}
    assert not leaks, f"{module_name(path)} imports {leaks}"


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_no_module_is_over_the_size_a_reader_holds_at_once(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{module_name(path)} has {lines} lines; split it by concept"


def test_the_contract_catches_an_import_upwards(tmp_path: Path) -> None:
    """The checks above can fail: a core module importing the daemon is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("from agent.daemon.app import Daemon\n")
    target = ".".join(sorted(imports_of(bad))[0].split(".")[:2])
    assert layer_of(target) > LAYERS.index("core")  # type: ignore[operator]


@pytest.mark.parametrize(
    "path",
    [p for p in MODULES if module_name(p).startswith(THROUGH_WIRING)],
    ids=module_name,
)
def test_commands_and_the_daemon_reach_adapters_only_through_wiring(path: Path) -> None:
    adapters = {n for n in imports_of(path, at_run_time=True) if n.startswith("agent.adapters")}
    assert not adapters, f"{module_name(path)} imports {sorted(adapters)}: build it in agent.wiring"


def test_the_core_shows_its_parts() -> None:
    top = [p for p in (AGENT / "core").glob("*.py") if p.name != "__init__.py"]
    parts = [p for p in (AGENT / "core").iterdir() if (p / "__init__.py").exists()]
    assert len(top) <= MAX_CORE_TOP, f"core/ has {len(top)} modules at its top: group them"
    assert len(parts) >= 5, "the core's concepts are subpackages"


def test_the_through_wiring_rule_can_fail(tmp_path: Path) -> None:
    """A run-time adapter import is seen; the same import for type checking only is not."""
    bad = tmp_path / "bad.py"
    bad.write_text("from agent.adapters.runtime import rpc\n")
    assert imports_of(bad, at_run_time=True)
    typed = tmp_path / "typed.py"
    typed.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
        "    from agent.adapters.runtime import rpc\n"
    )
    assert not {n for n in imports_of(typed, at_run_time=True) if n.startswith("agent.adapters")}
