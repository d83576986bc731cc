"""The command line: one function per verb declares everything that verb accepts, from the
flags several verbs share (agent.cli.flags)."""

from __future__ import annotations

import argparse
from pathlib import Path

from agent.cli import flags, gate_flags
from agent.cli.common import (
    VERBOSE_HELP,
    count_arg,
    cri_endpoint_arg,
    seconds_arg,
    version,
    version_text,
)
from agent.cli.list_verbs import from_cluster, from_manifests, suggest
from agent.cli.verb import DAEMON, Commands, Verb, subcommand
from agent.daemon.settings import DEFAULT_LISTEN, parse_listen
from agent.preload.lock import DEFAULT_CONCURRENCY as LOCK_CONCURRENCY
from agent.preload.lock import MAX_CONCURRENCY as MAX_LOCK_CONCURRENCY


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="prepull-agent",
        description="Preload container images into containerd over CRI, pinned by digest.",
        epilog="Exit codes: 0 converged, 1 not converged (each image named), 2 bad input.",
    )
    top.add_argument("--version", action="version", version=version_text())
    top.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    commands = top.add_subparsers(required=True, metavar="COMMAND")
    verbs = (
        _once,
        _run,
        _lock,
        _resolve,
        _check,
        _status,
        _pins,
        _release,
        _fleet,
        _doctor,
        from_manifests,
        from_cluster,
        suggest,
    )
    for verb in verbs:
        verb(commands)
    subcommand(commands, "version", "print the agent's version", "  prepull-agent version",
                "exit codes: 0").set_defaults(command=version)  # fmt: skip
    return top


# -- the verbs -------------------------------------------------------------------------------


def _once(commands: Commands) -> None:
    once = subcommand(
        commands,
        "once",
        "converge this node once and exit",
        "  prepull-agent once --config preload.yaml\n"
        "  prepull-agent once --config preload.yaml --cri-endpoint unix:///run/k3s/containerd/"
        "containerd.sock\n"
        "  prepull-agent once --config preload.yaml --dry-run",
        "exit codes: 0 the node is ready by the list (every image for this node present; one "
        "refused or failed for good is reported, not waited for, unless --strict), 1 not ready, "
        "2 bad input\nwith --dry-run: 0 nothing to pull or bind (refused entries listed), 1 "
        "something to pull or bind, or a registry that could not be asked, 2 bad input",
    )
    flags.config(once)
    flags.owner(once, "file:<the --config file's absolute path>")
    once.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 unless every entry for this node is present (for CI: a refused or "
        "permanently failed entry fails the run)",
    )
    cri_endpoint_arg(once)
    flags.node_platform(once)
    once.add_argument(
        "--dry-run",
        action="store_true",
        help="print what a pass would do (hit, pull, bind, skip, refused) and do none of it "
        "(exit codes below)",
    )
    flags.no_trunc(once)
    flags.no_headers(once, "summary line (pins taken back are said on stderr)")
    flags.format(once)
    flags.hosts_dir(once)
    once.set_defaults(command=Verb("converge", "once"))


def _run(commands: Commands) -> None:
    run = subcommand(
        commands,
        "run",
        "daemon: converge now, every resync and on config change",
        "  prepull-agent run --config /etc/prepull/preload.yaml --listen 0.0.0.0:9410",
        "exit codes: 0 after SIGTERM/SIGINT, 2 bad input at start",
    )
    flags.config(run)
    flags.owner(
        run,
        "$PREPULL_OWNER; in a DaemonSet's pod ($POD_NAME, $POD_NAMESPACE) daemonset:<ns>/<name>; "
        "else file:<the --config file's absolute path>",
    )
    cri_endpoint_arg(run)
    flags.node_platform(run)
    flags.containerd_config(run)
    flags.kubelet(run)
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
    flags.daemon_seconds(
        run,
        "--shutdown-grace",
        "shutdown_grace",
        0.0,
        "after SIGTERM, how long pulls in flight may finish",
    )
    flags.daemon_seconds(
        run,
        "--watch-interval",
        "watch_interval",
        0.1,
        "how often to look for a changed config file",
    )
    flags.daemon_seconds(
        run,
        "--container-scan-interval",
        "container_scan_interval",
        0.1,
        "how often to count new containers as cache hits or misses",
    )
    gate_flags.add(run)
    flags.daemon_seconds(
        run,
        "--progress-log-interval",
        "progress_log_interval",
        0.1,
        "a pull still running logs its bytes so far and rate this often",
    )
    flags.daemon_seconds(
        run,
        "--converge-deadline",
        "converge_deadline",
        1.0,
        "a ready node still converging to a new list after this long is reported overdue "
        "(/status, prepull_converging_overdue, fleet); it stays ready",
    )
    run.add_argument(
        "--strict-readiness",
        action="store_true",
        help="/readyz waits for every image, even those that failed permanently (404, denied, "
        "wrong platform); by default those are reported but not waited for",
    )
    flags.hosts_dir(run)
    run.set_defaults(command=DAEMON)


