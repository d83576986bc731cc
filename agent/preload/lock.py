"""Locking a preload list: resolve every tag to its current digest, concurrently, and write the
lock — the list itself with each tag pinned (comments and order kept), or a fresh rendering."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Protocol

import yaml

from agent.core.errors import AgentError, ConfigError
from agent.core.images.reference import Reference
from agent.core.lists.config import (
    DEFAULT_DISK_BUDGET,
    ImageEntry,
    Kind,
    PreloadConfig,
    RegistrySettings,
    format_duration,
    parse,
    written_tag,
)

DEFAULT_CONCURRENCY = 16
"""HEADs in flight to one registry: cheap for a registry, and hundreds of tags lock in seconds."""
MAX_CONCURRENCY = 256


class TagResolver(Protocol):
    async def head_digest(self, ref: Reference) -> tuple[str, str]: ...


async def resolve_tags(
    registry: TagResolver,
    entries: Iterable[ImageEntry],
    concurrency: int = DEFAULT_CONCURRENCY,
    *,
    pinned_too: bool = False,
) -> dict[ImageEntry, str | AgentError]:
    """The digest the tag of every unpinned entry (with `pinned_too`, of pinned ones as well)
    names now, or the error that kept it from resolving."""
    limit = asyncio.Semaphore(concurrency)

    async def pin(entry: ImageEntry) -> str | AgentError:
        ref = entry.reference
        async with limit:
            try:
                digest, _ = await registry.head_digest(Reference(ref.domain, ref.path, ref.tag))
                return digest
            except AgentError as exc:
                return exc

    def wanted(entry: ImageEntry) -> bool:
        if entry.reference.digest is None:
            return True
        return pinned_too and entry.kind is Kind.PINNED

    tags = [e for e in entries if wanted(e)]
    results = await asyncio.gather(*(pin(e) for e in tags))
    return dict(zip(tags, results, strict=True))


def stale(
    listed: Sequence[ImageEntry], now: Mapping[ImageEntry, str], locked: Sequence[ImageEntry]
) -> list[str]:
    """Why a lock no longer serves its list, one line per entry (empty: it does). `now` holds
    the digest each tag of the list names in the registry today (pinned entries' tags too)."""
    problems = []
    in_lock = {_key(e.reference): e for e in locked}
    for entry in listed:
        ref = entry.reference
        lock_entry = in_lock.pop(_key(ref), None)
        if entry.kind is Kind.PINNED and now.get(entry) not in (None, ref.digest):
            problems.append(
                f"{entry.written} (line {entry.line}): the tag moved in the registry to "
                f"{now[entry]}"
            )
            continue
        expected = ref.digest or now.get(entry)
        if lock_entry is None:
            problems.append(f"{entry.written} (line {entry.line}): not in the lock")
        elif lock_entry.reference.digest != expected:
            problems.append(
                f"{entry.written} (line {entry.line}): the lock has "
                f"{lock_entry.reference.digest}, the registry {expected}"
            )
    for lock_entry in in_lock.values():
        problems.append(
            f"{lock_entry.written} (lock line {lock_entry.line}): in the lock, not in the list"
        )
    return problems


def _key(ref: Reference) -> tuple[str, str | None, str | None]:
    """How a list entry and its lock entry are matched: by name and tag (a digest-only entry,
    which has no tag, by its digest)."""
    return (ref.name, ref.tag, None) if ref.tag is not None else (ref.name, None, ref.digest)


LOCK_HEADER = "# Locked from {source} by prepull-agent lock: tags pinned to their digests.\n"


def lock_text(text: str, config: PreloadConfig, digests: Mapping[ImageEntry, str]) -> str:
    """The list's own `text` with every tag entry pinned where it stands: the user's comments,
    order and layout kept. If an entry cannot be found on its line (a reference split over
    lines, say), or the result would not read back as the same list pinned, the list is
    written afresh instead (render_lock)."""
    lines = text.splitlines(keepends=True)
    for entry in config.images:
        if entry.reference.digest is not None:
            continue
        # The reference as a whole word: `app:1` must not match inside `app:1.2`.
        pattern = re.compile(rf"(?<![\w.:@/-]){re.escape(entry.written)}(?![\w.:@/-])")
        pinned = locked_reference(entry, digests[entry])
        lines[entry.line - 1], found = pattern.subn(pinned, lines[entry.line - 1], count=1)
        if not found:
            return render_lock(config, digests)
    body = "".join(lines)
    already = body.startswith(LOCK_HEADER.partition("{")[0])
    locked = body if already else LOCK_HEADER.format(source=config.source) + body
    try:
        again = parse(locked, config.source)
    except ConfigError:
        return render_lock(config, digests)
    expected = [
        e.reference.pinned(digests[e]) if e.reference.digest is None else e.reference
        for e in config.images
    ]
    if [e.reference for e in again.images] != expected:
        return render_lock(config, digests)
    return locked


def locked_reference(entry: ImageEntry, digest: str) -> str:
    """The entry as a lock writes it: as written, with the digest its tag names."""
    # A bare name means :latest to kubelet; write it so the tag survives the pin.
    return f"{entry.written}{'' if written_tag(entry.written) else ':latest'}@{digest}"


def kubelet_allowlist(entries: Sequence[ImageEntry], private: Collection[str] = ()) -> str:
    """A KubeletConfiguration fragment that lets pods use these images as preloaded when kubelet
    verifies pull credentials (KEP-2535: imagePullCredentialsVerificationPolicy,
    preloadedImagesVerificationAllowlist), leaving out the `private` ones (names): allowlisted,
    an image is usable by every pod on the node without its pull secret. Each entry is the name
    as kubelet normalizes it, without tag or digest: the only form its allowlist accepts
    (kubernetes pkg/kubelet/images/pullmanager/image_pull_policies.go)."""
    names = sorted({entry.reference.name for entry in entries} - set(private))
    document = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "imagePullCredentialsVerificationPolicy": "NeverVerifyAllowlistedImages",
        "preloadedImagesVerificationAllowlist": names,
    }
    header = (
        "# Merge into each node's kubelet configuration: the images prepull-agent preloads need\n"
        "# no pull credentials to be used (generated by prepull-agent lock). Kubelet 1.36 and\n"
        "# later match a pod's image by this normalized name; before 1.36 an entry matched only a\n"
        "# pod image written exactly as the entry, without a tag (kubernetes PR #137629).\n"
    )
    left_out = sorted(set(private) & {entry.reference.name for entry in entries})
    if left_out:
        header += (
            "# Left out, private (the list has credentials for them; pods show their own pull\n"
            f"# secret): {', '.join(left_out)}\n"
        )
    return header + yaml.safe_dump(document, sort_keys=False, default_flow_style=False)


