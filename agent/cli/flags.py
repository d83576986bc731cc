"""Flags several verbs share: each declared once, with its help and default."""

from __future__ import annotations

import argparse
from pathlib import Path

from agent.cli.common import OUTPUT_FORMATS, output_format, seconds_arg
from agent.core.defaults import CONTAINERD_CONFIG
from agent.core.defaults import HOSTS_DIR as DEFAULT_HOSTS_DIR
from agent.daemon.settings import DaemonSettings

# Defaults and texts of verbs whose modules load only when they run (parser.Verb).
FLEET_NAMESPACE = "prepull-system"
FLEET_AGENT_SELECTOR = "app.kubernetes.io/name=prepull-agent"
FLEET_PORT = "metrics"
FLEET_CONCURRENCY = 20
FLEET_TIMEOUT = 5.0
DOCTOR_EXITS = (
    "exit codes: 0 nothing to change, 1 a finding recommends a change (or containerd cannot be "
    "reached), 2 bad input (a config file that cannot be read or parsed, not containerd)"
)


def config(sub: argparse.ArgumentParser, *, required: bool = True) -> None:
    if required:
        sub.add_argument("--config", required=True, type=Path, help="the preload list (YAML)")
    else:
        sub.add_argument("--config", type=Path, help="take registry settings from a preload list")


def kubelet(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--kubelet-config",
        type=Path,
        metavar="FILE",
        help="the kubelet's configuration file (default: the running kubelet's --config, else "
        "/var/lib/kubelet/config.yaml and the other usual places; none found: not judged)",
    )
    sub.add_argument(
        "--multi-tenant",
        action="store_true",
        help="the node pool runs pods of tenants that must not use each other's private "
        "images: private images usable without a pull secret become a finding",
    )


def public(sub: argparse.ArgumentParser, effect: str) -> None:
    sub.add_argument(
        "--public",
        action="append",
        default=[],
        metavar="IMAGE",
        help=f"an image of the list anyone may pull though the list has credentials for it "
        f"({effect}); repeat for more",
    )


def node_platform(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--platform",
        help="this node's platform, e.g. linux/arm64 (default: the one containerd pulls "
        "for; uname if it does not say)",
    )


def hosts_dir(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--containerd-hosts-dir",
        type=Path,
        default=DEFAULT_HOSTS_DIR,
        metavar="DIR",
        help="containerd's registry hosts directory, for the same mirrors, CAs and plain-HTTP "
        f"registries containerd uses (default {DEFAULT_HOSTS_DIR}; ignored if absent)",
    )


def containerd_config(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--containerd-config",
        type=Path,
        metavar="FILE",
        help="containerd's config file, its imports followed, for how it pulls (default "
        f"{CONTAINERD_CONFIG}; containerd's defaults if it is absent)",
    )


def format(
    sub: argparse.ArgumentParser,
    choices: tuple[str, ...] = OUTPUT_FORMATS,
    text: str = "for people",
    structured: str = "one document with stable field names, for scripts and CI",
) -> None:
    """`-o` is the output format on every verb, as in kubectl; files have --output-file."""
    sub.add_argument(
        "-o",
        "--output",
        dest="format",
        type=output_format(choices),
        default=choices[0],
        metavar="FORMAT",
        help=f"{choices[0]} (default): {text}; {', '.join(choices[1:])}: {structured}",
    )
    # Before -o was the format everywhere (CHANGELOG), --format was: scripts keep working.
    sub.add_argument(
        "--format", dest="format", type=output_format(choices), default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )  # fmt: skip


def output_file(sub: argparse.ArgumentParser, what: str) -> None:
    sub.add_argument(
        "--output-file",
        dest="output",
        type=Path,
        metavar="FILE",
        help=f"where to write {what}, replaced whole at once (default: stdout)",
    )


def no_trunc(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--no-trunc", action="store_true", help="whole digests on a terminal too (as crictl)"
    )


def no_headers(sub: argparse.ArgumentParser, what: str) -> None:
    sub.add_argument("--no-headers", action="store_true", help=f"rows only: no {what}")


def daemon_seconds(
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


def owner(sub: argparse.ArgumentParser, default: str) -> None:
    sub.add_argument(
        "--owner",
        metavar="NAME",
        help="whose pins these are: a pin is released only when no owner still lists its image, "
        f'and an owner releases only its own (default {default}; README, "Pins")',
    )