def _pins(commands: Commands) -> None:
    sub = subcommand(
        commands,
        "pins",
        "list the pins on this node and who holds each (owners, foreign pins, earlier agents)",
        "  prepull-agent pins\n  prepull-agent pins --owner daemonset:prepull-system/prepull-agent",
        "exit codes: 0 listed, 1 the runtime could not be asked",
    )
    cri_endpoint_arg(sub)
    sub.add_argument("--owner", metavar="NAME", help="only the pins NAME holds")
    flags.no_headers(sub, "column names")
    flags.format(sub)
    sub.set_defaults(command=Verb("pins", "pins"))


def _release(commands: Commands) -> None:
    sub = subcommand(
        commands,
        "release",
        "take an owner that is gone off every pin it holds (a pin no one else holds goes)",
        "  prepull-agent release --owner file:/root/test-list.yaml --dry-run\n"
        "  prepull-agent release --legacy",
        "exit codes: 0 released, 1 the runtime could not be asked, 2 bad input",
    )
    cri_endpoint_arg(sub)
    sub.add_argument("--owner", metavar="NAME", help="the owner, as `pins` shows it")
    sub.add_argument(
        "--legacy", action="store_true", help="the pins agents before owners set, no list adopted"
    )
    sub.add_argument("--dry-run", action="store_true", help="say what would go; change nothing")
    sub.set_defaults(command=Verb("pins", "release"))


def _lock(commands: Commands) -> None:
    lock = subcommand(
        commands,
        "lock",
        "pin every tag of a preload list to its current digest",
        "  prepull-agent lock --config preload.yaml --output-file preload.lock.yaml\n"
        "  prepull-agent lock --config preload.yaml --concurrency 64\n"
        "  prepull-agent lock --config preload.yaml --output-file preload.lock.yaml --check\n"
        "  prepull-agent lock --config preload.yaml --output-file preload.lock.yaml -o json",
        "exit codes: 0 written (--check: current), 1 a tag did not resolve, nothing written "
        "(--check: stale), 2 bad input",
    )
    flags.config(lock)
    flags.output_file(lock, "the lock")
    lock.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 naming each entry if the lock (--output-file) no longer "
        "matches the list or a locked tag moved in the registry (a CI gate)",
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
        "them usable; images the list has credentials for are left out (private)",
    )
    flags.public(lock, "allowlisted")
    flags.format(
        lock,
        text="the lock, to --output-file or stdout",
        structured="each entry's digest and locked reference, or its error, and with --check "
        "whether the lock is current and what differs (the lock is still written to "
        "--output-file, never printed)",
    )
    flags.hosts_dir(lock)
    lock.set_defaults(command=Verb("locking", "lock"))


