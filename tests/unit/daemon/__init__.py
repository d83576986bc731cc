"""The daemon (agent.daemon): its loops, metrics and state, in process on the fakes."""
