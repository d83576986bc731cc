"""`fleet` (and `kubectl prepull`): every node's preload state, read from each agent's /status
through the API server, one row per node and a summary across them."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from agent.cli.common import (
    EXIT_CONVERGED,
    EXIT_NOT_CONVERGED,
    digests_for,
    load_wiring,
    print_document,
    table_lines,
)
from agent.core.errors import KubeApiError
from agent.core.fleet import view as fleet
from agent.core.reports.progress import format_bytes
from agent.core.text import fit

if TYPE_CHECKING:
    from agent.wiring import FleetApi


async def fleet_view(args: argparse.Namespace) -> int:
    fleet_client = load_wiring().fleet_client
    async with fleet_client(args.kubeconfig, args.context, args.concurrency) as api:
        targets = await _targets(api, args)
        rows = await _read_all(api, args, targets)
    summary = fleet.summary(rows)
    if not rows:
        print("prepull-agent: no nodes to show (does the selector match any?)", file=sys.stderr)
    shown = [r for r in rows if not (args.not_ready and (r.ready or not r.targeted))]
    if args.format != "text":
        print_document(args, {"nodes": [r.to_json() for r in shown], "summary": summary})
    else:
        lists = (lambda d: d) if args.no_trunc else short_list
        text = format_fleet(shown, summary, digests_for(args), lists, not args.no_headers)
        if text:
            print(text)
    # Every node the agent's DaemonSet targets is ready (one that is never targeted counts not).
    targeted = summary["nodes"]
    return EXIT_CONVERGED if targeted and summary["ready"] == targeted else EXIT_NOT_CONVERGED


async def _targets(api: FleetApi, args: argparse.Namespace) -> list[fleet.Target]:
    """The nodes asked about (all, or those the label selector picks) and their agents."""
    pods = await api.pod_list(args.namespace, args.agent_selector)
    try:
        node_list: dict[str, Any] | None = await api.node_list(args.selector)
    except KubeApiError as exc:
        if exc.status != 403 or args.selector:
            raise
        # May read the agents but not list Nodes: the nodes the agents run on, said so.
        print(
            "prepull-agent: may not list nodes, so nodes without an agent pod are not shown",
            file=sys.stderr,
        )
        node_list = None
    nodes = fleet.nodes_of(node_list) if node_list is not None else None
    daemonsets = await _daemonsets(api, args, pods) if nodes is not None else None
    return fleet.targets(nodes, pods, args.port, daemonsets)


async def _daemonsets(
    api: FleetApi, args: argparse.Namespace, pods: dict[str, Any]
) -> list[Any] | None:
    """The agent's DaemonSets (labelled as its pods are, and those controlling its pods), to
    tell nodes it never targets; None, said on stderr, if they cannot be read: then every
    node counts."""
    try:
        listed: list[Any] = (await api.daemonset_list(args.namespace, args.agent_selector))["items"]
        known = {fleet.name_of(ds) for ds in listed}
        for name in fleet.daemonsets_of(pods):
            if name not in known:
                listed.append(await api.daemonset(args.namespace, name))
    except (KubeApiError, fleet.Malformed) as exc:
        print(
            f"prepull-agent: cannot read the agent's DaemonSets ({exc}), so every node counts",
            file=sys.stderr,
        )
        return None
    if not listed:
        print(
            f"prepull-agent: no DaemonSet in {args.namespace} matches {args.agent_selector}, so "
            "every node counts",
            file=sys.stderr,
        )
        return None
    return listed


async def _read_all(
    api: FleetApi, args: argparse.Namespace, targets: Sequence[fleet.Target]
) -> list[fleet.NodeRow]:
    """Each node's row: at most `--concurrency` asked at once, each given `--timeout`."""
    slots = asyncio.Semaphore(args.concurrency)

    async def read(target: fleet.Target) -> fleet.NodeRow:
        if target.why_not is not None or target.pod is None or target.port is None:
            return fleet.unanswered(target, target.why_not or "no agent pod on this node")
        async with slots:
            try:
                async with asyncio.timeout(args.timeout):
                    status = await api.agent_status(
                        args.namespace, target.pod, target.port, args.timeout
                    )
                return fleet.row(target, status)
            except TimeoutError:
                return fleet.unanswered(target, f"no answer in {args.timeout:g}s")
            except (KubeApiError, fleet.Malformed) as exc:
                return fleet.unanswered(target, str(exc))

    return list(await asyncio.gather(*(read(t) for t in targets)))


