"""The list tools (agent.preload): lock and generate."""
