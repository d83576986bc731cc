"""`from-manifests`, `from-cluster` and `suggest`: preload lists written from workloads (their
manifests, or as the API server holds them) or from what a node runs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from agent.cli.common import EXIT_CONVERGED, EXIT_NOT_CONVERGED, emit, hosts_dir_of, load_wiring
from agent.core.errors import AgentError, InputError
from agent.core.files import read_text
from agent.core.lists import config as configs
from agent.core.lists import yamlsafe
from agent.core.text import fit
from agent.preload import cluster, generate
from agent.preload.lock import lock_text, resolve_tags


async def from_manifests(args: argparse.Namespace) -> int:
    documents: list[Any] = []
    for source, text in _manifest_texts(args.paths):
        documents += yamlsafe.documents(text, source)
    found = generate.from_manifests(documents)
    _warn(found)
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


WROTE, UNCHANGED, HELD = "wrote", "unchanged", "held"
"""What became of a list applied to a ConfigMap."""


async def from_cluster(args: argparse.Namespace) -> int:
    """The list of what the cluster's workloads keep, read through the API server; printed,
    written to a file, or applied to the ConfigMap the agents read (with --watch, kept so)."""
    _node_labels(args.node_selector)  # bad input first: exit 2 before the API is asked
    target = _configmap(args.configmap)
    if args.watch and target is None:
        raise InputError("--watch keeps a ConfigMap current: name it with --configmap")
    wiring = load_wiring()
    async with wiring.workloads_client(args.kubeconfig, args.context) as api:
        if args.watch:
            from agent.daemon.keeper import Keeper  # the keeper's metrics load only here

            assert target is not None
            return await Keeper(args, api, target, read_cluster, apply_list).run()
        text, _ = await read_cluster(args, api)
        if target is None:
            emit(args.output, text, args.format)
            return EXIT_CONVERGED
        done, _ = await apply_list(api, target, args.key, text, args.max_drop)
        return EXIT_NOT_CONVERGED if done == HELD else EXIT_CONVERGED


async def read_cluster(args: argparse.Namespace, api: Any) -> tuple[str, dict[str, str]]:
    """The list (locked with --lock) and the version each kind was read at (a watch of what
    changed since starts there)."""
    pool = _node_labels(args.node_selector)
    namespace = None if args.all_namespaces else args.namespace
    workloads = []
    versions: dict[str, str] = {}
    for kind in cluster.WORKLOAD_KINDS:
        listed = await api.workloads(kind, namespace, args.selector, args.field_selector)
        workloads += listed.items
        if listed.version:
            versions[kind] = listed.version
    served = await api.buffers(namespace, args.selector, args.field_selector)
    buffers = served.items if served is not None else []
    if served is not None and served.version:
        versions["CapacityBuffer"] = served.version
    resolved: dict[tuple[str, str], Any] = {}
    for buffer in buffers:
        ref = cluster.buffer_template(buffer)
        if ref is not None and ref not in resolved:
            resolved[ref] = await api.pod_template(*ref)
    text = _cluster_list(args, namespace, pool, workloads, buffers, resolved)
    if args.lock:
        text = await _locked(text, load_wiring(), hosts_dir_of(args))
    return text, versions


def _cluster_list(
    args: argparse.Namespace,
    namespace: str | None,
    pool: dict[str, str] | None,
    workloads: list[Any],
    buffers: list[Any],
    resolved: dict[tuple[str, str], Any],
) -> str:
    found_in = cluster.templates(workloads, buffers, {k: v for k, v in resolved.items() if v})
    for problem in found_in.skipped:
        print(f"warning: left out: {problem}", file=sys.stderr)
    found, where = cluster.found_images(found_in, pool)
    _warn(found)
    scope = "all namespaces" if namespace is None else f"namespace {namespace}"
    pool_said = f", nodes labelled {args.node_selector}" if pool is not None else ""
    return generate.render_list(
        (
            (image, _users(users) + _placed(where.get(image, [])))
            for image, users in found.keep.items()
        ),
        f"From the cluster ({scope}{pool_said}) by prepull-agent from-cluster: the images its\n"
        "workloads and capacity buffers keep (IfNotPresent, Never).\n"
        + ("Locked: tags resolved to digests.\n" if args.lock else "")
        + "Lock it before use: prepull-agent lock --config <this file>" * (not args.lock),
    )


async def apply_list(
    api: Any, target: tuple[str, str], key: str, text: str, max_drop: float
) -> tuple[str, str]:
    """`text` into the ConfigMap `target` unless it holds it already (UNCHANGED), or the
    change drops too much of the list at once (HELD: nothing written); what became of it and
    the sentence that says so (on stderr too)."""
    namespace, name = target
    current = await api.configmap_data(namespace, name, key)
    where = f"ConfigMap {namespace}/{name} ({key})"
    if current == text:
        done, said = UNCHANGED, f"unchanged: {where} holds this list already"
    elif (reason := cluster.held(current, text, max_drop)) is not None:
        done, said = HELD, f"{where} not written, {reason}; --max-drop 100 writes it"
    else:
        added, gone = cluster.dropped(current, text)
        await api.apply_configmap(namespace, name, key, text)
        added_said = f" (new: {', '.join(added[:5])})" if added else ""
        done, said = WROTE, f"wrote {where}: +{len(added)} -{len(gone)} images{added_said}"
    print(fit(said), file=sys.stderr, flush=True)
    return done, said


def _configmap(text: str | None) -> tuple[str, str] | None:
    if text is None:
        return None
    namespace, sep, name = text.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise InputError(f"--configmap: {text!r} is not NAMESPACE/NAME")
    return namespace, name


def _node_labels(text: str | None) -> dict[str, str] | None:
    if text is None:
        return None
    try:
        return cluster.parse_labels(text)
    except ValueError as exc:
        raise InputError(f"--node-selector: {exc}") from None  # the value is named: enough


def _placed(placements: Sequence[cluster.Placement]) -> str:
    """`; on pool=gpu` when every workload of the image asks for nodes of those labels."""
    selectors = {tuple(sorted(p.node_selector.items())) for p in placements}
    if len(selectors) != 1 or not next(iter(selectors)):
        return ""
    return "; on " + ",".join(f"{k}={v}" for k, v in next(iter(selectors)))


async def _locked(text: str, wiring: Any, hosts_dir: Path | None) -> str:
    """`text` with every tag resolved to the digest it names now (as `lock` does); bad input
    naming the entries that did not resolve."""
    config = configs.parse(text, "<from-cluster>")
    async with wiring.registry_client(config.registry, hosts_dir) as registry:
        results = await resolve_tags(registry, config.images)
    failures = {e: r for e, r in results.items() if isinstance(r, AgentError)}
    if failures:
        said = "; ".join(f"{e.written}: {r}" for e, r in list(failures.items())[:5])
        raise InputError(f"--lock: {len(failures)} tags did not resolve ({said})")
    digests = {e: r for e, r in results.items() if isinstance(r, str)}
    return lock_text(text, config, digests)


def _warn(found: generate.Found) -> None:
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
