"""In-memory fakes, one per port: the runtime (CRI: RuntimeService), containerd's own APIs
(TagBinder, ContentSeeder, Introspection) and a registry (Resolver), for pure logic tests and
the daemon in process. tests/conformance.py holds them to the behaviour of the real clients on real
containerd, so they cannot drift from it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from typing import Any

from agent.core.engine import claims
from agent.core.engine.plan import NodeImage
from agent.core.errors import Conflict, ImageError, KubeApiError, RegistryError, RuntimeUnavailable
from agent.core.images.manifest import OCI_INDEX, OCI_MANIFEST, Descriptor, Manifest, Resolution
from agent.core.images.platform import Platform
from agent.core.images.reference import Reference
from agent.core.ports import Introspection, Resolver, RuntimeService, TagBinder
from agent.core.reports.gate import GateApi
from agent.core.reports.progress import Ingest
from agent.core.reports.starts import ContainerInfo
from agent.core.runtimes import RuntimeFeatures, RuntimeInfo, features_of

NODE = Platform("linux", "amd64")
D1 = "sha256:" + "1" * 64
ABSENT_TAGS = frozenset({"absent"})
"""Tags the fakes' registry does not have (every other tag names D1)."""


class FakeRuntime:
    """Pulls succeed instantly and are recorded the way containerd records them."""

    endpoint = "fake://runtime"

    def __init__(self, fail_list: bool = False, reports_pins: bool = True) -> None:
        self.images: list[NodeImage] = []
        self.pulls: list[str] = []
        self.credentials_used: list[object] = []
        self.fail_list = fail_list
        self.in_flight = 0
        self.max_in_flight = 0
        self.pinned_names: set[str] = set()
        self.reports_pins = reports_pins
        """False: like Debian's containerd 1.6.20, which keeps the label but reports no pin."""
        self.list_calls = 0
        """Records labelled pinned (FakeBinder): CRI reports an image pinned if one of its is."""
        self.pull_waits_for: dict[str, asyncio.Event] = {}
        """A pull of the reference (key) does not finish before its event is set."""
        self.info = RuntimeInfo("containerd", "2.1.9", "v1")
        self.features: RuntimeFeatures | None = None
        """Known once `version` was asked, as CriClient's."""
        self.container_failures = 0
        """ListContainers raises this many times (not an AgentError: a bug's way of failing)."""

    async def version(self) -> RuntimeInfo:
        self.features = features_of(self.info.name, self.info.version)
        return self.info

    async def ping(self, deadline: float) -> None:
        if self.fail_list:
            raise RuntimeUnavailable(self.endpoint, "socket missing")

    async def list_containers(self) -> list[ContainerInfo]:
        if self.container_failures:
            self.container_failures -= 1
            raise RuntimeError("a bug in the start scanner")
        return []

    async def mounted_images(self, container_id: str) -> list[str]:
        return []

    async def sandbox_created(self) -> dict[str, int]:
        return {}

    async def image_fs_mountpoint(self) -> str | None:
        return "/fake"

    def _as_reported(self, image: NodeImage) -> NodeImage:
        names = (*image.repo_tags, *image.repo_digests)
        pinned = self.reports_pins and not self.pinned_names.isdisjoint(names)
        return dataclasses.replace(image, pinned=pinned)

    async def list_images(self) -> list[NodeImage]:
        self.list_calls += 1
        if self.fail_list:
            raise RuntimeUnavailable(self.endpoint, "socket missing")
        return [self._as_reported(image) for image in self.images]

    async def image_status(self, reference: str) -> NodeImage | None:
        for image in self.images:
            if reference in image.repo_tags or reference in image.repo_digests:
                return self._as_reported(image)
        return None

    async def pull(self, reference: str, credential: object = None) -> str:
        if reference.partition("@")[0].rpartition(":")[2] in ABSENT_TAGS:
            # As containerd reports a registry's 404: permanent (agent.adapters.runtime.rpc).
            raise ImageError(reference, "pull failed: not found", permanent=True)
        self.credentials_used.append(credential)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        await asyncio.sleep(0.01)
        if reference in self.pull_waits_for:
            await self.pull_waits_for[reference].wait()
        self.in_flight -= 1
        self.pulls.append(reference)
        name, sep, digest = reference.partition("@")
        if sep:
            # containerd drops the tag of name:tag@digest and records name@digest only.
            repository = name.rpartition(":")[0] if name.rfind(":") > name.rfind("/") else name
            tags: tuple[str, ...] = ()
            by_digest = f"{repository}@{digest}"
        else:
            # A tag names content D1 here.
            tags, by_digest = (reference,), f"{name.rpartition(':')[0]}@{D1}"
        # One record per content (the id is the content's), as containerd keeps it.
        image_id = f"id-{by_digest}"
        known = next((i for i in self.images if i.id == image_id), None)
        if known is not None:
            self.images.remove(known)
            tags = tuple(dict.fromkeys((*known.repo_tags, *tags)))
        record = NodeImage(image_id, tags, (by_digest,), 10)
        self.images.append(record)
        return record.id


