"""What the readiness gate asks of the Kubernetes API: its own Node (read, patched, its status
patched) and the Events it records about it (NodeApi and EventApi of agent.core.reports)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from agent.adapters.kube.access import ClusterAccess
from agent.adapters.kube.client import JSON_PATCH, MERGE_PATCH, ApiClient
from agent.adapters.kube.errors import GATE_HINTS, IMPERSONATION_HINTS, KubeApiError
from agent.core.reports.gate import checked_node

REQUEST_TIMEOUT = 10.0
MAX_RESPONSE_BYTES = 4 * 1024 * 1024


class KubeApi:
    """NodeApi (agent.core.reports.gate) over HTTPS, for `access.node`."""

    def __init__(self, client: ApiClient, access: ClusterAccess) -> None:
        self._client = client
        self._path = f"/api/v1/nodes/{quote(access.node, safe='')}"
        self._events = f"/api/v1/namespaces/{quote(access.namespace, safe='')}/events"
        self._hints = {**GATE_HINTS, **(IMPERSONATION_HINTS if access.impersonate_node else {})}

    async def get_node(self) -> dict[str, Any]:
        """The Node, its shape checked where the gate reads it (reports.gate.checked_node)."""
        return checked_node(await self._request("GET", self._path))

    async def patch_status(self, patch: dict[str, Any]) -> None:
        await self._request("PATCH", self._path + "/status", patch, MERGE_PATCH)

    async def json_patch(self, operations: list[dict[str, Any]]) -> None:
        await self._request("PATCH", self._path, operations, JSON_PATCH)

    async def create_event(self, event: dict[str, Any]) -> None:
        await self._request("POST", self._events, event)

    async def patch_event(self, name: str, patch: dict[str, Any]) -> bool:
        """False if the Event is gone (the API server keeps Events an hour)."""
        path = f"{self._events}/{quote(name, safe='')}"
        try:
            await self._request("PATCH", path, patch, MERGE_PATCH)
        except KubeApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def _request(
        self, method: str, path: str, body: object = None, content_type: str = "application/json"
    ) -> dict[str, Any]:
        document, _ = await self._client.json(
            method,
            path,
            limit=MAX_RESPONSE_BYTES,
            within=REQUEST_TIMEOUT,
            hints=self._hints,
            body=body,
            content_type=content_type,
        )
        if not isinstance(document, dict):
            raise KubeApiError(
                f"{method} {path}: the API server answered JSON that is not an object"
            )
        return document