# -- the table ---------------------------------------------------------------------------------

COLUMNS = ("NODE", "READY", "IMAGES", "FAILING", "DEFERRED", "PULLING", "LIST", "DETAIL")


def format_fleet(
    rows: Sequence[fleet.NodeRow],
    summary: dict[str, Any],
    show: Callable[[str], str],
    lists: Callable[[str], str],
    headers: bool = True,
) -> str:
    """The rows as `kubectl get` prints a table, then the summary line (`headers` False: the
    rows only, for scripts). `show` writes image references, `lists` list digests."""
    lines = table_lines([COLUMNS, *(_cells(r, show, lists) for r in rows)], headers)
    if headers:
        lines.append(fit(summary_line(summary, show, lists), 4000))
    return "\n".join(lines)


def short_list(digest: str) -> str:
    """A list's digest names it, as a commit's short hash does: 12 hex digits tell lists apart
    in a table (`-o json` and --no-trunc give it whole)."""
    return digest[: len("sha256:") + 12] if digest.startswith("sha256:") else digest


def _cells(
    row: fleet.NodeRow, show: Callable[[str], str], lists: Callable[[str], str]
) -> tuple[str, ...]:
    if not row.answered:
        return (row.node, "?" if row.targeted else "-", "-", "-", "-", "-", "-", row.error or "")
    pulling = "-"
    if row.pulling:
        done, total = format_bytes(row.bytes_done), format_bytes(row.bytes_total)
        pulling = f"{row.pulling}: {done}/{total}" if row.bytes_total else f"{row.pulling}"
    served = lists(row.served_list) if row.served_list else "none"
    if row.list and row.list != row.served_list:
        served += f" → {lists(row.list)}"  # working toward a list it does not serve yet
    detail = row.error or ""
    converging = row.converging
    if converging is not None:
        overdue = ", OVERDUE" if converging.overdue else ""
        since = converging.since
        age = f" for {_age(time.time() - since)}" if since is not None else ""
        detail = f"converging {converging.present}/{converging.desired}{age}{overdue}"
    if row.failing:
        first = row.failing[0]
        more = f" (+{len(row.failing) - 1} more)" if len(row.failing) > 1 else ""
        detail = f"{show(first.image)}: {first.reason}{more}"
    return (
        row.node,
        "yes" if row.ready else "no",
        f"{row.images_ready}/{row.images_desired}",
        str(len(row.failing)),
        str(row.deferred),
        pulling,
        served,
        detail,
    )


def summary_line(
    summary: dict[str, Any], show: Callable[[str], str], lists: Callable[[str], str]
) -> str:
    """`500 nodes: 497 ready, 2 not ready, 1 not answering; 3 images missing fleet-wide;
    failing: acme/api:2.4.1 on n2, n7; lists served: sha256:1a2b… on 499, none on 1`."""
    parts = [f"{summary['nodes']} nodes: {summary['ready']} ready"]
    if summary["not_ready"]:
        parts.append(f"{summary['not_ready']} not ready")
    if summary["not_answering"]:
        parts.append(f"{summary['not_answering']} not answering")
    if summary["converging"]:
        overdue = f" ({summary['overdue']} overdue)" if summary["overdue"] else ""
        parts.append(f"{summary['converging']} of them converging{overdue}")
    line = ", ".join(parts)
    if summary["not_targeted"]:
        line += f" (+{summary['not_targeted']} the agent does not target)"
    line += f"; {summary['images_missing']} images missing fleet-wide"
    if summary["failing"]:
        line += "; failing: " + ", ".join(
            f"{show(image)} on {_some(nodes)}"
            for image, nodes in list(summary["failing"].items())[:3]
        )
        if len(summary["failing"]) > 3:
            line += f" (+{len(summary['failing']) - 3} more images)"
    if summary["lists_served"]:
        line += "; lists served: " + ", ".join(
            f"{lists(digest)} on {count}" for digest, count in summary["lists_served"].items()
        )
    return line


def _age(seconds: float) -> str:
    """`45s`, `12m`, `3h10m`: how long, as `kubectl get` says AGE."""
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m"
    hours, minutes = divmod(whole // 60, 60)
    return f"{hours}h{minutes}m" if minutes else f"{hours}h"


def _some(nodes: Sequence[str], most: int = 3) -> str:
    named = ", ".join(nodes[:most])
    return named + (f" and {len(nodes) - most} more" if len(nodes) > most else "")
