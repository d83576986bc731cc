"""A converged node is cheap: one ListImages, no pulls, no registry requests for pinned entries."""

from __future__ import annotations

from pathlib import Path

from agent.adapters.registry.client import RegistryClient, open_session
from agent.adapters.registry.hosts import HostsDirectory, resolver
from agent.adapters.runtime import rpc
from agent.adapters.runtime.containerd import ContainerdImages
from agent.adapters.runtime.cri import CriClient
from agent.core.engine.plan import NodeImage
from agent.core.engine.reconcile import Reconciler
from agent.core.images import platform as platforms
from agent.core.lists import config as configs
from agent.core.lists.credentials import Credential
from tests.harness.agent import write_config
from tests.harness.containerd import Containerd
from tests.harness.images import push_image
from tests.harness.registry import Registry

NODE = platforms.detect()


class CountingCri(CriClient):
    """The real client, counting the calls it makes."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls: dict[str, int] = {}

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    async def list_images(self) -> list[NodeImage]:
        self._count("ListImages")
        return await super().list_images()

    async def image_status(self, reference: str) -> NodeImage | None:
        self._count("ImageStatus")
        return await super().image_status(reference)

    async def pull(self, reference: str, credential: Credential | None = None) -> str:
        self._count("PullImage")
        return await super().pull(reference, credential)


async def _converge(node: Containerd, config: configs.PreloadConfig):
    channel = rpc.open_channel(node.endpoint)
    try:
        cri = CountingCri(channel, node.endpoint)
        async with open_session() as session:
            registry = RegistryClient(session, resolver(config.registry, HostsDirectory(None)))
            binder = ContainerdImages(channel, node.endpoint)
            reconciler = Reconciler(cri, registry, binder, NODE, owner="test:converged")
            outcomes = await reconciler.converge(config)
        return outcomes, cri.calls, registry.requests
    finally:
        await channel.close()


async def test_pinned_list_on_converged_node_costs_one_list_call_and_no_registry_request(
    tmp_path: Path, registry: Registry, containerd: Containerd, repo: str
) -> None:
    images = [push_image(registry, f"{repo}-{i}", "1", (str(NODE),)) for i in range(4)]
    entries = [i.pinned() for i in images[:2]] + [i.by_digest() for i in images[2:]]
    config = configs.load(write_config(tmp_path / "preload.yaml", registry, entries))
    first, _, _ = await _converge(containerd, config)
    assert [o.status for o in first] == ["pulled"] * 4

    outcomes, calls, registry_requests = await _converge(containerd, config)

    assert [o.status for o in outcomes] == ["hit"] * 4
    assert calls == {"ListImages": 1}, calls
    assert registry_requests == 0


async def test_tag_list_on_converged_node_costs_one_head_per_tag_and_no_pull(
    tmp_path: Path, registry: Registry, containerd: Containerd, repo: str
) -> None:
    images = [push_image(registry, f"{repo}-{i}", "1", (str(NODE),)) for i in range(3)]
    config = configs.load(
        write_config(tmp_path / "preload.yaml", registry, [i.tagged for i in images])
    )
    await _converge(containerd, config)

    outcomes, calls, registry_requests = await _converge(containerd, config)

    assert [o.status for o in outcomes] == ["hit"] * 3
    assert calls == {"ListImages": 1}, calls
    assert registry_requests == 3, "expected exactly one HEAD per tag"
