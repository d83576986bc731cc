"""The pull doctor, one function for `doctor` and the daemon's doctor loop: how the containerd
behind a socket pulls for CRI, read from its version, its config file (and imports), the
process serving the socket, and what the registries were seen to do with Range."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from agent.adapters.runtime import containerd_config, containerd_process
from agent.core.doctor import advice, pullpath


@dataclasses.dataclass(frozen=True)
class Checkup:
    diagnosis: pullpath.Diagnosis
    plan: advice.Plan | None
    """Every change the findings recommend, to apply in one round (None: nothing to change)."""


def check_config(path: Path) -> None:
    """A containerd config named on the command line must be there and parse: InputError now
    (exit 2), not a finding later."""
    containerd_config.load(path)


def checkup(
    endpoint: str,
    version: str,
    config_path: Path | None,
    ignoring_range: Sequence[str] = (),
) -> Checkup:
    """The diagnosis of containerd `version` serving `endpoint` (its config file `config_path`,
    else the default), with a stale config (edited after containerd started) among the
    findings, and the plan that applies them. ConfigError/InputError if the config cannot be
    read."""
    config, files = containerd_config.effective(config_path, version)
    source = containerd_config.source_of(files)
    used = containerd_process.decompressor(endpoint, version)
    diagnosis = pullpath.diagnose(version, config, source, list(ignoring_range), used)
    if source is not None:
        # What the file says against what the running containerd read when it started.
        stale = advice.stale_config(
            containerd_config.edited_at(files), containerd_process.started_at(endpoint), source
        )
        if stale is not None:
            diagnosis = dataclasses.replace(diagnosis, findings=(*diagnosis.findings, stale))
    main = files[0] if files else None
    imports = containerd_config.imports_of(Path(main)) if main is not None else []
    return Checkup(diagnosis, advice.plan(diagnosis, main, imports))
