"""The doctor's advice as an operator applies it, in one round: what to take out of containerd's
config file, what to put in (a drop-in for the transfer service, with the `imports` line the main
file needs when it has none; the CRI table of the file itself before 2.1), and whether what the
file says is what the running containerd was started with. Pure: the files' facts come in."""

from __future__ import annotations

import dataclasses
import datetime
import fnmatch
import json
import os
from collections.abc import Sequence

from agent.core.doctor.pullpath import TRANSFER, Diagnosis, Finding

DROP_IN = "conf.d/50-prepull.toml"
"""Beside the main file, as containerd's packages lay it out (/etc/containerd/conf.d)."""
STARTED_SLACK = 1.0
"""Seconds a file may look younger than containerd's start and still be what it read."""


@dataclasses.dataclass(frozen=True)
class Plan:
    remove: tuple[str, ...]
    """Settings (`<table>.<key>`) to take out of the main file."""
    imports: str | None
    """The `imports` line the main file needs (its whole list), when it does not import the
    drop-in yet."""
    drop_in_path: str | None
    drop_in: str | None
    in_main_file: str | None
    """Keys for the main file's own table (the CRI plugin's, before 2.1: a drop-in there would
    replace the whole table)."""

    def text(self) -> str:
        lines: list[str] = []
        if self.remove:
            lines.append("# in the main config file, remove (they force the old pull path):")
            lines += [f"#   {setting}" for setting in self.remove]
        if self.imports is not None:
            lines.append(
                "# the main config file's imports line (at its top, before any table; it "
                "replaces one it has):"
            )
            lines.append(self.imports)
        if self.drop_in is not None:
            lines.append(f"# {self.drop_in_path}:")
            lines.append(self.drop_in.rstrip("\n"))
        if self.in_main_file is not None:
            lines.append("# in the main config file's own table (not a drop-in):")
            lines.append(self.in_main_file.rstrip("\n"))
        lines.append("# then restart containerd")
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def plan(diagnosis: Diagnosis, main_file: str | None, imports: Sequence[str]) -> Plan | None:
    """Everything to change for the doctor to find nothing the next time, or None when there is
    nothing. `main_file`: the config file containerd reads first (None: it has none);
    `imports`: that file's `imports` list as written."""
    tuning = [f for f in diagnosis.findings if f.tuning and f.recommended is not None]
    remove = diagnosis.forced_by
    if not tuning and not remove:
        return None
    folder = os.path.dirname(main_file) if main_file else "/etc/containerd"
    to_transfer = [f for f in tuning if f.setting.startswith(TRANSFER + ".")]
    own_table = [f for f in tuning if f not in to_transfer]
    drop_in_path = drop_in = needed = None
    if to_transfer:
        drop_in_path = f"{folder}/{DROP_IN}"
        drop_in = f"version = 3\n[{TRANSFER}]\n{_keys(to_transfer)}"
        if not any(fnmatch.fnmatch(drop_in_path, _absolute(i, folder)) for i in imports):
            pattern = f"{folder}/{DROP_IN.rpartition('/')[0]}/*.toml"
            needed = f"imports = {json.dumps([*imports, pattern])}"
    in_main = None
    if own_table:
        table = own_table[0].setting.rpartition(".")[0]
        in_main = f"[{table}]\n{_keys(own_table)}"
    return Plan(remove, needed, drop_in_path, drop_in, in_main)


def _keys(findings: Sequence[Finding]) -> str:
    return "".join(f"  {f.setting.rpartition('.')[2]} = {f.recommended}\n" for f in findings)


def _absolute(path: str, folder: str) -> str:
    """An import as containerd resolves it: a glob relative to its working directory (/), any
    other path relative to the importing file's folder."""
    if os.path.isabs(path):
        return path
    return os.path.join("/" if "*" in path else folder, path)


def stale_config(edited: float | None, started: float | None, files: str) -> Finding | None:
    """A finding when the config was changed after containerd started: the file then says
    what containerd will do once restarted, not what it does now."""
    # The start time is counted in clock ticks after boot: a file written just before the
    # start may look a moment younger than it.
    if edited is None or started is None or edited <= started + STARTED_SLACK:
        return None
    return Finding(
        "containerd's config",
        f"edited {_when(edited)}, after containerd started ({_when(started)})",
        "restart containerd",
        f"containerd reads {files} only when it starts: edited, not applied",
        "the settings shown are what containerd will use once restarted, not what it uses now",
    )


def _when(moment: float) -> str:
    return datetime.datetime.fromtimestamp(moment, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
