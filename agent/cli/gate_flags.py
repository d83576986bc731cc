"""The daemon's readiness-gate flags (`run`): the node condition, the startup taint, and how the
agent reaches the Kubernetes API for them."""

from __future__ import annotations

import argparse
from pathlib import Path

from agent.cli.common import seconds_arg
from agent.core.defaults import SERVICE_ACCOUNT


def add(run: argparse.ArgumentParser) -> None:
    gate = run.add_argument_group(
        "readiness gate (opt-in; needs deploy/readiness-gate RBAC)",
        "keep pods off the node until its list is preloaded: a prepull.io/PrepullReady node "
        "condition, "
        "and the removal of a startup taint",
    )
    gate.add_argument(
        "--node-condition",
        action="store_true",
        help="keep this node's prepull.io/PrepullReady condition (status, reason, message naming "
        "what is "
        "missing) up to date",
    )
    gate.add_argument(
        "--remove-startup-taint",
        metavar="KEY",
        help="remove the taint KEY (e.g. prepull.io/not-ready, from kubelet's "
        "--register-with-taints or Karpenter's startupTaints) from this node once it is ready",
    )
    gate.add_argument(
        "--ready-timeout",
        type=seconds_arg(1),
        metavar="SECONDS",
        help="remove the startup taint anyway after this long, and say so (default: wait)",
    )
    gate.add_argument(
        "--no-node-events",
        dest="node_events",
        action="store_false",
        help="record no Events on the Node (by default the gate records failing images and its "
        "decisions there, for `kubectl describe node`; that needs events create/patch in the "
        "agent's namespace)",
    )
    gate.add_argument(
        "--impersonate-node",
        action="store_true",
        help="act as this node (system:node:NAME) through constrained impersonation (Kubernetes "
        "1.36+, deploy/overlays/node-readiness-controller-impersonation): the API server then "
        "lets the agent write only its own Node; for --node-condition, not for a taint",
    )
    gate.add_argument(
        "--events-namespace",
        metavar="NAMESPACE",
        help="where Events about the Node go (default $POD_NAMESPACE, from the downward API: "
        "metadata.namespace; else the service account's namespace; else default)",
    )
    gate.add_argument(
        "--node-name",
        help="this node's name (default $NODE_NAME, from the downward API: spec.nodeName; "
        "else the hostname): the gate's node, and this node's place in a rollout's spread",
    )
    gate.add_argument(
        "--kube-api",
        metavar="URL",
        help="the API server (default https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT)",
    )
    gate.add_argument(
        "--kube-token-file",
        type=Path,
        metavar="FILE",
        help=f"bearer token, read again for every request (default {SERVICE_ACCOUNT}/token)",
    )
    gate.add_argument(
        "--kube-ca-file",
        type=Path,
        metavar="FILE",
        help=f"CA bundle of the API server (default {SERVICE_ACCOUNT}/ca.crt)",
    )
