"""The CRI ImageService client (runtime.v1): the only module that imports the CRI stubs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc

from agent._proto.runtime.v1 import api_pb2, api_pb2_grpc
from agent.adapters.runtime import rpc
from agent.core.engine.plan import NodeImage
from agent.core.errors import ImageError
from agent.core.images import reference as references
from agent.core.lists.credentials import Credential
from agent.core.reports.starts import ContainerInfo
from agent.core.retry import RetryPolicy
from agent.core.runtimes import RuntimeFeatures, RuntimeInfo, features_of

PULL_TIMEOUT = 30 * 60.0


class CriClient:
    def __init__(
        self, channel: grpc.aio.Channel, endpoint: str, policy: RetryPolicy = RetryPolicy()
    ):
        self.endpoint = endpoint
        self._images = api_pb2_grpc.ImageServiceStub(channel)
        self._runtime = api_pb2_grpc.RuntimeServiceStub(channel)
        self._policy = policy
        self.features: RuntimeFeatures | None = None
        """What the runtime can do, known after the first `version()`."""
        self._one_pull_at_a_time = asyncio.Lock()
        self._converted: dict[bytes, NodeImage] = {}
        """The images of the last ListImages answer, by their encoding: a steady node answers
        the same images (in another order: containerd lists a map)."""

    async def _call(
        self,
        method: Any,
        request: Any,
        what: str,
        *,
        deadline: float = rpc.CALL_TIMEOUT,
        handled: frozenset[grpc.StatusCode] = frozenset(),
        transient: Callable[[BaseException], bool] = rpc.is_transient,
        policy: RetryPolicy | None = None,
    ) -> Any:
        return await rpc.call(
            self.endpoint,
            lambda: method(request, timeout=deadline),
            what=what,
            policy=policy or self._policy,
            handled=handled,
            transient=transient,
        )

    async def version(self) -> RuntimeInfo:
        request = api_pb2.VersionRequest(version="v1")
        response = await self._call(self._runtime.Version, request, "Version")
        # The runtime may have been upgraded behind the same socket: learn it again each time.
        self.features = features_of(response.runtime_name, response.runtime_version)
        return RuntimeInfo(
            response.runtime_name, response.runtime_version, response.runtime_api_version
        )

    async def ping(self, deadline: float) -> None:
        """One Version call, unretried, within `deadline` seconds: a health check must answer
        quickly and say why when it fails (RuntimeUnavailable carries gRPC's reason)."""
        request = api_pb2.VersionRequest(version="v1")
        await self._call(
            self._runtime.Version,
            request,
            "Version",
            deadline=deadline,
            policy=RetryPolicy(attempts=1),
        )

    async def list_images(self) -> list[NodeImage]:
        # containerd ignores the filter and returns everything: one call is the node's state.
        response = await self._call(
            self._images.ListImages, api_pb2.ListImagesRequest(), "ListImages"
        )
        # Encoding an image costs a tenth of converting it: a daemon pass over an unchanged node
        # converts nothing. Only the last answer's images are kept.
        known, self._converted = self._converted, {}
        for image in response.images:
            key = image.SerializeToString()
            self._converted[key] = known.get(key) or _node_image(image)
        return list(self._converted.values())

    async def image_status(self, reference: str) -> NodeImage | None:
        request = api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image=reference))
        response = await self._call(self._images.ImageStatus, request, f"ImageStatus {reference}")
        # An absent image is no error: the response simply has no image.
        return _node_image(response.image) if response.HasField("image") else None

    async def pull(self, reference: str, credential: Credential | None = None) -> str:
        """Pull `reference` for the node's platform; return the image id.

        On a runtime that crashes on concurrent pulls, pulls wait for each other here, whoever
        the caller is: the guard cannot be forgotten."""
        if self.features is None:
            await self.version()
        assert self.features is not None
        if self.features.parallel_pulls:
            return await self._pull(reference, credential)
        async with self._one_pull_at_a_time:
            return await self._pull(reference, credential)

    async def _pull(self, reference: str, credential: Credential | None) -> str:
        request = api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=reference))
        if credential is not None:
            # containerd sends credentials only to the host server_address names (ParseAuth in
            # its CRI plugin; empty means every host, mirrors included). Name the registry's
            # API host, the host containerd contacts (registry-1.docker.io for docker.io).
            request.auth.CopyFrom(
                api_pb2.AuthConfig(
                    username=credential.username,
                    password=credential.password,
                    identity_token=credential.identity_token,
                    server_address=f"https://{api_host_of(reference)}",
                )
            )
        try:
            response = await self._call(
                self._images.PullImage,
                request,
                f"PullImage {reference}",
                deadline=PULL_TIMEOUT,
                # A failed pull, even after retries, is this image's failure, not the node's.
                handled=rpc.ALL_CODES,
                transient=rpc.is_transient_pull,
            )
        except grpc.aio.AioRpcError as exc:
            raise ImageError(
                reference,
                f"pull failed: {rpc.details_of(exc)}",
                permanent=rpc.is_permanent_pull(exc),
            ) from None  # the request carried credentials: keep it out of tracebacks
        return str(response.image_ref)

    async def sandbox_created(self) -> dict[str, int]:
        """Pod sandbox id → creation time in ns since the epoch."""
        response = await self._call(
            self._runtime.ListPodSandbox, api_pb2.ListPodSandboxRequest(), "ListPodSandbox"
        )
        return {pod.id: pod.created_at for pod in response.items}

    async def list_containers(self) -> list[ContainerInfo]:
        response = await self._call(
            self._runtime.ListContainers, api_pb2.ListContainersRequest(), "ListContainers"
        )
        return [
            ContainerInfo(c.id, c.pod_sandbox_id, c.image_ref, c.created_at)
            for c in response.containers
        ]

    async def mounted_images(self, container_id: str) -> list[str]:
        """The images `container_id` mounts as volumes (KEP-4639; containerd 2.1+), by the ids
        kubelet named them with; none where the runtime has no image volumes, or the container
        is gone."""
        request = api_pb2.ContainerStatusRequest(container_id=container_id)
        try:
            response = await self._call(
                self._runtime.ContainerStatus, request, "ContainerStatus", handled=rpc.ALL_CODES
            )
        except grpc.aio.AioRpcError:
            return []
        return [m.image.image for m in response.status.mounts if m.image.image]

    async def image_fs_mountpoint(self) -> str | None:
        """Where the runtime keeps images (its snapshotter's directory), if it says."""
        try:
            response = await self._call(
                self._images.ImageFsInfo,
                api_pb2.ImageFsInfoRequest(),
                "ImageFsInfo",
                handled=rpc.ALL_CODES,
            )
        except grpc.aio.AioRpcError:
            return None  # the disk budget says it cannot be checked; the pass goes on
        for usage in response.image_filesystems:
            if usage.fs_id.mountpoint:
                return str(usage.fs_id.mountpoint)
        return None

    async def remove(self, reference: str) -> None:
        request = api_pb2.RemoveImageRequest(image=api_pb2.ImageSpec(image=reference))
        await self._call(self._images.RemoveImage, request, f"RemoveImage {reference}")


def api_host_of(reference: str) -> str:
    """The registry API host of an image reference the agent built (always parseable)."""
    return references.parse(reference).api_host


def _node_image(image: api_pb2.Image) -> NodeImage:
    return NodeImage(
        id=image.id,
        repo_tags=tuple(image.repo_tags),
        repo_digests=tuple(image.repo_digests),
        size=image.size,
        pinned=image.pinned,
    )
