"""`from-manifests` and `suggest`: preload lists written from workloads or from what a node runs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from agent.cli.common import EXIT_CONVERGED, emit, load_wiring
from agent.core.errors import InputError
from agent.core.files import read_text
from agent.core.lists import yamlsafe
from agent.preload import generate


async def from_manifests(args: argparse.Namespace) -> int:
    documents: list[Any] = []
    for source, text in _manifest_texts(args.paths):
        documents += yamlsafe.documents(text, source)
    found = generate.from_manifests(documents)
    for image, users in found.mutable().items():
        policies = ", ".join(sorted(found.policies.get(image, ())))
        print(
            f"warning: {image} is kept by a mutable tag ({policies}): each node keeps whatever "
            f"the tag meant when it first pulled it; lock the list and put the digest in "
            f"{_users(users)}",
            file=sys.stderr,
        )
    for image, users in found.always.items():
        print(
            f"note: {image} is left out: pulled on every start (imagePullPolicy Always) by "
            f"{_users(users)}",
            file=sys.stderr,
        )
    for problem in found.invalid:
        print(f"warning: left out, not an image reference: {problem}", file=sys.stderr)
    sources = ", ".join(str(p) for p in args.paths)
    text = generate.render_list(
        ((image, _users(users)) for image, users in found.keep.items()),
        f"From {sources} by prepull-agent from-manifests: the images workloads keep\n"
        "(IfNotPresent, Never). Lock it before use: prepull-agent lock --config <this file>",
    )
    emit(args.output, text, args.format)
    return EXIT_CONVERGED


def _manifest_texts(paths: Sequence[str]) -> Iterator[tuple[str, str]]:
    """(source, text) of every manifest file under `paths` ("-": stdin), in name order."""
    for given in paths:
        if given == "-":
            yield "<stdin>", sys.stdin.read()
            continue
        path = Path(given)
        if path.is_dir():
            files = sorted(
                p for p in path.rglob("*") if p.suffix in (".yaml", ".yml", ".json") and p.is_file()
            )
        else:
            files = [path]
        for file in files:
            try:
                yield str(file), read_text(file)
            except OSError as exc:
                raise InputError(f"{file}: cannot read: {exc}") from exc


def _users(users: Sequence[str]) -> str:
    more = f" and {len(users) - 3} more" if len(users) > 3 else ""
    return ", ".join(users[:3]) + more


async def suggest(args: argparse.Namespace) -> int:
    wiring = load_wiring()
    async with wiring.runtime(args.cri_endpoint) as runtime:
        running = []
        seen: dict[str, Any] = {}
        for container in await runtime.cri.list_containers():
            volumes = await runtime.cri.mounted_images(container.id)
            for image_id, volume in [(container.image_id, False), *((v, True) for v in volumes)]:
                if image_id not in seen:
                    seen[image_id] = await runtime.cri.image_status(image_id)
                image = seen[image_id]
                if image is not None:
                    running.append(generate.Running(image.repo_tags, image.repo_digests, volume))
    text = generate.render_list(
        (
            (ref, _uses(containers, volumes))
            for ref, containers, volumes in generate.suggest(running)
        ),
        f"What {args.cri_endpoint} runs now, most used first, pinned to the digests running\n"
        "(prepull-agent suggest). Review it, then lock it: prepull-agent lock --config <file>",
    )
    emit(args.output, text, args.format)
    return EXIT_CONVERGED


def _uses(containers: int, volumes: int) -> str:
    said = [f"{containers} container{'' if containers == 1 else 's'}"] if containers else []
    if volumes:
        said.append(f"{volumes} image volume{'' if volumes == 1 else 's'}")
    return ", ".join(said)
