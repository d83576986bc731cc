"""containerd's own APIs: Images (bind a tag to pinned content, pin labels), Introspection
(the platform the CRI plugin pulls for) and Content (downloads in progress). The only module
for those stubs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from typing import Any

import grpc
from google.protobuf import empty_pb2, field_mask_pb2

from agent._proto.containerd.services.content.v1 import content_pb2, content_pb2_grpc
from agent._proto.containerd.services.images.v1 import images_pb2, images_pb2_grpc
from agent._proto.containerd.services.introspection.v1 import (
    introspection_pb2,
    introspection_pb2_grpc,
)
from agent._proto.containerd.services.leases.v1 import leases_pb2, leases_pb2_grpc
from agent.adapters.runtime import rpc
from agent.adapters.runtime.leases import SharedLease
from agent.core.engine import claims
from agent.core.engine.claims import Changes, Holders, Released
from agent.core.errors import ImageError, RuntimeUnavailable, TagBindingUnsupported
from agent.core.images import platform as platforms
from agent.core.reports.progress import Ingest
from agent.core.retry import RetryPolicy

# CRI keeps its images in this namespace and sees changes there through its event stream.
CRI_NAMESPACE = "k8s.io"
NAMESPACE_HEADER = "containerd-namespace"
# The label the CRI plugin puts on images it manages; a bound tag carries it too.
MANAGED_LABEL = ("io.cri-containerd.image", "managed")
# CRI reports an image with io.cri-containerd.pinned=pinned as pinned, and kubelet's image GC
# skips it (containerd 1.6.22+, 1.7.3+, 2.x; older versions keep the label but ignore it). Who
# holds a pin is said by labels of our own beside it: agent.core.engine.claims.
PINNED_LABEL = (claims.PIN_KEY, claims.PIN_VALUE)
# Documents the agent puts in the content store for a pull are held by a lease
# (its id in this gRPC metadata header on each write), which expires by itself after LEASE_TTL
# seconds (containerd's GC reads the label) should the agent die before deleting it.
LEASE_HEADER = "containerd-lease"
GC_EXPIRE_LABEL = "containerd.io/gc.expire"
LEASE_TTL = 3600
_LEASE_LABELS = {"prepull.io/purpose": "documents read before a pull"}
# Pin updates in flight at once: a takeover of a node with 1000 images pins them together.
PIN_CONCURRENCY = 16
log = logging.getLogger(__name__)
# The CRI plugin, which reports the platform it pulls for: (type, id) in 1.6/1.7, then in 2.x.
CRI_PLUGINS = (("io.containerd.grpc.v1", "cri"), ("io.containerd.cri.v1", "runtime"))


async def cri_platform(channel: grpc.aio.Channel) -> platforms.Platform | None:
    """The platform containerd's CRI plugin pulls for, or None if containerd does not say.

    This, not the agent's own uname, is the node's platform: an agent image running under
    emulation (amd64 on an arm64 node through binfmt) must still preload the node's content."""
    stub = introspection_pb2_grpc.IntrospectionStub(channel)
    try:
        reply = await stub.Plugins(introspection_pb2.PluginsRequest(), timeout=rpc.CALL_TIMEOUT)
    except grpc.aio.AioRpcError:
        return None
    for plugin in reply.plugins:
        if (plugin.type, plugin.id) in CRI_PLUGINS and plugin.platforms:
            first = plugin.platforms[0]
            return platforms.normalize(first.os, first.architecture, first.variant)
    return None


async def server_pid(channel: grpc.aio.Channel) -> int | None:
    """The pid of the containerd serving `channel` (Introspection.Server), which changes when
    containerd restarts and so reads its config again; None when containerd does not say."""
    stub = introspection_pb2_grpc.IntrospectionStub(channel)
    try:
        reply = await stub.Server(empty_pb2.Empty(), timeout=rpc.CALL_TIMEOUT)
    except grpc.aio.AioRpcError:
        return None
    return reply.pid or None


