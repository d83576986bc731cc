"""The gRPC channel to the runtime socket, and the error handling CRI and containerd share."""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from agent.core.defaults import CRI_ENDPOINT as DEFAULT_ENDPOINT
from agent.core.errors import RuntimeUnavailable
from agent.core.retry import RetryPolicy, retry
from agent.core.text import fit

# Short calls answer in milliseconds; a pull takes as long as the image needs (no deadline).
CALL_TIMEOUT = 30.0

__all__ = ["DEFAULT_ENDPOINT", "call", "open_channel"]

T = TypeVar("T")
# A node with thousands of images answers ListImages with several MiB.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Seen: parallel pulls on containerd 1.6 fail with UNAVAILABLE "connection reset by peer".
TRANSIENT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})
ALL_CODES = frozenset(grpc.StatusCode)


def target(endpoint: str) -> str:
    """gRPC target for `endpoint`; a bare socket path means unix://."""
    if endpoint.startswith("/"):
        return f"unix://{endpoint}"
    return endpoint


def open_channel(endpoint: str) -> grpc.aio.Channel:
    """One channel per process; both the CRI and the containerd client share it."""
    return grpc.aio.insecure_channel(
        target(endpoint),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.enable_retries", 0),
        ],
    )


def code_of(exc: BaseException) -> grpc.StatusCode | None:
    return exc.code() if isinstance(exc, grpc.aio.AioRpcError) else None


def details_of(exc: BaseException) -> str:
    # containerd's details carry a registry's text (its error body, during its own pull).
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {fit(exc.details())}"
    return fit(exc)


def is_transient(exc: BaseException) -> bool:
    return code_of(exc) in TRANSIENT_CODES


# containerd reports a registry's answer during its own pull as text inside gRPC UNKNOWN, e.g.
# "unexpected status from GET request to http://…: 503 Service Unavailable" or "unexpected
# status code …: 500 Internal Server Error" (containerd remotes/docker), and containerd 1.6
# resolving a tag "pulling from host … failed with status code [manifests 1]: 500 Internal
# Server Error" (its resolver.go; seen). Conservative: only these statuses, only in those
# phrases, followed by their reason text (not a port like :5000).
_REGISTRY_SAID = r"(?:unexpected status|failed with status code)\b.*?: "
_REGISTRY_TRANSIENT = re.compile(_REGISTRY_SAID + r"(?:429|50[0-4]) [A-Z]")
_REGISTRY_REFUSAL = re.compile(_REGISTRY_SAID + r"(?:401|403|404) [A-Z]")


def _registry_said(exc: BaseException, statuses: re.Pattern[str]) -> bool:
    """Whether containerd's error text reports one of `statuses` from the registry."""
    return isinstance(exc, grpc.aio.AioRpcError) and bool(statuses.search(exc.details() or ""))


def is_permanent_pull(exc: BaseException) -> bool:
    """A pull failure no retry will fix: the runtime or the registry says not found or denied."""
    if code_of(exc) in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED):
        return True
    return _registry_said(exc, _REGISTRY_REFUSAL)


def is_transient_pull(exc: BaseException) -> bool:
    """A pull failure worth retrying: the runtime was unavailable, or the registry answered
    containerd with 5xx or 429."""
    return is_transient(exc) or _registry_said(exc, _REGISTRY_TRANSIENT)


async def call(
    endpoint: str,
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    policy: RetryPolicy,
    handled: frozenset[grpc.StatusCode] = frozenset(),
    transient: Callable[[BaseException], bool] = is_transient,
) -> T:
    """Run one RPC with retries. Errors with a code in `handled` reach the caller as they are;
    any other means the runtime cannot serve us, reported as RuntimeUnavailable."""

    def worth_retrying(exc: BaseException) -> bool:
        # No socket at the path, or one we may not open, does not heal in seconds: say so now.
        return transient(exc) and unreachable(endpoint, exc) in (None, "connection refused")

    try:
        return await retry(operation, is_transient=worth_retrying, policy=policy, what=what)
    except grpc.aio.AioRpcError as exc:
        if exc.code() in handled:
            raise
        reason = unreachable(endpoint, exc)
        if reason is not None:
            raise RuntimeUnavailable(
                endpoint,
                f"nothing listens there ({reason}); is containerd "
                "running, and is --cri-endpoint (or $PREPULL_CRI_ENDPOINT) right?",
            ) from exc
        raise RuntimeUnavailable(endpoint, f"{what}: {details_of(exc)}") from exc


def socket_path(endpoint: str) -> str | None:
    """The file of a unix-socket endpoint, else None."""
    if endpoint.startswith("/"):
        return endpoint
    if endpoint.startswith("unix://"):
        return endpoint.removeprefix("unix://")
    return None


def unreachable(endpoint: str, exc: BaseException) -> str | None:
    """Why a unix-socket endpoint cannot be reached at all, in words, or None."""
    path = socket_path(endpoint)
    if path is None or code_of(exc) != grpc.StatusCode.UNAVAILABLE:
        return None
    if not os.path.exists(path):
        return "no such socket"
    details = details_of(exc).lower()
    if "connection refused" in details:
        return "connection refused"
    if "permission denied" in details:
        return "permission denied: run as root or as a member of the socket's group"
    return None
