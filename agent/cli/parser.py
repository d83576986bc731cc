"""The command line: one function per verb declares everything that verb accepts, from the
flag helpers several verbs share (agent.cli.common)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from agent.adapters.kube import SERVICE_ACCOUNT
from agent.adapters.registry.hosts import DEFAULT_HOSTS_DIR
from agent.adapters.runtime import containerd_config
from agent.cli import converge, doctor, lists, locking, status
from agent.cli.common import (
    EXITS,
    VERBOSE_HELP,
    count_arg,
    cri_endpoint_arg,
    seconds_arg,
    version,
    version_text,
)
from agent.daemon.settings import DEFAULT_LISTEN, DaemonSettings, parse_listen
from agent.preload.lock import DEFAULT_CONCURRENCY as LOCK_CONCURRENCY
from agent.preload.lock import MAX_CONCURRENCY as MAX_LOCK_CONCURRENCY

Commands = Any  # argparse's private _SubParsersAction


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="prepull-agent",
        description="Preload container images into containerd over CRI, pinned by digest.",
        epilog="Exit codes: 0 converged, 1 not converged (each image named), 2 bad input.",
    )
    top.add_argument("--version", action="version", version=version_text())
    top.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    commands = top.add_subparsers(required=True, metavar="COMMAND")
    verbs = (_once, _run, _lock, _resolve, _check, _status, _doctor, _from_manifests, _suggest)
    for verb in verbs:
        verb(commands)
    _subcommand(commands, "version", "print the agent's version", "  prepull-agent version",
                "exit codes: 0").set_defaults(command=version)  # fmt: skip
    return top


def _subcommand(
    commands: Commands, name: str, summary: str, examples: str, exits: str = EXITS
) -> argparse.ArgumentParser:
    sub: argparse.ArgumentParser = commands.add_parser(
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


# -- flags several verbs share -------------------------------------------------------------


def _config(sub: argparse.ArgumentParser, *, required: bool = True) -> None:
    if required:
        sub.add_argument("--config", required=True, type=Path, help="the preload list (YAML)")
    else:
        sub.add_argument("--config", type=Path, help="take registry settings from a preload list")


def _node_platform(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--platform",
        help="this node's platform, e.g. linux/arm64 (default: the one containerd pulls "
        "for; uname if it does not say)",
    )


def _hosts_dir(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--containerd-hosts-dir",
        type=Path,
        default=DEFAULT_HOSTS_DIR,
        metavar="DIR",
        help="containerd's registry hosts directory, for the same mirrors, CAs and plain-HTTP "
        f"registries containerd uses (default {DEFAULT_HOSTS_DIR}; ignored if absent)",
    )


def _containerd_config(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--containerd-config",
        type=Path,
        metavar="FILE",
        help="containerd's config file, its imports followed, for how it pulls (default "
        f"{containerd_config.DEFAULT_PATH}; containerd's defaults if it is absent)",
    )


def _format(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "-o",
        "--format",
        choices=("text", "json"),
        default="text",
        help="json: one document with stable field names, for scripts and CI",
    )


def _no_trunc(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--no-trunc", action="store_true", help="whole digests on a terminal too (as crictl)"
    )


def _daemon_seconds(
    run: argparse.ArgumentParser, flag: str, field: str, minimum: float, what: str
) -> None:
    """A number of seconds whose default is DaemonSettings' own: declared once, there."""
    default = getattr(DaemonSettings, field)
    run.add_argument(
        flag,
        type=seconds_arg(minimum),
        default=default,
        metavar="SECONDS",
        help=f"{what} (default {default:g})",
    )


