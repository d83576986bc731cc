"""The doctor, one function each for `doctor` and the daemon's doctor loop: how the containerd
behind a socket pulls for CRI, read from its version, its config file (and imports), the
process serving the socket, and what the registries were seen to do with Range; and what the
node's kubelet will make of the list, read from its configuration file."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from agent.adapters import kubelet as kubelet_files
from agent.adapters.runtime import containerd_config, containerd_process
from agent.core.doctor import advice, kubelet, pullpath
from agent.core.lists.config import PreloadConfig
from agent.core.lists.credentials import CredentialFiles


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


@dataclasses.dataclass(frozen=True)
class KubeletCheckup:
    source: str | None
    """The kubelet configuration read; None when none was found."""
    findings: tuple[pullpath.Finding, ...] = ()

    @property
    def actionable(self) -> bool:
        return any(f.recommended is not None for f in self.findings)

    def to_json(self) -> dict[str, object]:
        return {"config": self.source, "findings": [f.to_json() for f in self.findings]}


def kubelet_checkup(
    path: Path | None,
    listing: PreloadConfig | None,
    *,
    multi_tenant: bool = False,
    public: frozenset[str] = frozenset(),
    pins_honoured: bool = True,
) -> KubeletCheckup:
    """What the kubelet configured at `path` (else the running kubelet's, else the usual
    places) will make of `listing`. An image is private when the list's credential files
    have credentials for it. InputError/ConfigError if `path` cannot be read or parsed."""
    found = path or kubelet_files.locate()
    if found is None:
        return KubeletCheckup(None)
    settings = kubelet_files.read(found)
    tenancy = kubelet.Tenancy(multi_tenant, public=public)
    if listing is not None:
        files = CredentialFiles(listing.credential_paths())
        by_name = {entry.reference.name: entry.reference for entry in listing.images}
        tenancy = dataclasses.replace(
            tenancy, private=lambda name: bool(files.lookup(by_name[name]))
        )
    findings = kubelet.findings(settings, listing, tenancy, pins_honoured=pins_honoured)
    return KubeletCheckup(str(found), tuple(findings))
