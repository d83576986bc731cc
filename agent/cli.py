"""The `prepull-agent` command line: argument parsing, exit codes, human output."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import math
import os
import re
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from agent import __version__, generate, logs
from agent import config as configs
from agent import platform as platforms
from agent import reference as references
from agent.config import ImageEntry, Kind, PreloadConfig, RegistrySettings, locked_reference
from agent.credentials import CredentialFiles
from agent.errors import AgentError, InputError
from agent.files import read_text
from agent.hosts import DEFAULT_HOSTS_DIR, HostsDirectory, resolver
from agent.live import LiveDisplay
from agent.lock import DEFAULT_CONCURRENCY as LOCK_CONCURRENCY
from agent.lock import MAX_CONCURRENCY as MAX_LOCK_CONCURRENCY
from agent.lock import resolve_tags
from agent.lock import stale as lock_problems
from agent.manifest import Resolution
from agent.plan import Action, NodeImage, Step
from agent.platform import Platform
from agent.progress import Progress, PullView, format_bytes
from agent.reconcile import Outcome, Status
from agent.reference import Reference
from agent.settings import (
    DEFAULT_ENDPOINT,
    DEFAULT_LISTEN,
    SERVICE_ACCOUNT,
    ClusterAccess,
    DaemonSettings,
    GateSettings,
    parse_listen,
)

if TYPE_CHECKING:
    from agent.credentials import Credential
    from agent.registry import RegistryClient
    from agent.wiring import Runtime

EXIT_CONVERGED = 0
EXIT_NOT_CONVERGED = 1
EXIT_BAD_INPUT = 2
ENDPOINT_ENV = "PREPULL_CRI_ENDPOINT"

log = logging.getLogger("prepull-agent")
MAX_INTERVAL_SECONDS = 24 * 3600.0
# `once`: how often pulls in flight are redrawn on a terminal, looked at for -v otherwise, and
# how often -v logs a pull still running.
LIVE_INTERVAL = 0.5
PROGRESS_INTERVAL = 2.0
PROGRESS_LOG_SECONDS = 10.0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    daemon = args.command is _run
    logs.setup(getattr(args, "log_format", "text"), verbose=args.verbose or daemon)
    try:
        code: int = asyncio.run(args.command(args))
        return code
    except AgentError as exc:
        if getattr(args, "log_format", "text") == "json":
            # The daemon's log collector reads JSON lines: a start-up error is one of them.
            log.error("%s", exc, extra={"event": "fatal", "error": str(exc)})
        else:
            print(f"prepull-agent: {exc}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        return 130


def _load_wiring() -> ModuleType:
    """gRPC and aiohttp load only for the commands that use them. What is loaded by then is
    frozen out of the cyclic GC (gc.freeze), so a pass over thousands of images does not scan
    the libraries' objects again at every collection."""
    from agent import wiring

    gc.freeze()
    return wiring


def exit_code(exc: AgentError) -> int:
    """The one place error types become exit codes (documented in README.md)."""
    return EXIT_BAD_INPUT if isinstance(exc, InputError) else EXIT_NOT_CONVERGED