def _resolve(commands: Commands) -> None:
    resolve = subcommand(
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
    flags.config(resolve, required=False)
    resolve.add_argument(
        "--insecure", action="store_true", help="speak plain HTTP to the image's registry"
    )
    flags.format(resolve)
    flags.hosts_dir(resolve)
    resolve.set_defaults(command=Verb("locking", "resolve"))


def _check(commands: Commands) -> None:
    check = subcommand(
        commands,
        "check",
        "validate a preload list, its pull secrets and hosts.toml files, touching no node",
        "  prepull-agent check --config preload.yaml\n"
        "  prepull-agent check --config preload.lock.yaml --containerd-hosts-dir ./certs.d",
        "exit codes: 0 valid, 2 bad input (file and line named)",
    )
    flags.config(check)
    flags.hosts_dir(check)
    check.set_defaults(command=Verb("locking", "check"))


def _status(commands: Commands) -> None:
    sub = subcommand(
        commands,
        "status",
        "show a running daemon's view of this node (its /status) as a table",
        "  prepull-agent status\n  prepull-agent status --endpoint 10.0.0.5:9410 -o json",
        "exit codes: 0 the node is ready, 1 not ready or the daemon cannot be reached, 2 bad input",
    )
    port = parse_listen(DEFAULT_LISTEN)[1]
    sub.add_argument(
        "--endpoint",
        default=f"http://127.0.0.1:{port}",
        help=f"the daemon's address: host:port as its --listen, or a URL (default "
        f"http://127.0.0.1:{port})",
    )
    flags.no_trunc(sub)
    flags.no_headers(sub, "node line, no column names")
    flags.format(sub)
    sub.set_defaults(command=Verb("status", "status"))


def _fleet(commands: Commands) -> None:
    sub = subcommand(
        commands,
        "fleet",
        "show every node's preload state, each agent's /status read through the API server "
        "(also `kubectl prepull`)",
        "  prepull-agent fleet\n  prepull-agent fleet --not-ready -l node-role.kubernetes.io/"
        "worker\n  kubectl prepull --context prod -o json | jq '.summary'",
        "exit codes: 0 every node selected (-l; --not-ready only hides rows) is ready, 1 a node "
        "is not ready or does not answer, or the API server refused, 2 bad input",
    )
    sub.add_argument("--kubeconfig", help="the kubeconfig (default: KUBECONFIG, ~/.kube/config)")
    sub.add_argument("--context", help="the kubeconfig context (default: its current-context)")
    sub.add_argument(
        "-n", "--namespace", default=flags.FLEET_NAMESPACE,
        help=f"where the agents run (default {flags.FLEET_NAMESPACE})",
    )  # fmt: skip
    sub.add_argument(
        "--agent-selector", default=flags.FLEET_AGENT_SELECTOR, metavar="SELECTOR",
        help=f"the agent pods' labels (default {flags.FLEET_AGENT_SELECTOR})",
    )  # fmt: skip
    sub.add_argument(
        "--port", default=flags.FLEET_PORT,
        help=f"the agent container's port, by name or number (default {flags.FLEET_PORT})",
    )  # fmt: skip
    sub.add_argument(
        "-l", "--selector", metavar="SELECTOR",
        help="only the nodes with these labels (a label selector, as kubectl get nodes -l)",
    )  # fmt: skip
    sub.add_argument(
        "--not-ready", action="store_true",
        help="rows for the nodes not ready only (the summary still counts all)",
    )  # fmt: skip
    sub.add_argument(
        "--concurrency", type=count_arg(1, 200), default=flags.FLEET_CONCURRENCY,
        help=f"agents asked at once (default {flags.FLEET_CONCURRENCY})",
    )  # fmt: skip
    sub.add_argument(
        "--timeout", type=seconds_arg(0.1), default=flags.FLEET_TIMEOUT, metavar="SECONDS",
        help=f"how long each agent has to answer (default {flags.FLEET_TIMEOUT:g})",
    )  # fmt: skip
    flags.no_trunc(sub)
    flags.no_headers(sub, "column names, no summary line")
    flags.format(sub)
    sub.set_defaults(command=Verb("fleet", "fleet_view"))


def _doctor(commands: Commands) -> None:
    sub = subcommand(
        commands,
        "doctor",
        "say how this node's containerd pulls for CRI (its pull path, what forced the old one, "
        "the settings that bound a pull) and what its kubelet will make of a preload list",
        "  prepull-agent doctor\n"
        "  prepull-agent doctor --containerd-config /host/etc/containerd/config.toml -o json\n"
        "  prepull-agent doctor --config preload.yaml --kubelet-config /var/lib/kubelet/"
        "config.yaml --multi-tenant",
        flags.DOCTOR_EXITS,
    )
    cri_endpoint_arg(sub)
    flags.containerd_config(sub)
    flags.kubelet(sub)
    sub.add_argument(
        "--config",
        type=Path,
        help="a preload list to judge against the kubelet's settings (verification, image GC)",
    )
    flags.public(sub, "offered for the kubelet's allowlist")
    flags.format(sub)
    sub.set_defaults(command=Verb("doctor", "doctor"))
