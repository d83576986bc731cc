"""The fleet view as a feature: one row per node from its agent's /status (hostile input), the
summary across nodes, and which nodes a DaemonSet targets."""
