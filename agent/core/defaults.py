"""Where things are on a node unless told otherwise: what the command line offers as defaults
and the adapters fall back to, in one place so that neither has to ask the other."""

from __future__ import annotations

from pathlib import Path

CRI_ENDPOINT = "unix:///run/containerd/containerd.sock"
"""containerd's own default socket (CRI is served on it)."""
CONTAINERD_CONFIG = Path("/etc/containerd/config.toml")
HOSTS_DIR = Path("/etc/containerd/certs.d")
"""containerd's registry hosts directory (`config_path`), as its docs install it."""
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
"""Where kubelet mounts a pod's service account (Kubernetes docs, "Accessing the Kubernetes API
from a Pod")."""
