"""The pure core (agent.core): each concept tested on its own, no I/O."""
