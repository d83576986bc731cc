"""The composition root: the one place adapters are built, for every command, the daemon and
the bench, so that none of them builds its own and they cannot drift apart. What it hands out
is typed by what its users need (`NodeRuntime`, the core's ports), not by the adapters."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from agent.adapters.registry.client import RegistryClient, RegistryObserver, open_session
from agent.adapters.registry.hosts import Endpoint, HostsDirectory, resolver
from agent.core.engine.plan import NodeImage
from agent.core.images.reference import Reference
from agent.core.lists.config import PreloadConfig, RegistrySettings
from agent.core.lists.credentials import Credential
from agent.wiring.doctor import Checkup, KubeletCheckup, check_config, checkup, kubelet_checkup
from agent.wiring.runtime import NodeRuntime, Runtime, containerd, runtime

if TYPE_CHECKING:
    # The Kubernetes adapter loads only for the verbs that use it (`run` with a gate, `fleet`):
    # `once` and the list tools never import it.
    from agent.adapters.kube.access import ClusterAccess as ClusterAccess
    from agent.adapters.kube.fleet import FleetApi as FleetApi
    from agent.adapters.kube.workloads import WorkloadsApi as WorkloadsApi
    from agent.core.reports.gate import GateApi

__all__ = [
    "WIRING",
    "Checkup",
    "KubeletCheckup",
    "NodeRuntime",
    "Runtime",
    "Wiring",
    "containerd",
    "runtime",
]


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
            endpoints(settings, hosts_dir),
            credentials=credentials,
            concurrency=lambda domain: settings(domain).concurrency or concurrency,
            observer=observer,
        )


def endpoints(
    settings: Callable[[str], RegistrySettings], hosts_dir: Path | None
) -> Callable[[Reference], tuple[Endpoint, ...]]:
    """Where each reference's registry is reached, as containerd would reach it (its hosts
    directory, then the list's `registries:`); ConfigError for a hosts.toml that is broken."""
    return resolver(settings, HostsDirectory(hosts_dir))


@contextlib.asynccontextmanager
async def early_listing(runtime: NodeRuntime) -> AsyncIterator[asyncio.Task[list[NodeImage]]]:
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


def cluster_access(
    node: str | None,
    server: str | None = None,
    token_file: Path | None = None,
    ca_file: Path | None = None,
    namespace: str | None = None,
    impersonate_node: bool = False,
) -> ClusterAccess:
    """The readiness gate's access to the API server (in-cluster defaults, each overridable);
    InputError now for what is missing or a CA that cannot be loaded, not a dead task later."""
    from agent.adapters.kube.access import ClusterAccess, tls_context

    access = ClusterAccess.resolve(node, server, token_file, ca_file, namespace, impersonate_node)
    tls_context(access)
    return access


@contextlib.asynccontextmanager
async def node_api(access: ClusterAccess) -> AsyncIterator[GateApi]:
    """The Kubernetes API for this node's readiness gate, on its own HTTP session."""
    from agent.adapters.kube.access import gate_access
    from agent.adapters.kube.client import api_client
    from agent.adapters.kube.node import KubeApi

    async with api_client(gate_access(access)) as client:
        yield KubeApi(client, access)


@contextlib.asynccontextmanager
async def fleet_client(
    kubeconfig: str | None, context: str | None, connections: int
) -> AsyncIterator[FleetApi]:
    """The fleet view's reads with the user's kubeconfig (as kubectl reads it, exec plugins
    included), at most `connections` at once."""
    from agent.adapters.kube.fleet import fleet_api
    from agent.adapters.kube.kubeconfig import access as kubeconfig_access
    from agent.adapters.kube.kubeconfig import load as load_kubeconfig

    access = await kubeconfig_access(load_kubeconfig(kubeconfig, context))
    async with fleet_api(access, connections) as api:
        yield api


@contextlib.asynccontextmanager
async def workloads_client(
    kubeconfig: str | None, context: str | None
) -> AsyncIterator[WorkloadsApi]:
    """`from-cluster`'s reads with the user's kubeconfig (as kubectl reads it)."""
    from agent.adapters.kube.kubeconfig import access as kubeconfig_access
    from agent.adapters.kube.kubeconfig import load as load_kubeconfig
    from agent.adapters.kube.workloads import workloads_api

    access = await kubeconfig_access(load_kubeconfig(kubeconfig, context))
    async with workloads_api(access) as api:
        yield api


class RuntimeFactory(Protocol):
    """How the daemon reaches its runtime (`runtime`, or fakes in tests)."""

    def __call__(self, endpoint: str) -> AbstractAsyncContextManager[NodeRuntime]: ...


class RegistryClientFactory(Protocol):
    """How a verb or the daemon makes its registry client (`registry_client`, or fakes)."""

    def __call__(
        self,
        settings: Callable[[str], RegistrySettings],
        hosts_dir: Path | None,
        credentials: Callable[[Reference], Sequence[Credential]] = ...,
        observer: RegistryObserver | None = None,
        concurrency: int | None = None,
    ) -> AbstractAsyncContextManager[RegistryClient]: ...


class ClusterAccessFactory(Protocol):
    def __call__(
        self,
        node: str | None,
        server: str | None = None,
        token_file: Path | None = None,
        ca_file: Path | None = None,
        namespace: str | None = None,
        impersonate_node: bool = False,
    ) -> ClusterAccess: ...


class Checkups(Protocol):
    def __call__(
        self,
        endpoint: str,
        version: str,
        config_path: Path | None,
        ignoring_range: Sequence[str] = (),
    ) -> Checkup: ...


class KubeletCheckups(Protocol):
    def __call__(
        self,
        path: Path | None,
        listing: PreloadConfig | None,
        *,
        multi_tenant: bool = False,
        public: frozenset[str] = frozenset(),
        pins_honoured: bool = True,
    ) -> KubeletCheckup: ...


@dataclass(frozen=True)
class Wiring:
    """The composition root as one typed object: what `cli.common.load_wiring` hands a verb
    and `daemon.app.Daemon` takes (tests give it fakes)."""

    runtime: RuntimeFactory = runtime
    registry_client: RegistryClientFactory = registry_client
    endpoints: Callable[
        [Callable[[str], RegistrySettings], Path | None],
        Callable[[Reference], tuple[Endpoint, ...]],
    ] = endpoints
    early_listing: Callable[
        [NodeRuntime], AbstractAsyncContextManager[asyncio.Task[list[NodeImage]]]
    ] = early_listing
    cluster_access: ClusterAccessFactory = cluster_access
    node_api: Callable[[ClusterAccess], AbstractAsyncContextManager[GateApi]] = node_api
    fleet_client: Callable[[str | None, str | None, int], AbstractAsyncContextManager[FleetApi]] = (
        fleet_client
    )
    workloads_client: Callable[
        [str | None, str | None], AbstractAsyncContextManager[WorkloadsApi]
    ] = workloads_client
    check_config: Callable[[Path], None] = check_config
    checkup: Checkups = checkup
    kubelet_checkup: KubeletCheckups = kubelet_checkup


WIRING = Wiring()