VERBOSE_HELP = "log retries and progress"
EXITS = "exit codes: 0 converged, 1 not converged (each image named), 2 bad input"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prepull-agent",
        description="Preload container images into containerd over CRI, pinned by digest.",
        epilog="Exit codes: 0 converged, 1 not converged (each image named), 2 bad input.",
    )
    parser.add_argument("--version", action="version", version=_version_text())
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    def subcommand(name: str, summary: str, examples: str, exits: str = EXITS) -> Any:
        sub = commands.add_parser(
            name,
            help=summary,
            description=summary[0].upper() + summary[1:] + ".",
            epilog=f"examples:\n{examples}\n\n{exits}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        # -v works after the command too; SUPPRESS keeps the top-level value when it is absent.
        sub.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP
        )
        return sub

    once = subcommand(
        "once",
        "converge this node once and exit",
        "  prepull-agent once --config preload.yaml\n"
        "  prepull-agent once --config preload.yaml --cri-endpoint unix:///run/k3s/containerd/"
        "containerd.sock",
    )
    run = subcommand(
        "run",
        "daemon: converge now, every resync and on config change",
        "  prepull-agent run --config /etc/prepull/preload.yaml --listen 0.0.0.0:9410",
        "exit codes: 0 after SIGTERM/SIGINT, 2 bad input at start",
    )
    for sub in (once, run):
        sub.add_argument("--config", required=True, type=Path, help="the preload list (YAML)")
        _cri_endpoint(sub)
        sub.add_argument(
            "--platform",
            help="this node's platform, e.g. linux/arm64 (default: the one containerd pulls "
            "for; uname if it does not say)",
        )
    once.set_defaults(command=_once)
    once.add_argument(
        "--dry-run",
        action="store_true",
        help="print what a pass would do (hit, pull, bind, skip) and do none of it; exit 0 if "
        "nothing, 1 if something is to be done",
    )

    run.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        help=f"address for /metrics and probes ({DEFAULT_LISTEN})",
    )
    run.add_argument(
        "--log-format",
        choices=("json", "text"),
        default="json",
        help="json: one object per line, for log collectors (default); text: for people",
    )
    run.add_argument(
        "--shutdown-grace",
        type=_seconds(0.0),
        default=20.0,
        metavar="SECONDS",
        help="after SIGTERM, how long pulls in flight may finish (default 20)",
    )
    run.add_argument(
        "--watch-interval",
        type=_seconds(0.1),
        default=2.0,
        metavar="SECONDS",
        help="how often to look for a changed config file (default 2)",
    )
    run.add_argument(
        "--container-scan-interval",
        type=_seconds(0.1),
        default=10.0,
        metavar="SECONDS",
        help="how often to count new containers as cache hits or misses (default 10)",
    )
    gate = run.add_argument_group(
        "readiness gate (opt-in; needs deploy/readiness-gate RBAC)",
        "keep pods off the node until its list is preloaded: a PrepullReady node condition, "
        "and the removal of a startup taint",
    )
    gate.add_argument(
        "--node-condition",
        action="store_true",
        help="keep this node's PrepullReady condition (status, reason, message naming what is "
        "missing) up to date",
    )
    gate.add_argument(
        "--remove-startup-taint",
        metavar="KEY",
        help="remove the taint KEY (e.g. prepull.io/not-ready, from the autoscaler's "
        "startupTaints or --register-with-taints) from this node once it is ready",
    )
    gate.add_argument(
        "--ready-timeout",
        type=_seconds(1),
        metavar="SECONDS",
        help="remove the startup taint anyway after this long, and say so (default: wait)",
    )
    gate.add_argument(
        "--node-name",
        help="this node's name (default $NODE_NAME, from the downward API: spec.nodeName; "
        "else the hostname): the gate's node, and this node's place in a rollout's spread",
    )
    gate.add_argument(
        "--kube-api",
        metavar="URL",
        help="the API server (default https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT)",
    )
    gate.add_argument(
        "--kube-token-file",
        type=Path,
        metavar="FILE",
        help=f"bearer token, read again for every request (default {SERVICE_ACCOUNT}/token)",
    )
    gate.add_argument(
        "--kube-ca-file",
        type=Path,
        metavar="FILE",
        help=f"CA bundle of the API server (default {SERVICE_ACCOUNT}/ca.crt)",
    )
    run.add_argument(
        "--progress-log-interval",
        type=_seconds(0.1),
        default=30.0,
        metavar="SECONDS",
        help="a pull still running logs its bytes so far and rate this often (default 30)",
    )
    run.add_argument(
        "--strict-readiness",
        action="store_true",
        help="/readyz waits for every image, even those that failed permanently (404, denied, "
        "wrong platform); by default those are reported but not waited for",
    )
    run.set_defaults(command=_run)

    lock = subcommand(
        "lock",
        "pin every tag of a preload list to its current digest",
        "  prepull-agent lock --config preload.yaml -o preload.lock.yaml\n"
        "  prepull-agent lock --config preload.yaml --concurrency 64\n"
        "  prepull-agent lock --config preload.yaml -o preload.lock.yaml --check\n"
        "  prepull-agent lock --config preload.yaml -o preload.lock.yaml --format json",
        "exit codes: 0 written (--check: current), 1 a tag did not resolve, nothing written "
        "(--check: stale), 2 bad input",
    )
    lock.add_argument("--config", required=True, type=Path, help="the preload list (YAML)")
    lock.add_argument("-o", "--output", type=Path, help="where to write the lock (default: stdout)")
    lock.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 naming each entry if the lock (-o) no longer matches the "
        "list or a locked tag moved in the registry (a CI gate)",
    )
    lock.add_argument(
        "--concurrency",
        type=_count(1, MAX_LOCK_CONCURRENCY),
        default=LOCK_CONCURRENCY,
        help=f"HEAD requests in flight to one registry (default {LOCK_CONCURRENCY}; a "
        "registry's own `concurrency:` in the list wins)",
    )
    lock.add_argument(
        "--kubelet-allowlist",
        type=Path,
        metavar="FILE",
        help="also write a KubeletConfiguration fragment allowing the locked images as preloaded "
        "(preloadedImagesVerificationAllowlist, KEP-2535), so credential verification keeps "
        "them usable",
    )
    lock.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="json: one document on stdout (each entry's digest and locked reference, or its "
        "error; with --check, whether the lock is current and what differs), for scripts and CI",
    )
    lock.set_defaults(command=_lock)

    resolve = subcommand(
        "resolve",
        "print the digest an image reference names now",
        "  prepull-agent resolve nginx:1.25.3\n"
        "  prepull-agent resolve registry.local:5000/app:2 --insecure --platform linux/arm64",
        "exit codes: 0 resolved, 1 not found or no manifest for the platform, 2 bad input",
    )
    resolve.add_argument("image", help="an image reference, e.g. nginx:1.25.3")
    resolve.add_argument(
        "--platform", help="choose the manifest for this platform (default: uname)"
    )
    resolve.add_argument("--config", type=Path, help="take registry settings from a preload list")
    resolve.add_argument(
        "--insecure", action="store_true", help="speak plain HTTP to the image's registry"
    )
    resolve.set_defaults(command=_resolve)
    check = subcommand(
        "check",
        "validate a preload list, its pull secrets and hosts.toml files, touching no node",
        "  prepull-agent check --config preload.yaml\n"
        "  prepull-agent check --config preload.lock.yaml --containerd-hosts-dir ./certs.d",
        "exit codes: 0 valid, 2 bad input (file and line named)",
    )
    check.add_argument("--config", required=True, type=Path, help="the preload list (YAML)")
    check.set_defaults(command=_check)
    status = subcommand(
        "status",
        "show a running daemon's view of this node (its /status) as a table",
        "  prepull-agent status\n  prepull-agent status --endpoint http://10.0.0.5:9410 -o json",
        "exit codes: 0 the node is ready, 1 not ready or the daemon cannot be reached",
    )
    status.add_argument(
        "--endpoint",
        default=f"http://127.0.0.1:{parse_listen(DEFAULT_LISTEN)[1]}",
        help="the daemon's HTTP address (its --listen; default http://127.0.0.1:"
        f"{parse_listen(DEFAULT_LISTEN)[1]})",
    )
    status.set_defaults(command=_status)
    for sub in (once, status):
        sub.add_argument(
            "--no-trunc", action="store_true", help="whole digests on a terminal too (as crictl)"
        )
    for sub in (once, resolve, status):
        sub.add_argument(
            "-o",
            "--format",
            choices=("text", "json"),
            default="text",
            help="json: one document with stable field names, for scripts and CI",
        )
    from_manifests = subcommand(
        "from-manifests",
        "write a preload list from Kubernetes manifests: every container image nodes keep",
        "  kubectl get pods,deploy,sts,ds,cronjobs,jobs -A -o yaml | prepull-agent "
        "from-manifests -\n"
        "  helm template my-release ./chart | prepull-agent from-manifests - -o preload.yaml\n"
        "  prepull-agent from-manifests k8s/ -o preload.yaml && prepull-agent lock "
        "--config preload.yaml -o preload.lock.yaml",
        "exit codes: 0 written (warnings on stderr), 2 bad input (file and line named)",
    )
    from_manifests.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="YAML or JSON files, directories (read recursively), or - for stdin",
    )
    from_manifests.set_defaults(command=_from_manifests)
    suggest = subcommand(
        "suggest",
        "write a preload list from what this node runs now, pinned to the digests running",
        "  prepull-agent suggest > preload.yaml\n"
        "  prepull-agent suggest --cri-endpoint unix:///run/k3s/containerd/containerd.sock",
        "exit codes: 0 written, 1 the runtime cannot be asked",
    )
    _cri_endpoint(suggest)
    suggest.set_defaults(command=_suggest)
    for sub in (from_manifests, suggest):
        sub.add_argument(
            "-o", "--output", type=Path, help="where to write the list (default: stdout)"
        )
    version = subcommand(
        "version",
        "print the agent's version",
        "  prepull-agent version",
        "exit codes: 0",
    )
    version.set_defaults(command=_version)
    for command in (once, run, lock, resolve, check):
        command.add_argument(
            "--containerd-hosts-dir",
            type=Path,
            default=DEFAULT_HOSTS_DIR,
            metavar="DIR",
            help="containerd's registry hosts directory, for the same mirrors, CAs and plain-HTTP "
            f"registries containerd uses (default {DEFAULT_HOSTS_DIR}; ignored if absent)",
        )
    return parser


