"""`lock`, `resolve` and `check`: the list against the registries, touching no node."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent.cli.common import (
    EXIT_CONVERGED,
    EXIT_NOT_CONVERGED,
    credential_files,
    hosts_dir_of,
    load_wiring,
    platform_arg,
    print_document,
    write_atomically,
)
from agent.core.errors import AgentError, InputError
from agent.core.files import read_text
from agent.core.images import platform as platforms
from agent.core.images import reference as references
from agent.core.images.manifest import Resolution
from agent.core.lists import config as configs
from agent.core.lists.config import ImageEntry, Kind, PreloadConfig, RegistrySettings
from agent.core.lists.credentials import CredentialFiles
from agent.core.text import fit
from agent.preload.lock import kubelet_allowlist, lock_text, locked_reference, resolve_tags
from agent.preload.lock import stale as lock_problems


async def lock(args: argparse.Namespace) -> int:
    wiring = load_wiring()

    config = configs.load(args.config)
    credentials = credential_files(config).lookup
    # Bad input is exit 2 before any registry is asked: `--check` needs a readable lock.
    if args.check and args.output is None:
        raise InputError(
            "lock --check compares the list with its lock: name the lock with --output-file"
        )
    locked = configs.load(args.output) if args.check else None
    async with wiring.registry_client(
        config.registry, hosts_dir_of(args), credentials, concurrency=args.concurrency
    ) as registry:
        results = await resolve_tags(
            registry, config.images, args.concurrency, pinned_too=args.check
        )
    tags = list(results)
    failures = {e: r for e, r in results.items() if isinstance(r, AgentError)}
    digests = {e: r for e, r in results.items() if isinstance(r, str)}
    if args.format != "text":
        return _lock_json(args, config, digests, failures, locked)
    for entry, error in failures.items():
        print(f"failed   {entry.written}  (line {entry.line}): {error}", file=sys.stderr)
    if failures:
        print(
            f"lock not written: {len(failures)} of {len(tags)} tags did not resolve",
            file=sys.stderr,
        )
        return EXIT_NOT_CONVERGED
    if locked is not None:
        return _check_lock(args.output, config, digests, locked)
    text, tags_locked = _lock_text(args.config, config, digests)
    if args.output is None:
        sys.stdout.write(text)
    else:
        write_atomically(args.output, text)
        kept = len(config.images) - tags_locked
        print(f"locked {tags_locked} tags, kept {kept} pinned: {args.output}")
    _write_allowlist(args, config)
    return EXIT_CONVERGED


def _lock_text(
    source: Path, config: PreloadConfig, digests: dict[ImageEntry, str]
) -> tuple[str, int]:
    """The lock of `source` (its comments and order kept), and how many tags it pins."""
    unpinned = {e: d for e, d in digests.items() if e.reference.digest is None}
    return lock_text(read_text(source), config, unpinned), len(unpinned)


def _write_allowlist(args: argparse.Namespace, config: PreloadConfig) -> None:
    """`--kubelet-allowlist`: written beside the lock, without the images the list has
    credentials for (unless --public names them); said on stderr (stdout may be the lock)."""
    path: Path | None = args.kubelet_allowlist
    if path is None:
        return
    public = {references.parse(name).name for name in args.public}
    files = credential_files(config)
    private = sorted(
        {
            entry.reference.name
            for entry in config.images
            if entry.reference.name not in public and files.lookup(entry.reference)
        }
    )
    write_atomically(path, kubelet_allowlist(config.images, private))
    allowed = len({entry.reference.name for entry in config.images}) - len(private)
    print(f"allowlisted {allowed} images for kubelet: {path}", file=sys.stderr)
    if private:
        print(
            fit(
                f"left out {len(private)} private images (the list has credentials for them; "
                f"--public IMAGE to allow one): {', '.join(private)}"
            ),
            file=sys.stderr,
        )


def _lock_json(
    args: argparse.Namespace,
    config: PreloadConfig,
    digests: dict[ImageEntry, str],
    failures: dict[ImageEntry, AgentError],
    locked: PreloadConfig | None,
) -> int:
    """`lock -o json` (or yaml): the lock's outcome as one document; the lock file is written (or
    checked) exactly as in text mode, but never printed."""
    problems = lock_problems(config.images, digests, locked.images) if locked else []
    written = not failures and locked is None and args.output is not None
    if written:
        write_atomically(args.output, _lock_text(args.config, config, digests)[0])
    if not failures and locked is None:
        _write_allowlist(args, config)
    images = []
    for entry in config.images:
        digest = entry.reference.digest or digests.get(entry)
        error = failures.get(entry)
        images.append(
            {
                "image": entry.written,
                "line": entry.line,
                "digest": None if error else digest,
                "locked": _locked_as(entry, digest) if digest and not error else None,
                "error": str(error) if error else None,
            }
        )
    print_document(
        args,
        {
            "lock": str(args.output) if args.output else None,
            "written": written,
            "check": locked is not None,
            "current": None if locked is None or failures else not problems,
            "problems": problems,
            "images": images,
        },
    )
    return EXIT_NOT_CONVERGED if failures or problems else EXIT_CONVERGED


def _locked_as(entry: ImageEntry, digest: str) -> str:
    """What the lock says for `entry`: a pinned entry as written, a tag with its digest."""
    return entry.written if entry.reference.digest else locked_reference(entry, digest)


def _check_lock(
    path: Path, config: PreloadConfig, now: dict[ImageEntry, str], locked: PreloadConfig
) -> int:
    """`lock --check`: does the lock file still pin what the list and the registry say?"""
    problems = lock_problems(config.images, now, locked.images)
    for problem in problems:
        print(f"stale    {problem}")
    if problems:
        print(f"{path} is stale: {len(problems)} entries differ; run lock again")
        return EXIT_NOT_CONVERGED
    print(f"{path} is current: {len(config.images)} entries, every tag where it was locked")
    return EXIT_CONVERGED


async def resolve(args: argparse.Namespace) -> int:
    wiring = load_wiring()

    ref = references.parse(args.image)
    node = platform_arg(args.platform) or platforms.detect()  # no runtime to ask here
    config: PreloadConfig | None = configs.load(args.config) if args.config else None

    def settings(host: str) -> RegistrySettings:
        if args.insecure and host == ref.domain:
            return RegistrySettings(insecure=True)
        return config.registry(host) if config else RegistrySettings()

    files = credential_files(config) if config else CredentialFiles(())
    async with wiring.registry_client(settings, hosts_dir_of(args), files.lookup) as registry:
        resolution = await registry.resolve(ref, node)
    if args.format == "text":
        _print_resolution(ref, resolution)
    refusal = resolution.refusal()
    chosen = None if refusal or resolution.chosen is None else resolution.chosen.digest
    if args.format != "text":
        print_document(
            args,
            {
                "reference": str(ref),
                "digest": resolution.digest,
                "media_type": resolution.media_type,
                "platforms": [str(p) for p in resolution.offered],
                "pinned": str(resolution.reference),
                "platform": str(node),
                "platform_digest": chosen,
                "refusal": refusal or None,
            },
        )
        return EXIT_CONVERGED if chosen else EXIT_NOT_CONVERGED
    if chosen is None:
        print(f"{node!s:<10} none: {refusal}")
        return EXIT_NOT_CONVERGED
    print(f"{node!s:<10} {chosen}")
    return EXIT_CONVERGED


def _print_resolution(ref: references.Reference, resolution: Resolution) -> None:
    print(f"reference  {ref}")
    print(f"digest     {resolution.digest}")
    print(f"type       {resolution.media_type}")
    print(f"platforms  {platforms.describe(resolution.offered)}")
    print(f"pinned     {resolution.reference}")


async def check(args: argparse.Namespace) -> int:
    config = configs.load(args.config)
    credential_files(config)  # each pull secret read and parsed: a bad one is exit 2
    endpoints = load_wiring().endpoints(config.registry, hosts_dir_of(args))
    for entry in config.images:
        endpoints(entry.reference)  # each registry's hosts.toml read and parsed
    if not config.images:
        # Parses, but preloads nothing: not what anyone checking a list meant.
        raise InputError(f"{args.config}: lists no images: a pass would preload nothing")
    kinds = {kind: sum(e.kind is kind for e in config.images) for kind in Kind}
    print(
        f"{args.config}: valid: {len(config.images)} images ({kinds[Kind.TAG]} by tag, "
        f"{kinds[Kind.PINNED]} pinned, {kinds[Kind.DIGEST]} by digest), "
        f"{len(config.registries)} registries, {len(config.credentials)} pull secrets"
    )
    if kinds[Kind.TAG]:
        print(
            f"note: {kinds[Kind.TAG]} entries follow a tag, which can move under the nodes; "
            "`prepull-agent lock` pins them"
        )
    return EXIT_CONVERGED
