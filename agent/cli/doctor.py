"""`doctor`: how this node's containerd pulls for CRI (core.doctor.pullpath), from its version (CRI
Version) and its config file, and what its kubelet will make of a preload list
(core.doctor.kubelet), as a table or JSON."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from agent.cli.common import (
    EXIT_CONVERGED,
    EXIT_NOT_CONVERGED,
    credential_files,
    load_wiring,
    print_document,
)
from agent.core.doctor import advice, pullpath
from agent.core.errors import InputError
from agent.core.images import reference as references
from agent.core.lists import config as configs
from agent.core.runtimes import CONTAINERD, features_of

if TYPE_CHECKING:
    from agent.wiring import KubeletCheckup
from agent.core.text import fit


async def doctor(args: argparse.Namespace) -> int:
    wiring = load_wiring()
    if args.containerd_config is not None:
        wiring.check_config(args.containerd_config)  # bad input first: exit 2, no dial
    listing = configs.load(args.config) if args.config is not None else None
    if listing is not None:
        credential_files(listing)  # a broken credential file is bad input too
    public = frozenset(references.parse(name).name for name in args.public)
    async with wiring.runtime(args.cri_endpoint) as runtime:
        info = await runtime.cri.version()
    if info.name != CONTAINERD:
        raise InputError(f"doctor reads containerd; {args.cri_endpoint} is {info.name}")
    found = wiring.checkup(args.cri_endpoint, info.version, args.containerd_config)
    diagnosis, plan = found.diagnosis, found.plan
    pins = features_of(info.name, info.version).pins_honoured
    kubelet = wiring.kubelet_checkup(
        args.kubelet_config,
        listing,
        multi_tenant=args.multi_tenant,
        public=public,
        pins_honoured=pins,
    )
    if args.format != "text":
        document = {
            **diagnosis.to_json(),
            "apply": plan.text() if plan else None,
            "apply_plan": plan.to_json() if plan else None,
            "kubelet": kubelet.to_json(),
        }
        print_document(args, document)
    else:
        print(format_diagnosis(diagnosis, plan, kubelet))
    changes = diagnosis.actionable or kubelet.actionable
    return EXIT_NOT_CONVERGED if changes else EXIT_CONVERGED


def format_diagnosis(
    diagnosis: pullpath.Diagnosis,
    plan: advice.Plan | None = None,
    kubelet: KubeletCheckup | None = None,
) -> str:
    document = diagnosis.to_json()
    lines = [
        f"containerd {diagnosis.version}  pull path: {document['pull_path']}",
        f"config: {diagnosis.config}",
    ]
    if diagnosis.forced_by:
        lines.append(f"old path forced by: {', '.join(diagnosis.forced_by)}")
    width = max(len("SETTING"), *(len(setting) for setting in diagnosis.settings))
    lines += ["", f"{'SETTING'.ljust(width)}  VALUE"]
    lines += [f"{setting.ljust(width)}  {value}" for setting, value in diagnosis.settings.items()]
    if diagnosis.findings:
        lines += ["", "FINDINGS"]
    lines += _finding_lines(diagnosis.findings)
    if plan is not None:
        lines += ["", "TO APPLY, ALL AT ONCE", *plan.text().rstrip("\n").splitlines()]
    if kubelet is not None:
        lines += ["", f"kubelet config: {kubelet.source or 'none found (--kubelet-config FILE)'}"]
        if kubelet.findings:
            lines += ["", "KUBELET FINDINGS", *_finding_lines(kubelet.findings)]
    # containerd's version and config values are text from outside: each line one line, escaped.
    return "\n".join(fit(line) for line in lines)


def _finding_lines(findings: Sequence[pullpath.Finding]) -> list[str]:
    lines = []
    for finding in findings:
        lines.append(f"- {finding.setting}: {finding.current}")
        if finding.recommended is not None:
            lines.append(f"  recommended: {finding.recommended}")
        lines.append(f"  why: {finding.why}")
        lines.append(f"  impact: {finding.impact}")
    return lines
