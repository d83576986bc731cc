"""One pull as the agent makes it: with each credential that matches the image in turn, as
kubelet does (anonymously if none), and with the documents its platform check already read put
in the runtime's store beforehand, so the pull does not fetch them again."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

from agent.core.errors import ImageError
from agent.core.images.manifest import Resolution
from agent.core.images.reference import Reference
from agent.core.lists.config import ImageEntry
from agent.core.lists.credentials import Credential
from agent.core.ports import ContentSeeder, ImageRuntime


class Puller:
    def __init__(
        self,
        runtime: ImageRuntime,
        credentials: Callable[[Reference], Sequence[Credential]],
        seeder: ContentSeeder | None,
    ) -> None:
        self._runtime = runtime
        self._credentials = credentials
        self._seeder = seeder
        """Where the documents a check read are put for the pull (containerd's store)."""

    async def pull(self, pull_ref: str, entry: ImageEntry) -> str:
        """Pull `pull_ref`; returns the image id."""
        candidates: list[Credential | None] = [*self._credentials(entry.reference)] or [None]
        for credential in candidates[:-1]:
            try:
                return await self._runtime.pull(pull_ref, credential)
            except ImageError:
                pass
        return await self._runtime.pull(pull_ref, candidates[-1])

    def seeded(
        self, entry: ImageEntry, resolution: Resolution
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """The check's documents in the runtime's store while the context lasts; enter it
        before taking a pull slot and leave it after giving the slot back: each write is a
        commit the runtime syncs to disk, measured at a third of a small image's pull when it
        was made within the slot. Containerd only; a failure there only costs the pull those
        GETs."""
        if self._seeder is None or not resolution.documents:
            return contextlib.nullcontext()
        return self._seeder.seeded(entry.written, resolution.documents)