def _print_resolution(ref: references.Reference, resolution: Resolution) -> None:
    print(f"reference  {ref}")
    print(f"digest     {resolution.digest}")
    print(f"type       {resolution.media_type}")
    print(f"platforms  {platforms.describe(resolution.offered)}")
    print(f"pinned     {resolution.reference}")


async def _status(args: argparse.Namespace) -> int:
    url = args.endpoint.rstrip("/") + "/status"
    try:
        document = await asyncio.to_thread(_get_json, url)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise AgentError(f"cannot read {url}: {reason}; is the daemon running there?") from None
    if args.format == "json":
        _print_json(document)
    else:
        print(format_status(document, _digests_for(args), time.time()))
    return EXIT_CONVERGED if document.get("ready") else EXIT_NOT_CONVERGED


def _get_json(url: str) -> Any:
    # urllib.request brings ssl, email and http.client: loaded for `status` only, not at the
    # start of every command.
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read(8 * 1024 * 1024))


def format_status(document: dict[str, Any], show: Callable[[str], str], now: float) -> str:
    """A daemon's /status as `kubectl get` would print it: a header line, then a table."""
    runtime = document.get("runtime") or {}
    last = document.get("last_reconcile")
    ago = f"last pass {now - last:.0f}s ago" if last else "no pass yet"
    header = (
        f"node {document.get('node_platform') or '?'}  "
        f"{'READY' if document.get('ready') else 'NOT READY'}  "
        f"runtime {runtime.get('name', '?')} {runtime.get('version', '')}".rstrip()
        + f"  {ago}"
    )
    lines = [header]
    if document.get("last_error"):
        lines.append(f"last error: {document['last_error']}")
    rejected = (document.get("config") or {}).get("rejected")
    if rejected:
        lines.append(f"config update rejected: {rejected['error']}")
    rows = [("IMAGE", "STATE", "DIGEST", "SIZE", "PINNED", "LAST PULL", "DETAIL")]
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
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def _in_flight(pull: dict[str, Any] | None) -> str | None:
    """A pull in progress as /status reports it, in the words `once` uses."""
    if not pull:
        return None
    view = PullView("", pull["bytes_done"], pull["bytes_total"], pull["seconds"])
    return f"pulling: {view.describe()}"


