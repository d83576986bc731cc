"""The command line, `prepull-agent`: main() turns each verb's result or error into an exit code."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from agent.cli import logs
from agent.cli.common import exit_code, log
from agent.cli.parser import parser
from agent.cli.verb import DAEMON
from agent.core.errors import AgentError, ConfigError
from agent.core.text import fit


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    daemon = args.command == DAEMON
    logs.setup(getattr(args, "log_format", "text"), verbose=args.verbose or daemon, daemon=daemon)
    try:
        code: int = asyncio.run(args.command(args))
        return code
    except AgentError as exc:
        if getattr(args, "log_format", "text") == "json":
            # The daemon's log collector reads JSON lines: a start-up error is one of them.
            log.error("%s", exc, extra={"event": "fatal", "error": str(exc)})
        else:
            said = [p.said for p in exc.problems] if isinstance(exc, ConfigError) else [str(exc)]
            for line in said:
                print(f"prepull-agent: {fit(line)}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        return 130


def kubectl_plugin() -> int:
    """`kubectl prepull …`: kubectl runs the `kubectl-prepull` executable on PATH with the
    arguments after `prepull`; it is `prepull-agent fleet`."""
    return main(["fleet", *sys.argv[1:]])
