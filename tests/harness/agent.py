"""What the integration tests share besides their fixtures: running the agent's CLI, a CRI
conversation with a node, a containerd of one's own, a list to write, a far-away registry."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from agent.adapters.runtime import rpc
from agent.adapters.runtime.cri import CriClient
from agent.core.engine.plan import NodeImage
from agent.core.images import platform as platforms
from tests.harness.containerd import Containerd
from tests.harness.daemon import ConfigMapVolume
from tests.harness.images import push_image
from tests.harness.procs import HarnessError
from tests.harness.registry import Registry
from tests.harness.slowproxy import SlowProxy

T = TypeVar("T")
NODE = str(platforms.detect())


def start_node(workdir: Path, registry: Registry, pause_image: str) -> Containerd:
    """A containerd of its own in `workdir`, trusting `registry` over plain HTTP."""
    node = Containerd(workdir, sandbox_image=pause_image)
    node.trust_http_registry(registry.host)
    try:
        return node.start()
    except HarnessError as exc:
        pytest.fail(f"cannot start containerd: {exc}", pytrace=False)


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
