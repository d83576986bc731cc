"""The adapters (agent.adapters) against in-process stand-ins: hostile answers included."""
