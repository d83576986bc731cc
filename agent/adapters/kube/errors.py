"""The one table from the API server's answers to the project's errors, for every feature that
asks it (the gate's Node writes, the fleet view's lists and proxied /status)."""

from __future__ import annotations

import json

from agent.core.errors import AgentError, Conflict, KubeApiError

__all__ = ["KubeApiError", "about", "refusal", "refusal_message"]  # KubeApiError: core.errors
from agent.core.text import fit

MAX_MESSAGE = 1000
"""The longest API server message kept whole."""


def refusal_message(text: str) -> str:
    """The `message` of a Kubernetes Status body, else the body's start."""
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return fit(text, 200)
    if isinstance(document, dict) and isinstance(document.get("message"), str):
        return fit(document["message"], MAX_MESSAGE)
    return fit(text, 200)


# What an operator does about each refusal, by who asked: the readiness gate (as the agent's
# service account, or acting as its node) or the fleet view (as the user).
GATE_HINTS = {
    401: "the service account token was refused",
    403: "forbidden: apply the RBAC of deploy/'s readiness-gate or node-readiness-controller "
    "component (nodes get/patch, nodes/status patch, events create/patch in the agent's "
    "namespace) and run with its service account",
    404: "no such node: is NODE_NAME (spec.nodeName) right?",
}
IMPERSONATION_HINTS = {
    403: "acting as this node was refused: the service account needs "
    "impersonate:associated-node and the impersonate-on grants of "
    "deploy/components/node-impersonation, on an API server with constrained impersonation "
    "(Kubernetes 1.36+); the gate tries again",
}
FLEET_HINTS = {403: "deploy/components/fleet-reader holds the RBAC `fleet` needs"}
WORKLOAD_HINTS = {
    403: "from-cluster lists deployments, statefulsets, daemonsets, replicasets (apps), jobs, "
    "cronjobs (batch), pods and capacitybuffers (autoscaling.x-k8s.io), gets podtemplates, "
    "and with --configmap gets and patches that ConfigMap: grant those (README, from-cluster)"
}
# What the API server's proxy says when it cannot reach the pod (k8s.io/apimachinery
# pkg/util/proxy/transport.go): 503 "error trying to reach service: …". With deploy/'s
# NetworkPolicy enforced, the API server is not let in unless an overlay admits it.
PROXY_HINTS = {
    **FLEET_HINTS,
    **dict.fromkeys(
        (502, 503, 504),
        'is the API server let through the agent\'s NetworkPolicy? README, "The fleet view"',
    ),
}


def refusal(what: str, method: str, status: int, body: bytes, hints: dict[int, str]) -> AgentError:
    """The error for an API server's refusal (status ≥ 400): a guarded write that lost a race is
    a Conflict (the caller reads again); anything else says what the server said, with what to
    do about it where `hints` knows."""
    text = body.decode(errors="replace")
    if status in (409, 422) and method == "PATCH":
        return Conflict(about(what, refusal_message(text)))
    hint = hints.get(status)
    message = f"HTTP {status}: {refusal_message(text)}" + (f"; {hint}" if hint else "")
    return KubeApiError(about(what, message), status)


def about(what: str, said: str) -> str:
    """`said` of the request `what` ("GET /api/v1/nodes/n1"); a caller that names the request
    itself (a row of the fleet table names its node) gives no `what`."""
    return f"{what}: {said}" if what else said
