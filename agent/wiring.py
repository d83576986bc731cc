"""The one place adapters are built from a config and settings: the registry client, the
runtime clients (CRI and containerd's own APIs on one channel) and the reconciler. Every command,
the daemon and the bench use it, so they cannot drift apart."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

from agent.adapters.disk import usage_of
from agent.adapters.kube import ClusterAccess, KubeApi, kube_session
from agent.adapters.registry.client import RegistryClient, RegistryObserver, open_session
from agent.adapters.registry.hosts import HostsDirectory, resolver
from agent.adapters.runtime import rpc
from agent.adapters.runtime.containerd import ContainerdImages
from agent.adapters.runtime.cri import CriClient, RuntimeInfo
from agent.core.config import ImageEntry, RegistrySettings
from agent.core.credentials import Credential
from agent.core.disk import DiskGuard
from agent.core.plan import NodeImage
from agent.core.platform import Platform
from agent.core.progress import Progress, follow
from agent.core.reconcile import Reconciler
from agent.core.reference import Reference
from agent.core.rollout import Rollout
from agent.core.runtimes import RuntimeFeatures


@contextlib.asynccontextmanager
async def registry_client(
    settings: Callable[[str], RegistrySettings],
    hosts_dir: Path | None,
    credentials: Callable[[Reference], Sequence[Credential]] = lambda ref: (),
    observer: RegistryObserver | None = None,
    concurrency: int | None = None,
) -> AsyncIterator[RegistryClient]:
    """A registry client that reaches registries as containerd does (its hosts directory, then
    the list's `registries:`), with each registry's own concurrency limit (else `concurrency`,
    else the transport's default); its HTTP session is closed on exit."""
    async with open_session() as session:
        yield RegistryClient(
            session,
            resolver(settings, HostsDirectory(hosts_dir)),
            credentials=credentials,
            concurrency=lambda domain: settings(domain).concurrency or concurrency,
            observer=observer,
        )


@dataclass
class Runtime:
    """The container runtime behind one socket: CRI, and containerd's own APIs if it has them."""

    endpoint: str
    cri: CriClient
    images: ContainerdImages
    disk: DiskGuard
    """The disk budget's view of the image filesystem, shared by every pass."""

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
        """containerd's Images API binds tags to pinned content; other runtimes have none."""
        return self.images if self.features.tag_binding else None

    def reconciler(
        self,
        registry: RegistryClient,
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
async def early_listing(runtime: Runtime) -> AsyncIterator[asyncio.Task[list[NodeImage]]]:
    """ListImages, started now: the runtime lists the node's images while the caller parses
    its list — off the event loop (asyncio.to_thread), so the call can make progress (on a
    node with 10 000 images both take a while; the pass then waits for the slower, not for
    both). Cancelled, and its failure left unsaid, if the caller does not await it (a bad
    list is the caller's error to report, not an unreachable runtime)."""
    listing = asyncio.create_task(runtime.cri.list_images())
    listing.add_done_callback(lambda task: task.cancelled() or task.exception())
    try:
        yield listing
    finally:
        listing.cancel()


@contextlib.asynccontextmanager
async def runtime(endpoint: str) -> AsyncIterator[Runtime]:
    """The runtime clients, sharing one channel, closed on exit."""
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


@contextlib.asynccontextmanager
async def node_api(access: ClusterAccess) -> AsyncIterator[KubeApi]:
    """The Kubernetes API for this node's readiness gate, on its own HTTP session."""
    async with kube_session() as session:
        yield KubeApi(session, access)


RuntimeFactory = Callable[[str], AbstractAsyncContextManager[Runtime]]
"""How the daemon reaches its runtime (runtime(), or fakes in tests)."""
RegistryClientFactory = Callable[..., AbstractAsyncContextManager[RegistryClient]]
"""How the daemon makes its registry client (registry_client(), or fakes in tests)."""
