"""The runtime behind one socket, as every command and the daemon see it: `NodeRuntime`, what
they may ask (CRI always; a runtime's own API only where it has one), and `Runtime`, the one
implementation today (containerd: CRI and its Images, Content and Introspection APIs on one
channel). A second runtime (CRI-O) is a second implementation, built in `wiring.runtime`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from agent.adapters.disk import usage_of
from agent.adapters.runtime import rpc
from agent.adapters.runtime.containerd import ContainerdImages
from agent.adapters.runtime.cri import CriClient
from agent.core.engine.disk import DiskGuard
from agent.core.engine.reconcile import Reconciler
from agent.core.engine.rollout import Rollout
from agent.core.images.platform import Platform
from agent.core.images.reference import Reference
from agent.core.lists.config import ImageEntry
from agent.core.lists.credentials import Credential
from agent.core.ports import Introspection, Resolver, RuntimeService, TagBinder
from agent.core.reports.progress import Progress, follow
from agent.core.runtimes import RuntimeFeatures, RuntimeInfo


class NodeRuntime(Protocol):
    """What the commands and the daemon need of the node's runtime."""

    @property
    def endpoint(self) -> str: ...
    @property
    def cri(self) -> RuntimeService: ...
    @property
    def disk(self) -> DiskGuard:
        """The disk budget's view of the image filesystem, shared by every pass."""

    @property
    def features(self) -> RuntimeFeatures: ...
    @property
    def binder(self) -> TagBinder | None:
        """Tags bound to pinned content, pins and their owners; None: the runtime has none."""

    @property
    def introspection(self) -> Introspection | None:
        """The runtime's own API beyond CRI; None: it has none."""

    async def meet(self) -> RuntimeInfo: ...
    async def node(self, override: Platform | None = None) -> Platform: ...
    def reconciler(
        self,
        registry: Resolver,
        node: Platform,
        credentials: Callable[[Reference], Sequence[Credential]],
        *,
        owner: str,
        on_start: Callable[[ImageEntry], None] = ...,
        stopping: Callable[[], bool] = ...,
        progress: Progress | None = None,
        rollout: Rollout | None = None,
    ) -> Reconciler: ...
    async def follow_pulls(
        self, progress: Progress, interval: float, on_tick: Callable[[], None]
    ) -> None: ...


@dataclass
class Runtime:
    """containerd behind one socket: CRI, and containerd's own APIs (NodeRuntime)."""

    endpoint: str
    cri: CriClient
    images: ContainerdImages
    disk: DiskGuard

    @property
    def features(self) -> RuntimeFeatures:
        assert self.cri.features is not None, "meet() the runtime first"
        return self.cri.features

    async def meet(self) -> RuntimeInfo:
        """Ask the runtime who it is (again: it may have been upgraded behind the socket)."""
        return await self.cri.version()

    async def node(self, override: Platform | None = None) -> Platform:
        """`--platform` if given, else the platform containerd pulls for (uname fallback)."""
        return override if override is not None else await self.images.node_platform()

    @property
    def binder(self) -> ContainerdImages | None:
        """containerd's Images API binds tags to pinned content; older releases cannot
        (agent.core.runtimes)."""
        return self.images if self.features.tag_binding else None

    @property
    def introspection(self) -> ContainerdImages:
        return self.images

    def reconciler(
        self,
        registry: Resolver,
        node: Platform,
        credentials: Callable[[Reference], Sequence[Credential]],
        *,
        owner: str,
        on_start: Callable[[ImageEntry], None] = lambda entry: None,
        stopping: Callable[[], bool] = lambda: False,
        progress: Progress | None = None,
        rollout: Rollout | None = None,
    ) -> Reconciler:
        return Reconciler(
            self.cri,
            registry,
            self.binder,
            node,
            on_start=on_start,
            stopping=stopping,
            credentials=credentials,
            pins_honoured=self.features.pins_honoured,
            progress=progress,
            disk=self.disk,
            rollout=rollout,
            seeder=self.binder,
            owner=owner,
        )

    async def follow_pulls(
        self, progress: Progress, interval: float, on_tick: Callable[[], None]
    ) -> None:
        """Keep `progress` up to date from containerd's downloads in progress until cancelled."""
        await follow(progress, self.images.ingests, interval, on_tick)


@contextlib.asynccontextmanager
async def runtime(endpoint: str) -> AsyncIterator[NodeRuntime]:
    """The node's runtime, as the commands and the daemon see it. containerd today; a second
    runtime is chosen here, from CRI Version's runtime name."""
    async with containerd(endpoint) as found:
        yield found


@contextlib.asynccontextmanager
async def containerd(endpoint: str) -> AsyncIterator[Runtime]:
    """containerd's clients, sharing one channel, closed on exit: all of it, for the bench and
    the conformance suite, which measure and check the adapters themselves."""
    channel = rpc.open_channel(endpoint)
    try:
        cri = CriClient(channel, endpoint)
        yield Runtime(
            endpoint,
            cri,
            ContainerdImages(channel, endpoint),
            DiskGuard(cri.image_fs_mountpoint, usage_of),
        )
    finally:
        await channel.close()
