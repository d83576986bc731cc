"""Session fixtures: a real docker-registry and a real containerd, never skipped (CI must fail)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from agent.adapters.runtime import rpc
from agent.adapters.runtime.cri import CriClient
from agent.core.engine.plan import NodeImage
from agent.core.images import platform as platforms
from tests.harness.containerd import RUNNING, Containerd
from tests.harness.daemon import ConfigMapVolume, DaemonProc
from tests.harness.images import push_image, push_runnable
from tests.harness.procs import HarnessError
from tests.harness.registry import Registry
from tests.harness.slowproxy import SlowProxy

T = TypeVar("T")
NODE = str(platforms.detect())


@pytest.fixture(autouse=True)
def _containerd_survives() -> Iterator[None]:
    """After every test, every containerd it could have touched must still be running: an
    agent that crashes the runtime it serves fails the test that did it."""
    yield
    for node in list(RUNNING):
        try:
            node.check_alive()
        except HarnessError as exc:
            RUNNING.discard(node)
            pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    try:
        reg = Registry(tmp_path_factory.mktemp("registry")).start()
    except HarnessError as exc:
        pytest.fail(f"cannot start docker-registry: {exc}", pytrace=False)
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def pause_image(registry: Registry) -> str:
    """A pause image that really runs (busybox), so tests can start real pods."""
    try:
        image = push_runnable(registry, "test/pause", "1", ["/bin/busybox", "sleep", "86400"])
    except (HarnessError, OSError) as exc:
        pytest.fail(f"cannot build the pause image (needs busybox-static): {exc}", pytrace=False)
    return image.tagged


def _start_containerd(workdir: Path, registry: Registry, pause_image: str) -> Containerd:
    node = Containerd(workdir, sandbox_image=pause_image)
    node.trust_http_registry(registry.host)
    try:
        return node.start()
    except HarnessError as exc:
        pytest.fail(f"cannot start containerd: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def containerd(
    tmp_path_factory: pytest.TempPathFactory, registry: Registry, pause_image: str
) -> Iterator[Containerd]:
    node = _start_containerd(tmp_path_factory.mktemp("containerd"), registry, pause_image)
    yield node
    node.stop()


@pytest.fixture
def fresh_containerd(tmp_path: Path, registry: Registry, pause_image: str) -> Iterator[Containerd]:
    """A node of its own, for tests that need to know everything on it."""
    node = _start_containerd(tmp_path / "node", registry, pause_image)
    yield node
    node.stop()


@pytest.fixture
def repo() -> str:
    """A repository name no other test uses, so tests can share one containerd."""
    return f"test/{uuid.uuid4().hex[:12]}"


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def line_for(self, text: str) -> str:
        """The output line about the image written as `text`."""
        lines = [line for line in self.stdout.splitlines() if f" {text} " in f" {line} "]
        assert lines, f"no output line names {text!r}:\n{self.stdout}\n{self.stderr}"
        return lines[0]


def run_agent(*args: str, cwd: Path | None = None) -> Result:
    proc = subprocess.run(
        [sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return Result(proc.returncode, proc.stdout, proc.stderr)


def once(node: Containerd, config: Path, *extra: str) -> Result:
    """`prepull-agent once` with `config` against `node`."""
    return run_agent("once", "--config", str(config), "--cri-endpoint", node.endpoint, *extra)


def once_with_hosts_dir(node: Containerd, config: Path) -> Result:
    """`once` resolving through `node`'s own registry hosts directory, as containerd does."""
    return once(node, config, "--containerd-hosts-dir", str(node.certs_d))


def write_config(path: Path, registry: Registry, images: list[str], extra: str = "") -> Path:
    lines = ["images:"] + [f"  - {image}" for image in images]
    lines += ["registries:", f"  {registry.host}:", "    insecure: true"]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def with_cri(node: Containerd, use: Callable[[CriClient], Awaitable[T]]) -> T:
    """Run one CRI conversation with `node` from a synchronous test."""

    async def go() -> T:
        channel = rpc.open_channel(node.endpoint)
        try:
            return await use(CriClient(channel, node.endpoint))
        finally:
            await channel.close()

    return asyncio.run(go())


def image_status(node: Containerd, reference: str) -> NodeImage | None:
    """What kubelet sees: CRI ImageStatus for the reference exactly as a pod spec writes it."""
    return with_cri(node, lambda cri: cri.image_status(reference))


def remove_image(node: Containerd, reference: str) -> None:
    with_cri(node, lambda cri: cri.remove(reference))


def pull(node: Containerd, reference: str) -> None:
    """What kubelet does for an image a pod needs and the node lacks."""
    with_cri(node, lambda cri: cri.pull(reference))


@pytest.fixture
def volume(tmp_path: Path) -> ConfigMapVolume:
    return ConfigMapVolume(tmp_path / "config")


@pytest.fixture
def start_daemon(containerd: Containerd) -> Iterator:  # type: ignore[type-arg]
    """Start `prepull-agent run` processes on the session containerd; all end with the test."""
    started: list[DaemonProc] = []

    def start(config: Path, *extra: str) -> DaemonProc:
        daemon = DaemonProc(config, containerd.endpoint, *extra)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.terminate()


@contextlib.contextmanager
def slow_listed_image(
    registry: Registry,
    node: Containerd,
    volume: ConfigMapVolume,
    repo: str,
    layer_bytes: int,
    delay: float,
) -> Iterator[str]:
    """Push `repo:1` for this node's platform (one layer of `layer_bytes`) and list it in
    `volume` through a proxy that holds every 16 KiB for `delay` seconds: a far-away registry.
    Yields the reference as listed; the proxy stops on exit."""
    proxy = SlowProxy(registry.port, delay=delay).start()
    try:
        push_image(registry, repo, "1", (NODE,), layer_bytes=layer_bytes)
        node.trust_http_registry(proxy.host)
        slow = f"{proxy.host}/{repo}:1"
        volume.write(f"images:\n  - {slow}\nregistries:\n  {proxy.host}:\n    insecure: true\n")
        yield slow
    finally:
        proxy.stop()