class ContainerdImages:
    def __init__(
        self,
        channel: grpc.aio.Channel,
        endpoint: str,
        namespace: str = CRI_NAMESPACE,
        policy: RetryPolicy = RetryPolicy(),
    ) -> None:
        self.endpoint = endpoint
        self._channel = channel
        self._stub = images_pb2_grpc.ImagesStub(channel)
        self._content = content_pb2_grpc.ContentStub(channel)
        self._leases = leases_pb2_grpc.LeasesStub(channel)
        self._metadata = ((NAMESPACE_HEADER, namespace),)
        self._policy = policy
        self._lease = SharedLease(self._new_lease, self._end_lease, renew_after=LEASE_TTL / 2)

    @contextlib.asynccontextmanager
    async def seeded(
        self, image: str, documents: Sequence[tuple[str, bytes]]
    ) -> AsyncIterator[None]:
        """`documents` ((digest, body), read and verified by the agent: manifests, a config) in
        containerd's content store while the context lasts, so the pull that follows finds them
        and does not fetch them again. Written under a lease (containerd keeps what a lease
        names from garbage collection) shared with the other pulls in flight (SharedLease),
        deleted when the last is done — by then each pulled image references what it uses — and
        expiring by itself (LEASE_TTL) should the agent die first. Best-effort: a failure is
        logged and the pull fetches them itself."""
        async with self._lease.held() as lease:
            if lease is not None:
                leased = (*self._metadata, (LEASE_HEADER, lease))
                # Each write is a commit containerd syncs to disk: side by side, not one by one.
                await asyncio.gather(
                    *(self._write(image, digest, body, leased) for digest, body in documents)
                )
            else:
                log.debug("%s: no lease for its documents, the pull fetches them", image)
            yield

    async def _new_lease(self) -> str | None:
        expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + LEASE_TTL))
        request = leases_pb2.CreateRequest(labels={**_LEASE_LABELS, GC_EXPIRE_LABEL: expires})
        try:
            reply = await self._leases.Create(
                request, metadata=self._metadata, timeout=rpc.CALL_TIMEOUT
            )
        except grpc.aio.AioRpcError as exc:
            log.debug("no lease for seeded documents: %s", exc)
            return None
        return str(reply.lease.id)

    async def _write(
        self, image: str, digest: str, body: bytes, metadata: tuple[tuple[str, str], ...]
    ) -> None:
        """One blob in a single commit (the store checks `expected` and `total`); already
        there is as good as written."""
        request = content_pb2.WriteContentRequest(
            action=content_pb2.COMMIT,
            ref=f"prepull-{digest}",
            total=len(body),
            expected=digest,
            offset=0,
            data=body,
        )
        try:
            async for _ in self._content.Write(
                iter([request]), metadata=metadata, timeout=rpc.CALL_TIMEOUT
            ):
                pass
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
                log.debug("%s: could not store %s for the pull: %s", image, digest, exc)

    async def _end_lease(self, lease: str) -> None:
        try:
            await self._leases.Delete(
                leases_pb2.DeleteRequest(id=lease),
                metadata=self._metadata,
                timeout=rpc.CALL_TIMEOUT,
            )
        except grpc.aio.AioRpcError as exc:
            log.debug("lease %s left to expire: %s", lease, exc)

    async def server_pid(self) -> int | None:
        return await server_pid(self._channel)

    async def node_platform(self) -> platforms.Platform:
        """The platform containerd pulls for (its Introspection API), else this machine's."""
        reported = await cri_platform(self._channel)
        if reported is not None:
            return reported
        detected = platforms.detect()
        log.warning("the runtime does not report its platform; using this machine's: %s", detected)
        return detected

    async def bind_tag(
        self, tag_name: str, content_name: str, *, pin: Collection[str] = (), owner: str = ""
    ) -> None:
        """Make `tag_name` (name:tag) name the same content as `content_name` (name@digest).

        `pin` names which of the two records `owner` claims the pin of on the way
        (core.engine.claims), so a cold preload needs no second update per record at the end of
        the pass."""
        try:
            gone = ImageError(tag_name, f"binding the tag failed: {content_name} is not present")
            source = await self._get(content_name)
            if source is None:
                raise gone
            if content_name in pin:
                changes = claims.claim(source.labels, owner)
                if changes and not await self._update(source, _apply(source, changes)):
                    raise gone
            labels = dict([MANAGED_LABEL])
            if tag_name in pin:
                labels = claims.applied(labels, claims.claim({}, owner))
            if not await self._create(tag_name, source.target, labels):
                existing = await self._get(tag_name)
                if existing is None:
                    raise ImageError(tag_name, "binding the tag failed: removed while binding")
                managed: Changes = dict([MANAGED_LABEL])
                if tag_name in pin:
                    managed.update(claims.claim(existing.labels, owner))
                # The whole record goes back, as containerd's own clients send it (1.7 and 2.x
                # dereference `target` unconditionally); the mask names only what changes, so
                # other labels (other owners' claims) stay as they are.
                existing.target.CopyFrom(source.target)
                if not await self._update(existing, ["target", *_apply(existing, managed)]):
                    raise ImageError(tag_name, "binding the tag failed: removed while binding")
        except grpc.aio.AioRpcError as exc:
            raise _image_error(tag_name, "binding the tag", exc) from exc

    async def _create(self, name: str, target: Any, labels: dict[str, str]) -> bool:
        """Create the record `name` → `target`; False if a record by that name exists."""
        image = images_pb2.Image(name=name, target=target, labels=labels)
        created = await self._call(
            self._stub.Create,
            images_pb2.CreateImageRequest(image=image),
            f"Images.Create {name}",
            absent=grpc.StatusCode.ALREADY_EXISTS,
        )
        return created is not None

    async def pin_labels(self, names: Collection[str]) -> dict[str, dict[str, str]]:
        """The labels that say who holds the pin of each record of `names` present (one List
        call): what a pass looks at before it pulls, since a pull may rewrite them."""
        wanted = set(names)
        if not wanted:
            return {}
        return {
            image.name: claims.relevant(image.labels)
            for image in await self._list(_named(wanted))
            if image.name in wanted
        }

    async def pin(
        self,
        names: Sequence[str],
        owner: str,
        before: Mapping[str, Mapping[str, str]] | None = None,
    ) -> list[str]:
        """Make `owner` a holder of the pin of each record of `names` present
        (agent.core.engine.claims.claim; `before`: labels seen before this pass pulled); return the
        names whose labels changed. One List call; the updates go out together
        (PIN_CONCURRENCY at a time), each masked to the labels it changes."""
        wanted = set(names)
        if not wanted:
            return []
        seen = before or {}
        todo = [
            (image, changes)
            for image in await self._list(_named(wanted))
            if image.name in wanted
            and (changes := claims.claim(image.labels, owner, seen.get(image.name)))
        ]
        return [name for name, _ in await self._relabel(todo, "pinning")]

    async def release(self, owner: str, keep: Collection[str] = ()) -> list[Released]:
        """Take `owner` off the pin of every record it holds and `keep` does not name (the
        records its list still wants); the pin itself goes when no holder is left. Nobody
        else's claim is touched. One List call; the updates go out together."""
        kept = set(keep)
        todo = [
            (image, changes)
            # Only the records carrying the owner's label: containerd filters them out of
            # what may be thousands (the filter is a label's presence).
            for image in await self._list([f"labels.{_quoted(claims.holder_key(owner))}"])
            if image.name not in kept and (changes := claims.release(image.labels, owner))
        ]
        return [
            Released(name, tuple(Holders.of(labels).names(but=owner)))
            for name, labels in await self._relabel(todo, "releasing the pin of")
        ]

    async def pins(self) -> dict[str, Holders]:
        """Every record with a pin or a claim on one, and who holds it."""
        held = {image.name: Holders.of(image.labels) for image in await self._list()}
        return {name: h for name, h in held.items() if h.pinned or h.marked}

    async def _relabel(
        self, todo: Sequence[tuple[images_pb2.Image, Changes]], doing: str
    ) -> list[tuple[str, dict[str, str]]]:
        """Make each record's label changes (PIN_CONCURRENCY at a time); the names written with
        their labels now, without those removed since the listing."""
        slots = asyncio.Semaphore(PIN_CONCURRENCY)

        async def one(
            image: images_pb2.Image, changes: Changes
        ) -> tuple[str, dict[str, str]] | None:
            async with slots:
                try:
                    # Not found: removed since the listing (kubelet GC, an operator).
                    found = await self._update(image, _apply(image, changes))
                except grpc.aio.AioRpcError as exc:
                    raise _image_error(image.name, doing, exc) from exc
            return (image.name, dict(image.labels)) if found else None

        done = await asyncio.gather(*(one(image, changes) for image, changes in todo))
        return [item for item in done if item is not None]

    async def created_ns(self) -> dict[str, int]:
        """Image name → when containerd created that record, in ns since the epoch."""
        return {
            image.name: image.created_at.seconds * 1_000_000_000 + image.created_at.nanos
            for image in await self._list()
        }

    async def ingests(self) -> list[Ingest]:
        """The downloads in progress in our namespace (CRI pulls write there), unretried: a
        progress display asks again in a moment anyway."""
        try:
            reply = await self._content.ListStatuses(
                content_pb2.ListStatusesRequest(), metadata=self._metadata, timeout=rpc.CALL_TIMEOUT
            )
        except grpc.aio.AioRpcError as exc:
            raise RuntimeUnavailable(
                self.endpoint, f"Content.ListStatuses: {rpc.details_of(exc)}"
            ) from exc
        return [Ingest(s.ref, s.offset, s.total) for s in reply.statuses]

    async def _get(self, name: str) -> images_pb2.Image | None:
        """The full record of `name`, or None if containerd has none by that name."""
        reply = await self._call(
            self._stub.Get,
            images_pb2.GetImageRequest(name=name),
            f"Images.Get {name}",
            absent=grpc.StatusCode.NOT_FOUND,
        )
        return reply.image if reply is not None and reply.HasField("image") else None

    async def _list(self, filters: Sequence[str] = ()) -> list[images_pb2.Image]:
        """The image records in our namespace that match any of `filters` (containerd's filter
        syntax; none: every record), in one call."""
        try:
            listing = await self._call(
                self._stub.List, images_pb2.ListImagesRequest(filters=filters), "Images.List"
            )
        except grpc.aio.AioRpcError as exc:
            raise RuntimeUnavailable(self.endpoint, f"Images.List: {rpc.details_of(exc)}") from exc
        return list(listing.images)

    async def _update(self, image: images_pb2.Image, paths: list[str]) -> bool:
        """Update with the full record `image`, never one without its target; False if
        containerd has no record by its name (any more)."""
        if not image.HasField("target") or not image.target.digest:
            # containerd 1.7/2.x panic on an Update without target (services/images
            # imageFromProto, containerd/containerd); refuse rather than crash the runtime.
            raise ImageError(
                image.name, "refusing to update: the record has no target", permanent=True
            )
        mask = field_mask_pb2.FieldMask(paths=paths)
        update = images_pb2.UpdateImageRequest(image=image, update_mask=mask)
        updated = await self._call(
            self._stub.Update,
            update,
            f"Images.Update {image.name}",
            absent=grpc.StatusCode.NOT_FOUND,
        )
        return updated is not None

    async def _call(
        self, method: Any, request: Any, what: str, *, absent: grpc.StatusCode | None = None
    ) -> Any:
        """One call in our namespace (transient faults retried); None if containerd answers
        `absent` (the record is not there, or already is). Any other error reaches the
        operation, which maps it with _image_error, the table of this adapter's errors."""
        try:
            return await rpc.call(
                self.endpoint,
                lambda: method(request, metadata=self._metadata, timeout=rpc.CALL_TIMEOUT),
                what=what,
                policy=self._policy,
                handled=rpc.ALL_CODES,
            )
        except grpc.aio.AioRpcError as exc:
            if absent is not None and exc.code() == absent:
                return None
            raise