def _output(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("-o", "--output", type=Path, help="where to write the list (default: stdout)")


# -- the verbs -------------------------------------------------------------------------------


def _once(commands: Commands) -> None:
    once = _subcommand(
        commands,
        "once",
        "converge this node once and exit",
        "  prepull-agent once --config preload.yaml\n"
        "  prepull-agent once --config preload.yaml --cri-endpoint unix:///run/k3s/containerd/"
        "containerd.sock",
    )
    _config(once)
    cri_endpoint_arg(once)
    _node_platform(once)
    once.add_argument(
        "--dry-run",
        action="store_true",
        help="print what a pass would do (hit, pull, bind, skip) and do none of it; exit 0 if "
        "nothing, 1 if something is to be done",
    )
    _no_trunc(once)
    _format(once)
    _hosts_dir(once)
    once.set_defaults(command=converge.once)


def _run(commands: Commands) -> None:
    run = _subcommand(
        commands,
        "run",
        "daemon: converge now, every resync and on config change",
        "  prepull-agent run --config /etc/prepull/preload.yaml --listen 0.0.0.0:9410",
        "exit codes: 0 after SIGTERM/SIGINT, 2 bad input at start",
    )
    _config(run)
    cri_endpoint_arg(run)
    _node_platform(run)
    _containerd_config(run)
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
    _daemon_seconds(
        run,
        "--shutdown-grace",
        "shutdown_grace",
        0.0,
        "after SIGTERM, how long pulls in flight may finish",
    )
    _daemon_seconds(
        run,
        "--watch-interval",
        "watch_interval",
        0.1,
        "how often to look for a changed config file",
    )
    _daemon_seconds(
        run,
        "--container-scan-interval",
        "container_scan_interval",
        0.1,
        "how often to count new containers as cache hits or misses",
    )
    gate = run.add_argument_group(
        "readiness gate (opt-in; needs deploy/readiness-gate RBAC)",
        "keep pods off the node until its list is preloaded: a prepull.io/PrepullReady node "
        "condition, "
        "and the removal of a startup taint",
    )
    gate.add_argument(
        "--node-condition",
        action="store_true",
        help="keep this node's prepull.io/PrepullReady condition (status, reason, message naming "
        "what is "
        "missing) up to date",
    )
    gate.add_argument(
        "--remove-startup-taint",
        metavar="KEY",
        help="remove the taint KEY (e.g. prepull.io/not-ready, from kubelet's "
        "--register-with-taints or Karpenter's startupTaints) from this node once it is ready",
    )
    gate.add_argument(
        "--ready-timeout",
        type=seconds_arg(1),
        metavar="SECONDS",
        help="remove the startup taint anyway after this long, and say so (default: wait)",
    )
    gate.add_argument(
        "--no-node-events",
        dest="node_events",
        action="store_false",
        help="record no Events on the Node (by default the gate records failing images and its "
        "decisions there, for `kubectl describe node`; that needs events create/patch in the "
        "agent's namespace)",
    )
    gate.add_argument(
        "--impersonate-node",
        action="store_true",
        help="act as this node (system:node:NAME) through constrained impersonation (Kubernetes "
        "1.36+, deploy/overlays/node-readiness-controller-impersonation): the API server then "
        "lets the agent write only its own Node; for --node-condition, not for a taint",
    )
    gate.add_argument(
        "--events-namespace",
        metavar="NAMESPACE",
        help="where Events about the Node go (default $POD_NAMESPACE, from the downward API: "
        "metadata.namespace; else the service account's namespace; else default)",
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
    _daemon_seconds(
        run,
        "--progress-log-interval",
        "progress_log_interval",
        0.1,
        "a pull still running logs its bytes so far and rate this often",
    )
    run.add_argument(
        "--strict-readiness",
        action="store_true",
        help="/readyz waits for every image, even those that failed permanently (404, denied, "
        "wrong platform); by default those are reported but not waited for",
    )
    _hosts_dir(run)
    run.set_defaults(command=converge.run)


def _lock(commands: Commands) -> None:
    lock = _subcommand(
        commands,
        "lock",
        "pin every tag of a preload list to its current digest",
        "  prepull-agent lock --config preload.yaml -o preload.lock.yaml\n"
        "  prepull-agent lock --config preload.yaml --concurrency 64\n"
        "  prepull-agent lock --config preload.yaml -o preload.lock.yaml --check\n"
        "  prepull-agent lock --config preload.yaml -o preload.lock.yaml --format json",
        "exit codes: 0 written (--check: current), 1 a tag did not resolve, nothing written "
        "(--check: stale), 2 bad input",
    )
    _config(lock)
    lock.add_argument("-o", "--output", type=Path, help="where to write the lock (default: stdout)")
    lock.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 naming each entry if the lock (-o) no longer matches the "
        "list or a locked tag moved in the registry (a CI gate)",
    )
    lock.add_argument(
        "--concurrency",
        type=count_arg(1, MAX_LOCK_CONCURRENCY),
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
    _hosts_dir(lock)
    lock.set_defaults(command=locking.lock)


def _resolve(commands: Commands) -> None:
    resolve = _subcommand(
        commands,
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
    _config(resolve, required=False)
    resolve.add_argument(
        "--insecure", action="store_true", help="speak plain HTTP to the image's registry"
    )
    _format(resolve)
    _hosts_dir(resolve)
    resolve.set_defaults(command=locking.resolve)


def _check(commands: Commands) -> None:
    check = _subcommand(
        commands,
        "check",
        "validate a preload list, its pull secrets and hosts.toml files, touching no node",
        "  prepull-agent check --config preload.yaml\n"
        "  prepull-agent check --config preload.lock.yaml --containerd-hosts-dir ./certs.d",
        "exit codes: 0 valid, 2 bad input (file and line named)",
    )
    _config(check)
    _hosts_dir(check)
    check.set_defaults(command=locking.check)


def _status(commands: Commands) -> None:
    sub = _subcommand(
        commands,
        "status",
        "show a running daemon's view of this node (its /status) as a table",
        "  prepull-agent status\n  prepull-agent status --endpoint http://10.0.0.5:9410 -o json",
        "exit codes: 0 the node is ready, 1 not ready or the daemon cannot be reached",
    )
    port = parse_listen(DEFAULT_LISTEN)[1]
    sub.add_argument(
        "--endpoint",
        default=f"http://127.0.0.1:{port}",
        help=f"the daemon's HTTP address (its --listen; default http://127.0.0.1:{port})",
    )
    _no_trunc(sub)
    _format(sub)
    sub.set_defaults(command=status.status)


def _doctor(commands: Commands) -> None:
    sub = _subcommand(
        commands,
        "doctor",
        "say how this node's containerd pulls for CRI: its pull path, what forced the old one, "
        "the settings that bound a pull",
        "  prepull-agent doctor\n"
        "  prepull-agent doctor --containerd-config /host/etc/containerd/config.toml -o json",
        doctor.EXITS,
    )
    cri_endpoint_arg(sub)
    _containerd_config(sub)
    _format(sub)
    sub.set_defaults(command=doctor.doctor)


def _from_manifests(commands: Commands) -> None:
    sub = _subcommand(
        commands,
        "from-manifests",
        "write a preload list from Kubernetes manifests: every container image nodes keep",
        "  kubectl get pods,deploy,sts,ds,cronjobs,jobs -A -o yaml | prepull-agent "
        "from-manifests -\n"
        "  helm template my-release ./chart | prepull-agent from-manifests - -o preload.yaml\n"
        "  prepull-agent from-manifests k8s/ -o preload.yaml && prepull-agent lock "
        "--config preload.yaml -o preload.lock.yaml",
        "exit codes: 0 written (warnings on stderr), 2 bad input (file and line named)",
    )
    sub.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="YAML or JSON files, directories (read recursively), or - for stdin",
    )
    _output(sub)
    sub.set_defaults(command=lists.from_manifests)


def _suggest(commands: Commands) -> None:
    sub = _subcommand(
        commands,
        "suggest",
        "write a preload list from what this node runs now, pinned to the digests running",
        "  prepull-agent suggest > preload.yaml\n"
        "  prepull-agent suggest --cri-endpoint unix:///run/k3s/containerd/containerd.sock",
        "exit codes: 0 written, 1 the runtime cannot be asked",
    )
    cri_endpoint_arg(sub)
    _output(sub)
    sub.set_defaults(command=lists.suggest)
