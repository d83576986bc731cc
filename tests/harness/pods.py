"""Real pods through CRI, started the way kubelet does: sandbox, (pull), create, start."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

from agent._proto.runtime.v1 import api_pb2 as pb
from agent._proto.runtime.v1 import api_pb2_grpc
from agent.adapters.runtime import rpc

T = TypeVar("T")


def _call(endpoint: str, use: Callable[[api_pb2_grpc.RuntimeServiceStub], Awaitable[T]]) -> T:
    async def go() -> T:
        channel = rpc.open_channel(endpoint)
        try:
            return await use(api_pb2_grpc.RuntimeServiceStub(channel))
        finally:
            await channel.close()

    return asyncio.run(go())


def sandbox_config(name: str) -> pb.PodSandboxConfig:
    # Host network: the test machines have no CNI. No hostname: the host UTS namespace is shared.
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid=uuid.uuid4().hex, namespace="prepull-test"),
        linux=pb.LinuxPodSandboxConfig(
            security_context=pb.LinuxSandboxSecurityContext(
                namespace_options=pb.NamespaceOption(network=pb.NODE)
            )
        ),
    )


def run_pod(endpoint: str, config: pb.PodSandboxConfig) -> str:
    request = pb.RunPodSandboxRequest(config=config)
    response = _call(endpoint, lambda rt: rt.RunPodSandbox(request, timeout=60))
    return str(response.pod_sandbox_id)


def start_container(
    endpoint: str,
    sandbox_id: str,
    config: pb.PodSandboxConfig,
    image: str,
    *,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    mounts: Sequence[pb.Mount] = (),
    security: pb.LinuxContainerSecurityContext | None = None,
    log_path: str = "",
) -> str:
    container = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="main"),
        image=pb.ImageSpec(image=image),
        args=list(args),
        envs=[pb.KeyValue(key=k, value=v) for k, v in (env or {}).items()],
        mounts=list(mounts),
        log_path=log_path,
    )
    if security is not None:
        container.linux.security_context.CopyFrom(security)
    create = pb.CreateContainerRequest(
        pod_sandbox_id=sandbox_id, config=container, sandbox_config=config
    )
    created = _call(endpoint, lambda rt: rt.CreateContainer(create, timeout=60))
    start = pb.StartContainerRequest(container_id=created.container_id)
    _call(endpoint, lambda rt: rt.StartContainer(start, timeout=60))
    return str(created.container_id)


def exec_sync(endpoint: str, container_id: str, command: Sequence[str]) -> pb.ExecSyncResponse:
    request = pb.ExecSyncRequest(container_id=container_id, cmd=list(command), timeout=30)
    response: pb.ExecSyncResponse = _call(endpoint, lambda rt: rt.ExecSync(request, timeout=60))
    return response


def remove_pod(endpoint: str, sandbox_id: str) -> None:
    stop = pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id)
    _call(endpoint, lambda rt: rt.StopPodSandbox(stop, timeout=60))
    remove = pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id)
    _call(endpoint, lambda rt: rt.RemovePodSandbox(remove, timeout=60))


def remove_all_pods(endpoint: str) -> None:
    """Stop and remove every sandbox, so no shim or container outlives the test containerd."""
    listing = _call(endpoint, lambda rt: rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=30))
    for pod in listing.items:
        remove_pod(endpoint, pod.id)