class FakeBinder:
    def __init__(self, runtime: FakeRuntime) -> None:
        self.runtime = runtime
        self.labels: dict[str, dict[str, str]] = {}
        """Each record's labels that say who holds its pin (agent.core.engine.claims)."""
        self.pin_calls = 0
        self.release_calls = 0
        self.seeded_for: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = []
        """(image, digests put in the store, pulls finished while they were there)."""
        self.seeding: list[str] = []
        """Images whose documents are being put in the store or held there now."""
        self.on_seeded: Callable[[str], None] = lambda image: None

    @contextlib.asynccontextmanager
    async def seeded(
        self, image: str, documents: Sequence[tuple[str, bytes]]
    ) -> AsyncIterator[None]:
        before = len(self.runtime.pulls)
        self.seeding.append(image)
        self.on_seeded(image)
        try:
            yield
        finally:
            self.seeding.remove(image)
            pulls = tuple(self.runtime.pulls[before:])
            self.seeded_for.append((image, tuple(d for d, _ in documents), pulls))

    async def server_pid(self) -> int | None:
        return 1

    async def node_platform(self) -> Platform:
        return NODE

    async def created_ns(self) -> dict[str, int]:
        return {}

    async def ingests(self) -> list[Ingest]:
        return []

    @property
    def pinned(self) -> list[str]:
        """Records labelled pinned, in the order they were first labelled."""
        return [n for n, labels in self.labels.items() if claims.Holders.of(labels).pinned]

    def _known(self) -> set[str]:
        return {n for i in self.runtime.images for n in (*i.repo_tags, *i.repo_digests)}

    def _write(self, name: str, changes: claims.Changes) -> None:
        self.labels[name] = claims.applied(self.labels.get(name, {}), changes)
        if claims.Holders.of(self.labels[name]).pinned:
            self.runtime.pinned_names.add(name)
        else:
            self.runtime.pinned_names.discard(name)

    async def pin_labels(self, names: Collection[str]) -> dict[str, dict[str, str]]:
        known = self._known()
        return {n: claims.relevant(self.labels.get(n, {})) for n in names if n in known}

    async def release(self, owner: str, keep: Collection[str] = ()) -> list[claims.Released]:
        self.release_calls += 1
        known = self._known()
        gone = []
        for name, labels in list(self.labels.items()):
            changes = claims.release(labels, owner) if name in known and name not in keep else {}
            if changes:
                self._write(name, changes)
                gone.append(
                    claims.Released(name, tuple(claims.Holders.of(self.labels[name]).names()))
                )
        return gone

    async def pin(
        self,
        names: Sequence[str],
        owner: str,
        before: Mapping[str, Mapping[str, str]] | None = None,
    ) -> list[str]:
        self.pin_calls += 1
        known = self._known()
        done = []
        for name in names:
            changes = claims.claim(self.labels.get(name, {}), owner, (before or {}).get(name))
            if name in known and changes:
                self._write(name, changes)
                done.append(name)
        return done

    async def pins(self) -> dict[str, claims.Holders]:
        held = {n: claims.Holders.of(labels) for n, labels in self.labels.items()}
        return {n: h for n, h in held.items() if n in self._known() and (h.pinned or h.marked)}

    async def bind_tag(
        self, tag_name: str, content_name: str, *, pin: Collection[str] = (), owner: str = ""
    ) -> None:
        content = next((i for i in self.runtime.images if content_name in i.repo_digests), None)
        if content is None:
            raise ImageError(tag_name, f"binding the tag failed: {content_name} is not present")
        for name in (content_name, tag_name):
            if name in pin:
                self._write(name, claims.claim(self.labels.get(name, {}), owner))
        self.runtime.images = [
            NodeImage(i.id, tuple(t for t in i.repo_tags if t != tag_name), i.repo_digests, i.size)
            for i in self.runtime.images
        ]
        self.runtime.images.append(
            NodeImage(
                content.id, (*content.repo_tags, tag_name), content.repo_digests, content.size
            )
        )
        self.runtime.images.remove(content)


