"""The node's kubelet configuration file: where it is (the running kubelet's `--config`, else
where installers put it) and what it says (agent.core.doctor.kubelet reads it)."""

from __future__ import annotations

import os
from pathlib import Path

from agent.core.doctor import kubelet
from agent.core.errors import InputError
from agent.core.files import UnreadableFile, read_text

USUAL_PATHS = (
    Path("/var/lib/kubelet/config.yaml"),  # kubeadm
    Path("/etc/kubernetes/kubelet/config.json"),  # Amazon EKS AMIs
    Path("/etc/kubernetes/kubelet/kubelet-config.json"),
    Path("/home/kubernetes/kubelet-config.yaml"),  # GKE
    Path("/etc/kubernetes/kubelet-config.yaml"),
)
MAX_BYTES = 1 << 20
"""A kubelet configuration is a few KiB; anything past this is not one."""


def locate(proc: Path = Path("/proc"), usual: tuple[Path, ...] = USUAL_PATHS) -> Path | None:
    """The file the running kubelet was started with (`--config`), else the first of the
    usual places that exists; None if neither."""
    named = running_kubelet_config(proc)
    if named is not None:
        return named
    return next((path for path in usual if path.is_file()), None)


def running_kubelet_config(proc: Path = Path("/proc")) -> Path | None:
    """The `--config` of a process named kubelet, made absolute against its working
    directory; None when no kubelet runs in this PID namespace or it names none."""
    try:
        entries = [entry for entry in os.scandir(proc) if entry.name.isdigit()]
    except OSError:
        return None
    for entry in entries:
        try:
            argv = (Path(entry.path) / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone, or not ours to read
        if not argv or os.path.basename(argv[0]) != b"kubelet":
            continue
        named = _config_flag([a.decode(errors="replace") for a in argv[1:] if a])
        if named is None:
            return None
        if not os.path.isabs(named):
            try:
                named = os.path.join(os.readlink(Path(entry.path) / "cwd"), named)
            except OSError:
                return None
        return Path(named)
    return None


def _config_flag(args: list[str]) -> str | None:
    for i, arg in enumerate(args):
        for flag in ("--config", "-config"):
            if arg == flag and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(flag + "="):
                return arg.partition("=")[2]
    return None


def read(path: Path) -> kubelet.KubeletConfig:
    """The settings of the kubelet configuration at `path`; InputError naming it when it
    cannot be read, ConfigError (file and line) when kubelet would refuse it."""
    try:
        text = read_text(path, MAX_BYTES)
    except UnreadableFile as exc:
        reason = f"cannot read the kubelet configuration {path}: {exc}"
        raise InputError(reason) from None  # the reason is said; its traceback adds nothing
    return kubelet.parse(text, str(path))
