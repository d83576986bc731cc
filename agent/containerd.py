"""containerd's Images API: bind a tag to pinned content. The only module for those stubs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf import field_mask_pb2

from agent import rpc
from agent._proto.containerd.services.images.v1 import images_pb2, images_pb2_grpc
from agent.errors import AgentError, ImageError, TagBindingUnsupported
from agent.retry import RetryPolicy

# CRI keeps its images in this namespace and sees changes there through its event stream.
CRI_NAMESPACE = "k8s.io"
NAMESPACE_HEADER = "containerd-namespace"
# The label the CRI plugin puts on images it manages; a bound tag carries it too.
MANAGED_LABEL = ("io.cri-containerd.image", "managed")
# CRI reports an image with this label as pinned, and kubelet's image GC skips it
# (containerd 1.6.22+, 1.7.3+, 2.x; older versions keep the label but ignore it).
PINNED_LABEL = ("io.cri-containerd.pinned", "pinned")
CALL_TIMEOUT = 30.0


class ContainerdImages:
    def __init__(
        self,
        channel: grpc.aio.Channel,
        endpoint: str,
        namespace: str = CRI_NAMESPACE,
        policy: RetryPolicy = RetryPolicy(),
    ) -> None:
        self.endpoint = endpoint
        self._stub = images_pb2_grpc.ImagesStub(channel)
        self._metadata = ((NAMESPACE_HEADER, namespace),)
        self._policy = policy

    async def bind_tag(self, tag_name: str, content_name: str) -> None:
        """Make `tag_name` (name:tag) name the same content as `content_name` (name@digest)."""
        try:
            get = images_pb2.GetImageRequest(name=content_name)
            source = await self._call(self._stub.Get, get, f"Images.Get {content_name}")
            image = images_pb2.Image(
                name=tag_name, target=source.image.target, labels=dict([MANAGED_LABEL])
            )
            await self._create_or_update(image)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                raise TagBindingUnsupported(
                    tag_name,
                    "the runtime has no containerd Images API, so the tag cannot be bound to "
                    "the pinned digest; pods must reference the digest",
                ) from None
            raise ImageError(tag_name, f"binding the tag failed: {rpc.details_of(exc)}") from None

    async def unpinned(self, names: Sequence[str]) -> list[str]:
        """Which of `names` exist in containerd without our pinned label (one List call)."""
        wanted = set(names)
        key, value = PINNED_LABEL
        return [
            image.name
            for image in await self._list()
            if image.name in wanted and image.labels.get(key) != value
        ]

    async def created_ns(self) -> dict[str, int]:
        """Image name → when containerd created that record, in ns since the epoch."""
        return {
            image.name: image.created_at.seconds * 1_000_000_000 + image.created_at.nanos
            for image in await self._list()
        }

    async def _list(self) -> list[images_pb2.Image]:
        """Every image record in our namespace, in one call."""
        try:
            listing = await self._call(
                self._stub.List, images_pb2.ListImagesRequest(), "Images.List"
            )
        except grpc.aio.AioRpcError as exc:
            raise AgentError(f"listing containerd images failed: {rpc.details_of(exc)}") from None
        return list(listing.images)

    async def pin(self, name: str) -> None:
        key, value = PINNED_LABEL
        image = images_pb2.Image(name=name, labels={key: value})
        mask = field_mask_pb2.FieldMask(paths=[f"labels.{key}"])
        update = images_pb2.UpdateImageRequest(image=image, update_mask=mask)
        try:
            await self._call(self._stub.Update, update, f"Images.Update {name}")
        except grpc.aio.AioRpcError as exc:
            raise ImageError(name, f"pinning failed: {rpc.details_of(exc)}") from None

    async def _create_or_update(self, image: images_pb2.Image) -> None:
        try:
            create = images_pb2.CreateImageRequest(image=image)
            await self._call(self._stub.Create, create, f"Images.Create {image.name}")
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
            # Update only the target and our label, leaving other labels (pins) alone.
            mask = field_mask_pb2.FieldMask(paths=["target", f"labels.{MANAGED_LABEL[0]}"])
            update = images_pb2.UpdateImageRequest(image=image, update_mask=mask)
            await self._call(self._stub.Update, update, f"Images.Update {image.name}")

    async def _call(self, method: Any, request: Any, what: str) -> Any:
        """One call in our namespace; every error reaches the caller, which maps it."""
        return await rpc.call(
            self.endpoint,
            lambda: method(request, metadata=self._metadata, timeout=CALL_TIMEOUT),
            what=what,
            policy=self._policy,
            handled=rpc.ALL_CODES,
        )
