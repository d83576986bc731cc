"""prepull-agent: preload pinned container images into containerd over CRI."""

__version__ = "0.1.0"