def render_lock(config: PreloadConfig, digests: Mapping[ImageEntry, str]) -> str:
    """The config with every tag entry pinned to `digests[entry]`: itself a valid preload list."""
    images: list[object] = []
    for entry in config.images:
        written = entry.written
        if entry.reference.digest is None:
            written = locked_reference(entry, digests[entry])
        if entry.platforms:
            images.append({"image": written, "platforms": [str(p) for p in entry.platforms]})
        else:
            images.append(written)
    document: dict[str, object] = {"images": images}
    if config.registries:
        document["registries"] = {
            host: _registry_document(settings) for host, settings in config.registries.items()
        }
    if config.credentials:
        document["credentials"] = list(config.credentials)
    document["concurrency"] = config.concurrency
    document["resync"] = format_duration(config.resync_seconds)
    document["pin"] = config.pin
    if config.max_disk_usage_percent != DEFAULT_DISK_BUDGET:
        document["maxDiskUsagePercent"] = config.max_disk_usage_percent
    if config.rollout_spread:
        rollout: dict[str, object] = {"spread": format_duration(config.rollout_spread)}
        if config.rollout_spread_first_fill:
            rollout["spreadFirstFill"] = True
        document["rollout"] = rollout
    header = LOCK_HEADER.format(source=config.source)
    return header + yaml.safe_dump(document, sort_keys=False, default_flow_style=False)


def _registry_document(settings: RegistrySettings) -> dict[str, object]:
    document: dict[str, object] = {"insecure": settings.insecure}
    if settings.ca:
        document["ca"] = settings.ca
    if settings.mirrors:
        document["mirrors"] = list(settings.mirrors)
    if settings.concurrency:
        document["concurrency"] = settings.concurrency
    return document
