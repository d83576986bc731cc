"""`doctor`: how this node's containerd pulls for CRI (core.doctor.pullpath), from its version (CRI
Version) and its config file, as a table or JSON."""

from __future__ import annotations

import argparse

from agent.cli.common import EXIT_CONVERGED, EXIT_NOT_CONVERGED, load_wiring, print_document
from agent.core.doctor import advice, pullpath
from agent.core.errors import InputError
from agent.core.runtimes import CONTAINERD
from agent.core.text import fit


async def doctor(args: argparse.Namespace) -> int:
    wiring = load_wiring()
    if args.containerd_config is not None:
        wiring.check_config(args.containerd_config)  # bad input first: exit 2, no dial
    async with wiring.runtime(args.cri_endpoint) as runtime:
        info = await runtime.cri.version()
    if info.name != CONTAINERD:
        raise InputError(f"doctor reads containerd; {args.cri_endpoint} is {info.name}")
    found = wiring.checkup(args.cri_endpoint, info.version, args.containerd_config)
    diagnosis, plan = found.diagnosis, found.plan
    if args.format != "text":
        document = {
            **diagnosis.to_json(),
            "apply": plan.text() if plan else None,
            "apply_plan": plan.to_json() if plan else None,
        }
        print_document(args, document)
    else:
        print(format_diagnosis(diagnosis, plan))
    return EXIT_NOT_CONVERGED if diagnosis.actionable else EXIT_CONVERGED


def format_diagnosis(diagnosis: pullpath.Diagnosis, plan: advice.Plan | None = None) -> str:
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
    for finding in diagnosis.findings:
        lines.append(f"- {finding.setting}: {finding.current}")
        if finding.recommended is not None:
            lines.append(f"  recommended: {finding.recommended}")
        lines.append(f"  why: {finding.why}")
        lines.append(f"  impact: {finding.impact}")
    if plan is not None:
        lines += ["", "TO APPLY, ALL AT ONCE", *plan.text().rstrip("\n").splitlines()]
    # containerd's version and config values are text from outside: each line one line, escaped.
    return "\n".join(fit(line) for line in lines)