NAMED_UP_TO = 64
"""More names than this are found in one unfiltered listing: containerd matches every record
against every filter."""


def _named(names: Collection[str]) -> list[str]:
    """Filters for the records named `names` (none, meaning all, past NAMED_UP_TO)."""
    if len(names) > NAMED_UP_TO:
        return []
    return [f"name=={_quoted(name)}" for name in sorted(names)]


def _quoted(value: str) -> str:
    """`value` as a quoted string of containerd's filter syntax (pkg/filters: a backslash
    escapes the next character)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _apply(image: images_pb2.Image, changes: Changes) -> list[str]:
    """Make `changes` to the record's labels (agent.core.engine.claims.applied); the mask paths that
    write them. A label named in the mask and absent from the record is removed (containerd
    metadata/images.go)."""
    labels = claims.applied(image.labels, changes)
    image.labels.clear()
    image.labels.update(labels)
    return [f"labels.{key}" for key in changes]


def _image_error(name: str, doing: str, exc: grpc.aio.AioRpcError) -> ImageError:
    """The one table from containerd's Images API errors to the project's, for one image."""
    if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
        return TagBindingUnsupported(
            name,
            "the runtime has no containerd Images API, so the tag cannot be bound to the "
            "pinned digest; pods must reference the digest",
        )
    permanent = exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED)
    return ImageError(name, f"{doing} failed: {rpc.details_of(exc)}", permanent=permanent)
