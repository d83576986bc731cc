"""A watch's events as from-cluster's keeper reads them (agent.adapters.kube.workloads), hostile
input included."""

from __future__ import annotations

import json

import pytest

from agent.adapters.kube.workloads import Expired, _change
from agent.core.errors import KubeApiError

PATH = "/apis/apps/v1/deployments?watch=1"


def event(kind: str, obj: object) -> bytes:
    return json.dumps({"type": kind, "object": obj}).encode()


@pytest.mark.parametrize("kind", ["ADDED", "MODIFIED", "DELETED"])
def test_an_object_changed_is_a_change(kind: str) -> None:
    assert _change(event(kind, {"metadata": {"name": "web"}}), PATH) is None


def test_a_bookmark_moves_the_version_on() -> None:
    assert _change(event("BOOKMARK", {"metadata": {"resourceVersion": "812"}}), PATH) == "812"


def test_a_version_compacted_away_is_expired_and_other_errors_are_said() -> None:
    gone = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
    with pytest.raises(Expired) as expired:
        _change(event("ERROR", gone), PATH)
    assert expired.value.status == 410
    with pytest.raises(KubeApiError, match="error 500: \\\\x1b\\[2J"):
        _change(event("ERROR", {"code": 500, "message": "\x1b[2J"}), PATH)


@pytest.mark.parametrize(
    "line",
    [b"{not json", b"[]", event("BOOKMARK", {"metadata": {}}), event("SURPRISE", {})],
)
def test_what_is_no_watch_event_is_an_error_naming_the_request(line: bytes) -> None:
    with pytest.raises(KubeApiError, match="GET /apis/apps/v1/deployments"):
        _change(line, PATH)
