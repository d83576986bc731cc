"""The command line (agent.cli): parsing, output, exit codes, logs."""
