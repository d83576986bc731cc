"""`status`: a running daemon's /status, as a table or JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from agent.cli.common import (
    EXIT_CONVERGED,
    EXIT_NOT_CONVERGED,
    digests_for,
    print_document,
    table_lines,
)
from agent.core.errors import DaemonUnreachable, InputError
from agent.core.reports.progress import PullView, format_bytes
from agent.core.text import fit


async def status(args: argparse.Namespace) -> int:
    url = endpoint_url(args.endpoint) + "/status"
    try:
        document = await asyncio.to_thread(_get_json, url)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DaemonUnreachable(
            f"cannot read {url}: {reason}; is the daemon running there?"
        ) from exc
    if args.format != "text":
        print_document(args, document)
    else:
        print(format_status(document, digests_for(args), time.time(), headers=not args.no_headers))
    return EXIT_CONVERGED if document.get("ready") else EXIT_NOT_CONVERGED


def endpoint_url(endpoint: str) -> str:
    """`--endpoint` as given, or as the daemon's `--listen` is written (host:port): the
    daemon serves plain HTTP."""
    endpoint = endpoint.strip().rstrip("/")
    scheme, sep, _ = endpoint.partition("://")
    if not sep:
        return f"http://{endpoint}"
    if scheme not in ("http", "https"):
        raise InputError(f"--endpoint {endpoint}: the daemon serves http:// (its --listen address)")
    return endpoint


def _get_json(url: str) -> Any:
    # urllib.request brings ssl, email and http.client: loaded for `status` only, not at the
    # start of every command.
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read(8 * 1024 * 1024))


def format_status(
    document: dict[str, Any], show: Callable[[str], str], now: float, headers: bool = True
) -> str:
    """A daemon's /status as `kubectl get` would print it: a header line, then a table
    (`headers` False: its rows only)."""
    runtime = document.get("runtime") or {}
    last = document.get("last_reconcile")
    ago = f"last pass {now - last:.0f}s ago" if last else "no pass yet"
    header = (
        f"platform {document.get('node_platform') or '?'}  "
        f"{'READY' if document.get('ready') else 'NOT READY'}  "
        f"runtime {runtime.get('name', '?')} {runtime.get('version', '')}".rstrip()
        + f"  {ago}"
    )
    lines = [header]
    converging = document.get("converging")
    if isinstance(converging, dict):
        since = converging.get("since")
        age = f" for {now - since:.0f}s" if isinstance(since, int | float) else ""
        overdue = " (OVERDUE)" if converging.get("overdue") else ""
        lines.append(
            f"converging to list {converging.get('to')}{age}{overdue}: "
            f"{converging.get('present')} of {converging.get('desired')} present; still serving "
            f"list {converging.get('from')}"
        )
    if document.get("last_error"):
        lines.append(f"last error: {document['last_error']}")
    rejected = (document.get("config") or {}).get("rejected")
    if rejected:
        lines.append(f"config update rejected: {rejected['error']}")
    # PULL TOOK: how long the last pull took (a duration, not a moment).
    rows = [("IMAGE", "STATE", "DIGEST", "SIZE", "PINNED", "PULL TOOK", "DETAIL")]
    for image in document.get("images") or []:
        pull = image.get("last_pull_seconds")
        rows.append(
            (
                show(image["image"]),
                image["state"],
                show(image.get("digest") or "-"),
                format_bytes(image["bytes"]) if image.get("bytes") else "-",
                "yes" if image.get("pinned") else "no",
                f"{pull:.1f}s" if pull is not None else "-",
                _in_flight(image.get("pull")) or image.get("last_error") or "",
            )
        )
    if not headers:
        lines = []
    # The daemon's answer is remote text: each line is one line, escaped.
    return "\n".join([fit(line) for line in lines] + table_lines(rows, headers))


def _in_flight(pull: dict[str, Any] | None) -> str | None:
    """A pull in progress as /status reports it, in the words `once` uses."""
    if not pull:
        return None
    view = PullView("", pull["bytes_done"], pull["bytes_total"], pull["seconds"])
    return f"pulling: {view.describe()}"
