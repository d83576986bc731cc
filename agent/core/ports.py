"""The ports: what the core needs of the outside (a runtime, a tag binder, a registry), as
Protocols the adapters implement, and what one image's work comes to (Outcome)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Collection, Mapping, Sequence
from enum import StrEnum
from typing import Protocol

from agent.core.engine.claims import Holders, Released
from agent.core.engine.plan import Action, NodeImage
from agent.core.images.manifest import Manifest, Resolution
from agent.core.images.platform import Platform
from agent.core.images.reference import Reference
from agent.core.lists.config import ImageEntry
from agent.core.lists.credentials import Credential
from agent.core.reports.progress import Ingest
from agent.core.reports.starts import ContainerInfo
from agent.core.runtimes import RuntimeInfo


class ImageRuntime(Protocol):
    """What reconciling needs of CRI (agent.adapters.runtime.cri.CriClient implements it)."""

    endpoint: str

    async def list_images(self) -> list[NodeImage]: ...
    async def image_status(self, reference: str) -> NodeImage | None: ...
    async def pull(self, reference: str, credential: Credential | None = None) -> str: ...


class RuntimeService(ImageRuntime, Protocol):
    """All a command or the daemon asks of CRI: the images, and who the runtime is, whether it
    answers, what its containers run (CriClient implements it; any CRI runtime can)."""

    async def version(self) -> RuntimeInfo: ...
    async def ping(self, deadline: float) -> None: ...
    async def list_containers(self) -> list[ContainerInfo]: ...
    async def mounted_images(self, container_id: str) -> list[str]: ...
    async def sandbox_created(self) -> dict[str, int]: ...


class Introspection(Protocol):
    """What a runtime's own API tells beyond CRI (containerd's Introspection, Images and
    Content APIs: ContainerdImages); a runtime without one leaves it out and the agent does
    without (no pull progress, no container-start verdicts, no pull-path findings)."""

    async def server_pid(self) -> int | None: ...
    async def node_platform(self) -> Platform: ...
    async def created_ns(self) -> dict[str, int]: ...
    async def ingests(self) -> list[Ingest]: ...


class TagBinder(Protocol):
    """Points a tag at present content, and labels images (ContainerdImages, in
    agent.adapters.runtime.containerd)."""

    async def bind_tag(
        self, tag_name: str, content_name: str, *, pin: Collection[str] = (), owner: str = ""
    ) -> None: ...
    async def pin_labels(self, names: Collection[str]) -> dict[str, dict[str, str]]: ...
    async def pin(
        self,
        names: Sequence[str],
        owner: str,
        before: Mapping[str, Mapping[str, str]] | None = None,
    ) -> list[str]: ...
    async def release(self, owner: str, keep: Collection[str] = ()) -> list[Released]: ...
    async def pins(self) -> dict[str, Holders]: ...


class ContentSeeder(Protocol):
    """Puts documents the agent already read and verified into the runtime's content store,
    kept there while the context lasts, so the pull does not fetch them again (ContainerdImages,
    in agent.adapters.runtime.containerd). Best-effort: never fails the pull."""

    def seeded(
        self, image: str, documents: Sequence[tuple[str, bytes]]
    ) -> contextlib.AbstractAsyncContextManager[None]: ...


class Resolver(Protocol):
    """What reconciling needs of a registry (agent.adapters.registry.client.RegistryClient)."""

    async def head_digest(self, ref: Reference) -> tuple[str, str]: ...
    async def resolve(self, ref: Reference, platform: Platform) -> Resolution: ...
    async def fetch_manifest(self, ref: Reference, target: str | None = None) -> Manifest: ...
    async def blob_range(self, ref: Reference, digest: str, byte_range: str) -> bytes | None: ...
    async def serves_range(self, ref: Reference, digest: str) -> bool | None: ...


class Status(StrEnum):
    """What became of one image in a pass."""

    HIT = "hit"
    PULLED = "pulled"
    BOUND = "bound"
    """The content was present; the tag was pointed at it."""
    SKIPPED = "skipped"
    """Listed for other platforms."""
    REFUSED = "refused"
    """The content is not for this node's platform; nothing was pulled."""
    DEFERRED = "deferred"
    """Not pulled yet: it would take the image filesystem past the disk budget (engine.disk), or
    its new content waits for this node's moment in a rollout (agent.core.engine.rollout)."""
    FAILED = "failed"


class Deferral(StrEnum):
    """Why an image was not pulled yet."""

    DISK_BUDGET = "disk budget"
    """It would take the image filesystem past the budget: until room appears."""
    ROLLOUT = "rollout"
    """Its new content waits for this node's moment in a rollout."""


@dataclasses.dataclass(slots=True)
class Outcome:
    """Built once per image per pass and never changed (dataclasses.replace makes a new one);
    not frozen, as a frozen dataclass's __init__ costs 5x and lists run to thousands."""

    entry: ImageEntry
    status: Status
    detail: str = ""
    digest: str | None = None
    image_id: str | None = None
    size: int = 0
    seconds: float = 0.0
    drift: bool = False
    action: Action | None = None
    """What the plan said to do; None when the image failed before it could be planned."""
    pinned: bool = False
    """The runtime reports the image pinned against kubelet's image GC."""
    pull_attempted: bool = False
    """A PullImage call was made for it in this pass (what pull metrics count)."""
    permanent: bool = False
    """Failed or refused in a way no retry fixes (not found, denied, wrong platform), or
    deferred until an operator makes room: readiness does not wait for it."""
    deferred: Deferral | None = None
    """Why it was deferred (DEFERRED only)."""

    @property
    def converged(self) -> bool:
        return self.status not in (Status.FAILED, Status.REFUSED, Status.DEFERRED)

    @property
    def was_absent(self) -> bool:
        """The node did not have this image at all (as opposed to a moved tag)."""
        return self.action is Action.PULL and not self.drift