async def _from_manifests(args: argparse.Namespace) -> int:
    documents: list[Any] = []
    for source, text in _manifest_texts(args.paths):
        documents += configs.documents(text, source)
    found = generate.from_manifests(documents)
    for image, users in found.mutable().items():
        print(
            f"warning: {image} is kept by a mutable tag (IfNotPresent): each node keeps whatever "
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
    _emit(args.output, text)
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
                raise InputError(f"{file}: cannot read: {exc}") from None


def _users(users: Sequence[str]) -> str:
    more = f" and {len(users) - 3} more" if len(users) > 3 else ""
    return ", ".join(users[:3]) + more


def _emit(output: Path | None, text: str) -> None:
    if output is None:
        sys.stdout.write(text)
    else:
        _write_atomically(output, text)
        print(f"wrote {output}", file=sys.stderr)


async def _suggest(args: argparse.Namespace) -> int:
    wiring = _load_wiring()
    async with wiring.runtime(args.cri_endpoint) as runtime:
        containers = await runtime.cri.list_containers()
        running = []
        seen: dict[str, Any] = {}
        for container in containers:
            if container.image_id not in seen:
                seen[container.image_id] = await runtime.cri.image_status(container.image_id)
            image = seen[container.image_id]
            if image is not None:
                running.append(generate.Running(image.repo_tags, image.repo_digests))
    counted = generate.suggest(running)
    text = generate.render_list(
        ((ref, f"{n} container{'' if n == 1 else 's'}") for ref, n in counted),
        f"What {args.cri_endpoint} runs now, most used first, pinned to the digests running\n"
        "(prepull-agent suggest). Review it, then lock it: prepull-agent lock --config <file>",
    )
    _emit(args.output, text)
    return EXIT_CONVERGED


async def _check(args: argparse.Namespace) -> int:
    config = configs.load(args.config)
    _credential_files(config)  # each pull secret read and parsed: a bad one is exit 2
    endpoints = resolver(config.registry, HostsDirectory(_hosts_dir(args)))
    for entry in config.images:
        endpoints(entry.reference)  # each registry's hosts.toml read and parsed
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


IMAGE_ENV = "PREPULL_IMAGE"
"""Set by the agent's image build (scripts/build_image.py, Dockerfile) to the image's name."""


def _version_text() -> str:
    image = os.environ.get(IMAGE_ENV)
    return f"prepull-agent {__version__}" + (f" (image {image})" if image else "")


async def _version(args: argparse.Namespace) -> int:
    print(_version_text())
    return EXIT_CONVERGED


def _hosts_dir(args: argparse.Namespace) -> Path | None:
    """containerd's registry hosts directory, if this node has one."""
    hosts_dir: Path = args.containerd_hosts_dir
    return hosts_dir if hosts_dir.is_dir() else None


def _credential_files(config: PreloadConfig) -> CredentialFiles:
    """The config's credential files, read once now so a broken one is bad input (exit 2)."""
    files = CredentialFiles(config.credential_paths())
    files.keyring()
    return files


def _count(minimum: int, maximum: int) -> Callable[[str], int]:
    """An argparse type: a whole number from `minimum` to `maximum`."""

    def parse(text: str) -> int:
        if not text.isdigit() or not minimum <= int(text) <= maximum:
            raise argparse.ArgumentTypeError(
                f"{text!r} must be a whole number from {minimum} to {maximum}"
            )
        return int(text)

    return parse


def _cri_endpoint(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--cri-endpoint",
        default=os.environ.get(ENDPOINT_ENV, DEFAULT_ENDPOINT),
        help=f"CRI socket (default: ${ENDPOINT_ENV} or {DEFAULT_ENDPOINT})",
    )


def _seconds(minimum: float) -> Callable[[str], float]:
    """An argparse type: a finite number of seconds, at least `minimum`."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < minimum or value > MAX_INTERVAL_SECONDS:
            raise argparse.ArgumentTypeError(
                f"{text!r} must be a number of seconds from {minimum:g} to {MAX_INTERVAL_SECONDS:g}"
            )
        return value

    return parse


def _platform_arg(text: str | None) -> platforms.Platform | None:
    """`--platform` as given, or None to ask the runtime."""
    return platforms.parse(text) if text else None


async def _run(args: argparse.Namespace) -> int:
    try:
        listen = parse_listen(args.listen)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    settings = DaemonSettings(
        config_path=args.config,
        endpoint=args.cri_endpoint,
        node=_platform_arg(args.platform),
        listen=listen,
        shutdown_grace=args.shutdown_grace,
        hosts_dir=_hosts_dir(args),
        watch_interval=args.watch_interval,
        container_scan_interval=args.container_scan_interval,
        strict_readiness=args.strict_readiness,
        progress_log_interval=args.progress_log_interval,
        node_name=args.node_name or os.environ.get("NODE_NAME") or socket.gethostname(),
        gate=_gate_settings(args),
    )
    # The daemon's web server and Prometheus code load only for `run`.
    from agent.app import Daemon

    gc.freeze()  # as _load_wiring: the daemon's passes need not rescan what start-up loaded
    return await Daemon(settings).run()


def _gate_settings(args: argparse.Namespace) -> GateSettings | None:
    """The readiness gate's settings, None if not asked for; InputError (exit 2) if asked for
    without what it needs."""
    wanted = args.node_condition or args.remove_startup_taint is not None
    if not wanted:
        if args.ready_timeout is not None:
            raise InputError("--ready-timeout applies to --remove-startup-taint; give both")
        return None
    access = ClusterAccess.resolve(
        args.node_name, args.kube_api, args.kube_token_file, args.kube_ca_file
    )
    from agent.kube import tls_context  # aiohttp loads for `run` anyway

    tls_context(access)  # a CA that cannot be loaded is bad input now, not a dead task later
    return GateSettings(access, args.node_condition, args.remove_startup_taint, args.ready_timeout)


async def _once(args: argparse.Namespace) -> int:
    wiring = _load_wiring()

    async with (
        wiring.runtime(args.cri_endpoint) as runtime,
        wiring.early_listing(runtime) as listing,
    ):
        config = await asyncio.to_thread(configs.load, args.config)
        files = _credential_files(config)
        # Bad input is exit 2 before anything but that listing has asked the runtime.
        override = _platform_arg(args.platform)
        info = await runtime.meet()
        node = await runtime.node(override)
        log.info("runtime %s %s (CRI %s), node %s", info.name, info.version, info.api_version, node)
        for note in runtime.features.limitations():
            log.warning("%s", note)
        async with wiring.registry_client(
            config.registry, _hosts_dir(args), files.lookup
        ) as registry:
            if args.dry_run:
                reconciler = runtime.reconciler(registry, node, files.lookup)
                return _print_plan(await reconciler.plan(config, listing), args)
            outcomes, released = await _converge_once(
                args, config, runtime, registry, node, files.lookup, listing
            )
    failed = [o for o in outcomes if not o.converged]
    if args.format == "json":
        _print_json(
            {
                "node": str(node),
                "converged": not failed,
                "images": [outcome_document(o) for o in outcomes],
                "released_pins": released,
            }
        )
        return EXIT_NOT_CONVERGED if failed else EXIT_CONVERGED
    for name in released:
        print(f"unpinned {name}  (no longer listed: kubelet's image GC may reclaim it)")
    counts = {
        s: sum(o.status == s for o in outcomes)
        for s in (Status.HIT, Status.PULLED, Status.BOUND, Status.SKIPPED)
    }
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    if failed:
        others = f" ({summary})" if summary else ""
        print(f"not converged on {node}: {len(failed)} of {len(outcomes)} failed{others}")
        return EXIT_NOT_CONVERGED
    images = "image" if len(outcomes) == 1 else "images"
    print(f"converged on {node}: {len(outcomes)} {images} ({summary or 'none listed'})")
    return EXIT_CONVERGED


async def _converge_once(
    args: argparse.Namespace,
    config: PreloadConfig,
    runtime: Runtime,
    registry: RegistryClient,
    node: Platform,
    credentials: Callable[[Reference], Sequence[Credential]],
    listed: Awaitable[list[NodeImage]],
) -> tuple[list[Outcome], list[str]]:
    """One pass, printing each image's line as soon as it is done. On a terminal, the pulls in
    flight are drawn below the results (bytes so far, rate) and redrawn; with -v, a pull still
    running logs how far it has got every PROGRESS_LOG_SECONDS. Returns the outcomes and the
    records whose pins this agent took back (they left the list)."""
    show = _digests_for(args)
    width = max((len(show(e.written)) for e in config.images), default=0)
    text = args.format != "json"
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
    """`once --dry-run`: one line per image, what a pass would do; 0 if nothing."""
    show = _digests_for(args)
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
    idle = all(isinstance(i, Step) and i.action in (Action.HIT, Action.SKIP) for i in plan)
    return EXIT_CONVERGED if idle else EXIT_NOT_CONVERGED


def format_outcome(
    outcome: Outcome, width: int = 0, show: Callable[[str], str] = lambda text: text
) -> str:
    """One line per image: status, the reference as written (padded to `width`), what the
    node holds, and why; `show` shortens digests for a terminal."""
    entry = outcome.entry
    parts = [f"{outcome.status:<8}", show(entry.written).ljust(width)]
    if outcome.status == Status.PULLED:
        size = format_bytes(outcome.size)
        parts.append(f"{show(str(outcome.digest))}  {size} in {outcome.seconds:.1f}s")
    elif outcome.status in (Status.HIT, Status.BOUND):
        parts.append(show(str(outcome.digest)))
    if outcome.status != Status.HIT and outcome.detail:
        detail = show(outcome.detail)
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


_FULL_DIGEST = re.compile(r"\b(sha256:[0-9a-f]{12})[0-9a-f]{52}\b")


def _digests_for(args: argparse.Namespace) -> Callable[[str], str]:
    """Digests shortened (sha256: and 12 hex digits, as crictl) for a person at a terminal;
    whole for pipes, files and --no-trunc."""
    if args.no_trunc or not sys.stdout.isatty():
        return lambda text: text
    return lambda text: _FULL_DIGEST.sub("\\1…", text)


def _print_json(document: object) -> None:
    print(json.dumps(document, indent=2))


async def _lock(args: argparse.Namespace) -> int:
    wiring = _load_wiring()

    config = configs.load(args.config)
    credentials = _credential_files(config).lookup
    # Bad input is exit 2 before any registry is asked: `--check` needs a readable lock.
    if args.check and args.output is None:
        raise InputError("lock --check compares the list with its lock: name the lock with -o")
    locked = configs.load(args.output) if args.check else None
    async with wiring.registry_client(
        config.registry, _hosts_dir(args), credentials, concurrency=args.concurrency
    ) as registry:
        results = await resolve_tags(
            registry, config.images, args.concurrency, pinned_too=args.check
        )
    tags = list(results)
    failures = {e: r for e, r in results.items() if isinstance(r, AgentError)}
    digests = {e: r for e, r in results.items() if isinstance(r, str)}
    if args.format == "json":
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
        _write_atomically(args.output, text)
        kept = len(config.images) - tags_locked
        print(f"locked {tags_locked} tags, kept {kept} pinned: {args.output}")
    _write_allowlist(args.kubelet_allowlist, config)
    return EXIT_CONVERGED


def _lock_text(
    source: Path, config: PreloadConfig, digests: dict[ImageEntry, str]
) -> tuple[str, int]:
    """The lock of `source` (its comments and order kept), and how many tags it pins."""
    unpinned = {e: d for e, d in digests.items() if e.reference.digest is None}
    return configs.lock_text(read_text(source), config, unpinned), len(unpinned)


def _write_allowlist(path: Path | None, config: PreloadConfig) -> None:
    """`--kubelet-allowlist`: written beside the lock; said on stderr (stdout may be the lock)."""
    if path is not None:
        _write_atomically(path, configs.kubelet_allowlist(config.images))
        print(f"allowlisted {len(config.images)} images for kubelet: {path}", file=sys.stderr)


def _lock_json(
    args: argparse.Namespace,
    config: PreloadConfig,
    digests: dict[ImageEntry, str],
    failures: dict[ImageEntry, AgentError],
    locked: PreloadConfig | None,
) -> int:
    """`lock --format json`: the lock's outcome as one document; the lock file is written (or
    checked) exactly as in text mode, but never printed."""
    problems = lock_problems(config.images, digests, locked.images) if locked else []
    written = not failures and locked is None and args.output is not None
    if written:
        _write_atomically(args.output, _lock_text(args.config, config, digests)[0])
    if not failures and locked is None:
        _write_allowlist(args.kubelet_allowlist, config)
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
    _print_json(
        {
            "lock": str(args.output) if args.output else None,
            "written": written,
            "check": locked is not None,
            "current": None if locked is None or failures else not problems,
            "problems": problems,
            "images": images,
        }
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


def _write_atomically(path: Path, text: str) -> None:
    """Readers see the old lock or the new one, never half of it."""
    temp: str | None = None
    try:
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        # mkstemp makes the file private; a lock is meant to be shipped and read.
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except OSError as exc:
        if temp is not None and os.path.exists(temp):
            os.unlink(temp)
        raise InputError(f"cannot write {path}: {exc}") from None


async def _resolve(args: argparse.Namespace) -> int:
    wiring = _load_wiring()

    ref = references.parse(args.image)
    node = _platform_arg(args.platform) or platforms.detect()  # no runtime to ask here
    config: PreloadConfig | None = configs.load(args.config) if args.config else None

    def settings(host: str) -> RegistrySettings:
        if args.insecure and host == ref.domain:
            return RegistrySettings(insecure=True)
        return config.registry(host) if config else RegistrySettings()

    files = _credential_files(config) if config else CredentialFiles(())
    async with wiring.registry_client(settings, _hosts_dir(args), files.lookup) as registry:
        resolution = await registry.resolve(ref, node)
    if args.format != "json":
        _print_resolution(ref, resolution)
    refusal = resolution.refusal()
    chosen = None if refusal or resolution.chosen is None else resolution.chosen.digest
    if args.format == "json":
        _print_json(
            {
                "reference": str(ref),
                "digest": resolution.digest,
                "media_type": resolution.media_type,
                "platforms": [str(p) for p in resolution.offered],
                "pinned": str(resolution.reference),
                "platform": str(node),
                "platform_digest": chosen,
                "refusal": refusal or None,
            }
        )
        return EXIT_CONVERGED if chosen else EXIT_NOT_CONVERGED
    if chosen is None:
        print(f"{node!s:<10} none: {refusal}")
        return EXIT_NOT_CONVERGED
    print(f"{node!s:<10} {chosen}")
    return EXIT_CONVERGED
