"""Replays the classic IfNotPresent drift on two containerd "nodes", then fixes it with a lock.

Starts a private docker-registry and two containerd instances, runs the real `prepull-agent`
commands against them, prints what each node's CRI says `nginx:1.25.3` is, and cleans up.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from agent.adapters.runtime import rpc
from agent.adapters.runtime.cri import CriClient
from agent.core.images import platform as platforms
from tests.harness.containerd import Containerd
from tests.harness.images import PushedImage, push_image
from tests.harness.procs import HarnessError
from tests.harness.registry import Registry

PLATFORMS = ("linux/amd64", "linux/arm64")


def step(text: str) -> None:
    bold, plain = ("\033[1m", "\033[0m") if sys.stdout.isatty() else ("", "")
    print(f"\n{bold}== {text}{plain}")


def agent(*args: str) -> None:
    """Run the real CLI and show its output, as an operator would see it."""
    shown = " ".join(a if len(a) < 60 else "…" + a[-40:] for a in args)
    print(f"$ prepull-agent {shown}")
    proc = subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True)
    for line in (proc.stdout + proc.stderr).splitlines():
        print(f"    {line}")
    if proc.returncode != 0:
        raise HarnessError(f"prepull-agent {args[0]} exited {proc.returncode}")


def node_view(node: Containerd, reference: str) -> str | None:
    """The image id kubelet's ImageStatus would get for `reference` on this node."""

    async def ask() -> str | None:
        channel = rpc.open_channel(node.endpoint)
        try:
            found = await CriClient(channel, node.endpoint).image_status(reference)
            return found.id if found else None
        finally:
            await channel.close()

    return asyncio.run(ask())


def table(nodes: dict[str, Containerd], reference: str, names: dict[str, str]) -> set[str | None]:
    print(f"    {'node':<6} {'reference':<44} {'image id (what kubelet gets)':<30} content")
    seen = set()
    for label, node in nodes.items():
        image_id = node_view(node, reference)
        seen.add(image_id)
        shown = (image_id or "absent")[:27] + "…"
        print(f"    {label:<6} {reference:<44} {shown:<30} {names.get(image_id or '', '?')}")
    return seen


def main() -> int:
    node_platform = str(platforms.detect())
    workdir = Path(tempfile.mkdtemp(prefix="prepull-demo-"))
    registry = Registry(workdir / "registry")
    nodes = {"A": Containerd(workdir / "node-a"), "B": Containerd(workdir / "node-b")}
    try:
        step("Starting a private registry and two containerd nodes (A, B)")
        registry.start()
        for label, node in nodes.items():
            node.trust_http_registry(registry.host)
            node.start()
            print(f"    node {label}: containerd {node.release.line} on {node.endpoint}")
        print(f"    registry: {registry.url}")

        step("Push a multi-arch nginx:1.25.3 (synthesized layers for linux/amd64 and linux/arm64)")
        v1 = push_image(registry, "library/nginx", "1.25.3", PLATFORMS)
        print(f"    {v1.tagged} -> {v1.digest}")
        names = {v1.configs[node_platform]: "original 1.25.3 (pushed first)"}

        preload = workdir / "preload.yaml"
        preload.write_text(
            f"images:\n  - {v1.tagged}\nregistries:\n  {registry.host}:\n    insecure: true\n"
        )
        lock = workdir / "preload.lock.yaml"
        step("Lock the list now: every tag pinned to today's digest")
        agent("lock", "--config", str(preload), "--output-file", str(lock))
        print("    " + lock.read_text().splitlines()[2].strip())

        step("Node A preloads the plain list (IfNotPresent behaviour: whatever the tag is now)")
        agent("once", "--config", str(preload), "--cri-endpoint", nodes["A"].endpoint)

        step("Someone re-pushes the tag: docker tag nginx:1.24-perl nginx:1.25.3 && docker push")
        v2: PushedImage = push_image(registry, "library/nginx", "1.25.3", PLATFORMS)
        print(f"    {v2.tagged} -> {v2.digest}")
        names[v2.configs[node_platform]] = "RE-PUSHED content under the same tag"

        step("Node B preloads the same plain list")
        agent("once", "--config", str(preload), "--cri-endpoint", nodes["B"].endpoint)

        step("With the plain list the nodes disagree about what nginx:1.25.3 is")
        drifted = table(nodes, v1.tagged, names)

        step("Both nodes preload the lock file taken before the re-push")
        for node in nodes.values():
            agent("once", "--config", str(lock), "--cri-endpoint", node.endpoint)

        step("With the lock both nodes hold the locked content under the tag pods use")
        locked = table(nodes, v1.tagged, names)

        agreed = locked == {v1.configs[node_platform]}
        print()
        print(
            f"    plain list: {'nodes DISAGREE' if len(drifted) > 1 else 'nodes agree'};"
            f" lock file: {'nodes agree on the locked content' if agreed else 'NODES DISAGREE'}"
        )
        return 0 if agreed and len(drifted) > 1 else 1
    except HarnessError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        step("Cleaning up")
        for node in nodes.values():
            node.stop()
        registry.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        print("    stopped both containerd nodes and the registry, removed", workdir)


if __name__ == "__main__":
    sys.exit(main())
