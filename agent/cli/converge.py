"""`once` and `run`: converge this node once, or keep it converged as a daemon."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from agent.cli.common import (
    EXIT_CONVERGED,
    EXIT_NOT_CONVERGED,
    credential_files,
    digests_for,
    hosts_dir_of,
    load_wiring,
    log,
    platform_arg,
    print_document,
)
from agent.cli.live import LiveDisplay
from agent.cli.pins import released_line
from agent.core.engine.claims import Released, owner_of
from agent.core.engine.plan import Action, NodeImage, Step
from agent.core.errors import InputError
from agent.core.images.platform import Platform
from agent.core.images.reference import Reference
from agent.core.lists import config as configs
from agent.core.lists.config import PreloadConfig
from agent.core.ports import Outcome, Status
from agent.core.reports.progress import Progress, format_bytes
from agent.core.reports.status import NodeReport
from agent.core.text import fit
from agent.daemon.settings import DaemonSettings, GateSettings, parse_listen

if TYPE_CHECKING:
    from agent.core.lists.credentials import Credential
    from agent.core.ports import Resolver
    from agent.wiring import NodeRuntime


# `once`: how often pulls in flight are redrawn on a terminal, looked at for -v otherwise, and
# how often -v logs a pull still running.
LIVE_INTERVAL = 0.5


PROGRESS_INTERVAL = 2.0


PROGRESS_LOG_SECONDS = 10.0


async def once(args: argparse.Namespace) -> int:
    wiring = load_wiring()
    owner = owner_of(args.owner, str(args.config))

    async with (
        wiring.runtime(args.cri_endpoint) as runtime,
        wiring.early_listing(runtime) as listing,
    ):
        config = await asyncio.to_thread(configs.load, args.config)
        files = credential_files(config)
        # Bad input is exit 2 before anything but that listing has asked the runtime.
        override = platform_arg(args.platform)
        info = await runtime.meet()
        node = await runtime.node(override)
        log.info("runtime %s %s (CRI %s), node %s", info.name, info.version, info.api_version, node)
        for note in runtime.features.limitations():
            log.warning("%s", note)
        async with wiring.registry_client(
            config.registry, hosts_dir_of(args), files.lookup
        ) as registry:
            if args.dry_run:
                reconciler = runtime.reconciler(registry, node, files.lookup, owner=owner)
                return _print_plan(await reconciler.plan(config, listing), args)
            outcomes, released = await _converge_once(
                args, config, runtime, registry, node, files.lookup, listing, owner
            )
    failed = [o for o in outcomes if not o.converged]
    ready = ready_by_the_rule(node, config, outcomes, strict=args.strict)
    code = EXIT_CONVERGED if ready else EXIT_NOT_CONVERGED
    if args.format != "text":
        print_document(
            args,
            {
                "node": str(node),
                "ready": ready,
                "converged": not failed,
                "images": [outcome_document(o) for o in outcomes],
                "owner": owner,
                "released_pins": [r.name for r in released if not r.kept_by],
                "kept_pins": {r.name: list(r.kept_by) for r in released if r.kept_by},
            },
        )
        return code
    for r in released:  # with --no-headers, stdout holds the image rows and nothing else
        print(released_line(r), file=sys.stderr if args.no_headers else sys.stdout)
    counts = {
        s: sum(o.status == s for o in outcomes)
        for s in (Status.HIT, Status.PULLED, Status.BOUND, Status.SKIPPED)
    }
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    if args.no_headers:
        return code
    if failed:
        others = f" ({summary})" if summary else ""
        said = _not_converged(failed, len(outcomes))
        if ready:
            print(f"ready on {node}: {said} for good, not waited for{others}; --strict waits")
        else:
            print(f"not converged on {node}: {said}{others}")
        return code
    images = "image" if len(outcomes) == 1 else "images"
    print(f"converged on {node}: {len(outcomes)} {images} ({summary or 'none listed'})")
    return code


def ready_by_the_rule(
    node: Platform, config: PreloadConfig, outcomes: Sequence[Outcome], *, strict: bool
) -> bool:
    """Whether the node is ready after this pass by the daemon's own rule (the one
    definition: core.reports.status.NodeReport.ready): what failed for good, or was refused for
    this platform, is reported and not waited for, unless `strict`."""
    report = NodeReport(node, strict=strict)
    report.configure(config.images)
    report.record(outcomes, time.time())
    return report.ready


def _not_converged(outcomes: Sequence[Outcome], total: int) -> str:
    """`1 of 4 failed`, `2 of 5 deferred, 1 failed`: a deferral (disk budget, rollout moment) is
    not a failure, and is not counted as one."""
    kinds = [(s, sum(o.status is s for o in outcomes)) for s in NOT_CONVERGED]
    (first, count), *rest = [(s, n) for s, n in kinds if n]
    return ", ".join([f"{count} of {total} {first}", *(f"{n} {s}" for s, n in rest)])


# In the order a summary names them.
NOT_CONVERGED = (Status.FAILED, Status.REFUSED, Status.DEFERRED)


async def _converge_once(
    args: argparse.Namespace,
    config: PreloadConfig,
    runtime: NodeRuntime,
    registry: Resolver,
    node: Platform,
    credentials: Callable[[Reference], Sequence[Credential]],
    listed: Awaitable[list[NodeImage]],
    owner: str,
) -> tuple[list[Outcome], list[Released]]:
    """One pass, printing each image's line as soon as it is done. On a terminal, the pulls in
    flight are drawn below the results (bytes so far, rate) and redrawn; with -v, a pull still
    running logs how far it has got every PROGRESS_LOG_SECONDS. Returns the outcomes and the
    records whose pins this agent took back (they left the list)."""
    show = digests_for(args)
    width = max((len(show(e.written)) for e in config.images), default=0)
    text = args.format == "text"
    live = text and sys.stdout.isatty()
    verbose = log.isEnabledFor(logging.INFO)
    progress = Progress() if live or verbose else None
    display = LiveDisplay(sys.stdout, progress, show) if progress and live else None

    def on_outcome(outcome: Outcome) -> None:
        if display is not None:
            display.result(format_outcome(outcome, width, show))
        elif text:
            print(format_outcome(outcome, width, show), flush=True)

    def on_tick() -> None:
        assert progress is not None
        if display is not None:
            display.redraw()
        for view in progress.due(PROGRESS_LOG_SECONDS) if verbose else ():
            log.info("%s: pulling, %s", view.image, view.describe())

    reconciler = runtime.reconciler(
        registry,
        node,
        credentials,
        owner=owner,
        on_start=lambda entry: log.info("%s: started", entry.written),
        progress=progress,
    )
    if progress is None:
        return await reconciler.converge(config, on_outcome, listed), reconciler.released
    interval = LIVE_INTERVAL if live else PROGRESS_INTERVAL
    following = asyncio.create_task(runtime.follow_pulls(progress, interval, on_tick))
    try:
        return await reconciler.converge(config, on_outcome, listed), reconciler.released
    finally:
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following
        if display is not None:
            display.close()


def _print_plan(plan: Sequence[Step | Outcome], args: argparse.Namespace) -> int:
    """`once --dry-run`: one line per image, what a pass would do; 0 if nothing (DRY_RUN_EXITS)."""
    show = digests_for(args)
    width = max((len(show(item.entry.written)) for item in plan), default=0)
    for item in plan:
        if isinstance(item, Outcome):
            print(format_outcome(item, width, show))
            continue
        what = item.pull_ref if item.action is Action.PULL else item.bind_tag
        parts = [f"{item.action.value:<8}", show(item.entry.written).ljust(width)]
        if what and what != item.entry.written and item.action is not Action.HIT:
            parts.append(show(what))
        print("  ".join([*parts, f"({show(item.reason)})"]))
    return EXIT_CONVERGED if all(_idle(item) for item in plan) else EXIT_NOT_CONVERGED


def _idle(item: Step | Outcome) -> bool:
    """Nothing for a pass to do: present, skipped, or refused (never pulled, and refused again);
    a check that failed could not tell, so it is not idle."""
    if isinstance(item, Outcome):
        return item.status is Status.REFUSED
    return item.action in (Action.HIT, Action.SKIP)


def format_outcome(
    outcome: Outcome, width: int = 0, show: Callable[[str], str] = lambda text: text
) -> str:
    """One line per image: status, the reference as written (padded to `width`), what the
    node holds, and why; `show` shortens digests for a terminal."""
    entry = outcome.entry
    parts = [f"{outcome.status:<8}", show(entry.written).ljust(width)]
    # The digest the node holds, unless the reference as written already says it.
    held = "" if f"@{outcome.digest}" in entry.written else show(str(outcome.digest))
    if outcome.status == Status.PULLED:
        size = format_bytes(outcome.size)
        parts.append(f"{held}  {size} in {outcome.seconds:.1f}s".lstrip())
    elif outcome.status in (Status.HIT, Status.BOUND) and held:
        parts.append(held)
    if outcome.status != Status.HIT and outcome.detail:
        detail = fit(show(outcome.detail))
        parts.append(f"({detail})" if outcome.status != Status.FAILED else detail)
    return "  ".join(parts).rstrip()


def outcome_document(outcome: Outcome) -> dict[str, object]:
    """One image in `-o json`: stable field names (README, "Output for scripts")."""
    return {
        "image": outcome.entry.written,
        "line": outcome.entry.line,
        "status": str(outcome.status),
        "digest": outcome.digest,
        "image_id": outcome.image_id,
        "bytes": outcome.size,
        "seconds": round(outcome.seconds, 3),
        "pinned": outcome.pinned,
        "permanent": outcome.permanent,
        "detail": outcome.detail or None,
    }


async def run(args: argparse.Namespace) -> int:
    try:
        listen = parse_listen(args.listen)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    settings = DaemonSettings(
        config_path=args.config,
        endpoint=args.cri_endpoint,
        node=platform_arg(args.platform),
        listen=listen,
        shutdown_grace=args.shutdown_grace,
        hosts_dir=hosts_dir_of(args),
        watch_interval=args.watch_interval,
        container_scan_interval=args.container_scan_interval,
        strict_readiness=args.strict_readiness,
        progress_log_interval=args.progress_log_interval,
        node_name=args.node_name or os.environ.get("NODE_NAME") or socket.gethostname(),
        owner=owner_of(
            args.owner or os.environ.get("PREPULL_OWNER"),
            str(args.config),
            pod_name=os.environ.get("POD_NAME", ""),
            pod_namespace=os.environ.get("POD_NAMESPACE", ""),
        ),
        converge_deadline=args.converge_deadline,
        gate=_gate_settings(args),
        containerd_config=args.containerd_config,
        kubelet_config=args.kubelet_config,
        multi_tenant=args.multi_tenant,
    )
    wiring = load_wiring()  # as for every verb: what start-up loaded is not rescanned
    # A file named on the command line must be there and parse: exit 2 now, not a warning.
    if args.containerd_config is not None:
        wiring.check_config(args.containerd_config)
    if args.kubelet_config is not None:
        wiring.kubelet_checkup(args.kubelet_config, None)
    # The daemon's web server and Prometheus code load only for `run`.
    from agent.daemon.app import Daemon

    gc.freeze()  # the daemon's own modules too
    return await Daemon(settings, wiring).run()


def _gate_settings(args: argparse.Namespace) -> GateSettings | None:
    """The readiness gate's settings, None if not asked for; InputError (exit 2) if asked for
    without what it needs."""
    wanted = args.node_condition or args.remove_startup_taint is not None
    if not wanted:
        if args.ready_timeout is not None:
            raise InputError("--ready-timeout applies to --remove-startup-taint; give both")
        if args.impersonate_node:
            raise InputError("--impersonate-node applies to --node-condition; give both")
        return None
    if args.impersonate_node and args.remove_startup_taint is not None:
        raise InputError(
            "--impersonate-node cannot go with --remove-startup-taint: a node may not change "
            "its own taints (the NodeRestriction admission plugin refuses it); with "
            "impersonation, let the Node Readiness Controller remove the taint"
        )
    access = load_wiring().cluster_access(
        args.node_name,
        args.kube_api,
        args.kube_token_file,
        args.kube_ca_file,
        args.events_namespace,
        args.impersonate_node,
    )
    return GateSettings(
        access,
        args.node_condition,
        args.remove_startup_taint,
        args.ready_timeout,
        events=args.node_events,
    )