class FakeRegistry:
    """Every tag names D1, a one-platform index whose manifest has a config and one gzip layer
    of `layer_bytes` that unpacks to `unpacked_bytes`; ranges are served unless `ranges` is
    False (as some proxies do)."""

    def __init__(
        self,
        missing: frozenset[str] = frozenset(),
        *,
        layer_bytes: int = 10,
        unpacked_bytes: int = 30,
        ranges: bool = True,
    ) -> None:
        self.missing = missing
        self.requests = 0
        self.layer_bytes = layer_bytes
        self.unpacked_bytes = unpacked_bytes
        self.ranges = ranges

    async def fetch_manifest(self, ref: Reference, target: str | None = None) -> Manifest:
        self.requests += 1
        config = Descriptor("application/vnd.oci.image.config.v1+json", "sha256:" + "c" * 64, 1)
        layer = Descriptor(
            "application/vnd.oci.image.layer.v1.tar+gzip", "sha256:" + "l" * 64, self.layer_bytes
        )
        return Manifest(target or D1, OCI_MANIFEST, config=config, layers=(layer,))

    async def blob_range(self, ref: Reference, digest: str, byte_range: str) -> bytes | None:
        self.requests += 1
        if not self.ranges or byte_range != "-4":
            return None
        return (self.unpacked_bytes % (1 << 32)).to_bytes(4, "little")

    async def serves_range(self, ref: Reference, digest: str) -> bool | None:
        self.requests += 1
        return self.ranges

    async def head_digest(self, ref: Reference) -> tuple[str, str]:
        self.requests += 1
        if ref.path in self.missing:
            raise RegistryError(ref.domain, ref.path, "not found", status=404)
        return D1, OCI_INDEX

    async def resolve(self, ref: Reference, platform: Platform | None) -> Resolution:
        self.requests += 1
        chosen = Descriptor(OCI_MANIFEST, "sha256:" + "9" * 64, 1, NODE)
        offered = (NODE,)
        return Resolution(
            ref,
            D1,
            OCI_INDEX,
            platform,
            offered,
            chosen if platform == NODE else None,
            documents=((D1, b"the index"),),
        )


class FakeNodeApi:
    """A Node behind GateApi (NodeApi and EventSink): conditions merged by type, JSON patches
    with a `test`, Events created and patched (an expired one is gone)."""

    def __init__(self, taints: list[dict[str, str]] | None = None) -> None:
        self.node: dict[str, Any] = {
            "spec": {"taints": list(taints or [])},
            "status": {"conditions": []},
        }
        self.status_patches = 0
        self.json_patches = 0
        self.meddle: list[dict[str, str]] = []
        """Taints another writer adds just before each of the next JSON patches."""
        self.created: list[dict[str, Any]] = []
        self.patched: list[tuple[str, dict[str, Any]]] = []
        self.failures = 0
        """Event writes that fail (503) before the API server answers again."""
        self.expired: set[str] = set()

    async def get_node(self) -> dict[str, Any]:
        return self.node

    async def patch_status(self, patch: dict[str, Any]) -> None:
        self.status_patches += 1
        for written in patch["status"]["conditions"]:
            kept = [c for c in self.node["status"]["conditions"] if c["type"] != written["type"]]
            deleted = written.get("$patch") == "delete"
            self.node["status"]["conditions"] = kept if deleted else [*kept, written]

    async def json_patch(self, operations: list[dict[str, Any]]) -> None:
        self.json_patches += 1
        taints = list(self.node["spec"]["taints"])
        if self.meddle:
            taints.append(self.meddle.pop(0))
            self.node = {**self.node, "spec": {"taints": taints}}
        test, *removals = operations
        if test["value"] != taints:
            raise Conflict("testing value /spec/taints failed")
        for removal in removals:
            del taints[int(removal["path"].rsplit("/", 1)[1])]
        self.node = {**self.node, "spec": {"taints": taints}}

    async def create_event(self, event: dict[str, Any]) -> None:
        if self.failures:
            self.failures -= 1
            raise KubeApiError("POST events: HTTP 503: the API server is down", 503)
        self.created.append(event)

    async def patch_event(self, name: str, patch: dict[str, Any]) -> bool:
        if name in self.expired:
            return False
        self.patched.append((name, patch))
        return True

    def condition(self, kind: str) -> dict[str, Any] | None:
        return next((c for c in self.node["status"]["conditions"] if c["type"] == kind), None)


def _held_to_their_ports(
    runtime: FakeRuntime, binder: FakeBinder, registry: FakeRegistry, node: FakeNodeApi
) -> tuple[RuntimeService, TagBinder, Introspection, Resolver, GateApi]:
    """mypy (`make check`) holds each fake to the Protocol it stands in for: a fake that drifts
    from its port is a type error, not a green suite."""
    return runtime, binder, binder, registry, node
