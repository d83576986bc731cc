"""`doctor`: how this node's containerd pulls for CRI (agent.core.pullpath), from its version (CRI
Version) and its config file, as a table or JSON."""

from __future__ import annotations

import argparse

from agent.adapters.runtime import containerd_config, containerd_process
from agent.cli.common import EXIT_CONVERGED, EXIT_NOT_CONVERGED, load_wiring, print_document
from agent.core import pullpath
from agent.core.errors import InputError
from agent.core.runtimes import CONTAINERD
from agent.core.text import fit

EXITS = (
    "exit codes: 0 nothing to change, 1 a finding recommends a change (or containerd cannot be "
    "reached), 2 bad input (a config file that cannot be read or parsed, not containerd)"
)


async def doctor(args: argparse.Namespace) -> int:
    if args.containerd_config is not None:
        containerd_config.load(args.containerd_config)  # bad input first: exit 2, no dial
    wiring = load_wiring()
    async with wiring.runtime(args.cri_endpoint) as runtime:
        info = await runtime.cri.version()
    if info.name != CONTAINERD:
        raise InputError(f"doctor reads containerd; {args.cri_endpoint} is {info.name}")
    config, source = containerd_config.effective(args.containerd_config, info.version)
    used = containerd_process.decompressor(args.cri_endpoint, info.version)
    diagnosis = pullpath.diagnose(info.version, config, source, decompressor=used)
    if args.format != "text":
        print_document(args, {**diagnosis.to_json(), "apply": pullpath.how_to_apply(diagnosis)})
    else:
        print(format_diagnosis(diagnosis))
    return EXIT_NOT_CONVERGED if diagnosis.actionable else EXIT_CONVERGED


def format_diagnosis(diagnosis: pullpath.Diagnosis) -> str:
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
    apply = pullpath.how_to_apply(diagnosis)
    if apply is not None:
        lines += ["", "TO APPLY THE MEASURED ADVICE", *apply.rstrip("\n").splitlines()]
    # containerd's version and config values are text from outside: each line one line, escaped.
    return "\n".join(fit(line) for line in lines)
