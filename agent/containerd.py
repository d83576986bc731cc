"""containerd's Images API: bind a tag to pinned content. The only module for those stubs."""

from __future__ import annotations

import grpc
from google.protobuf import field_mask_pb2

from agent import rpc
from agent._proto.containerd.services.images.v1 import images_pb2, images_pb2_grpc
from agent.errors import ImageError, TagBindingUnsupported
from agent.retry import RetryPolicy

# CRI keeps its images in this namespace and sees changes there through its event stream.
CRI_NAMESPACE = "k8s.io"
NAMESPACE_HEADER = "containerd-namespace"
# The label the CRI plugin puts on images it manages; a bound tag carries it too.
MANAGED_LABEL = ("io.cri-containerd.image", "managed")
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
            source = await rpc.call(
                self.endpoint,
                lambda: self._stub.Get(
                    images_pb2.GetImageRequest(name=content_name),
                    metadata=self._metadata,
                    timeout=CALL_TIMEOUT,
                ),
                what=f"Images.Get {content_name}",
                policy=self._policy,
                handled=rpc.ALL_CODES,
            )
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

    async def _create_or_update(self, image: images_pb2.Image) -> None:
        try:
            await rpc.call(
                self.endpoint,
                lambda: self._stub.Create(
                    images_pb2.CreateImageRequest(image=image),
                    metadata=self._metadata,
                    timeout=CALL_TIMEOUT,
                ),
                what=f"Images.Create {image.name}",
                policy=self._policy,
                handled=rpc.ALL_CODES,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
            # Update only the target and our label, leaving other labels (pins) alone.
            mask = field_mask_pb2.FieldMask(paths=["target", f"labels.{MANAGED_LABEL[0]}"])
            await rpc.call(
                self.endpoint,
                lambda: self._stub.Update(
                    images_pb2.UpdateImageRequest(image=image, update_mask=mask),
                    metadata=self._metadata,
                    timeout=CALL_TIMEOUT,
                ),
                what=f"Images.Update {image.name}",
                policy=self._policy,
                handled=rpc.ALL_CODES,
            )
