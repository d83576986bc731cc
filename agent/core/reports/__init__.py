"""What the node tells: its report (/status, readiness), pull progress, container-start
verdicts, the readiness gate's decisions and the Events on the Node."""
