"""The Kubernetes API, as an operator reads the fleet through it: the nodes (by label), the agent
pods, and each agent's /status through the API server's proxy to the pod
(`/api/v1/namespaces/{ns}/pods/{name}:{port}/proxy/status`, kubernetes pkg/registry/core/pod's
ResourceLocation), with the user's kubeconfig credentials (agent.adapters.kube.kubeconfig)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from agent.adapters.kube.client import Access, ApiClient, api_client
from agent.adapters.kube.errors import FLEET_HINTS, PROXY_HINTS, KubeApiError, refusal
from agent.adapters.kube.pages import LIST_TIMEOUT, MAX_PAGE_BYTES, Fields, read_list

# What `fleet` reads of each (core.fleet.view, core.fleet.targeting): a Node's status (its
# image list, conditions) is most of its size and never read.
NODE_FIELDS: Fields = (("metadata", "name"), ("metadata", "labels"), ("spec", "taints"))
POD_FIELDS: Fields = (
    ("metadata", "name"),
    ("metadata", "creationTimestamp"),
    ("metadata", "ownerReferences"),
    ("spec", "nodeName"),
    ("spec", "containers"),
    ("status", "phase"),
    ("status", "podIP"),
)
MAX_STATUS_BYTES = 4 * 1024 * 1024


class FleetApi:
    def __init__(self, client: ApiClient) -> None:
        self._client = client

    async def node_list(self, selector: str | None) -> dict[str, Any]:
        """Every Node (matching the label selector), all pages as one NodeList of the fields
        `fleet` reads."""
        return await self._list("/api/v1/nodes", selector, NODE_FIELDS)

    async def pod_list(self, namespace: str, selector: str) -> dict[str, Any]:
        path = f"/api/v1/namespaces/{quote(namespace, safe='')}/pods"
        return await self._list(path, selector, POD_FIELDS)

    async def daemonset_list(self, namespace: str, selector: str) -> dict[str, Any]:
        path = f"/apis/apps/v1/namespaces/{quote(namespace, safe='')}/daemonsets"
        return await self._list(path, selector)

    async def daemonset(self, namespace: str, name: str) -> Any:
        """One DaemonSet, parsed (checked by its reader)."""
        where = f"/apis/apps/v1/namespaces/{quote(namespace, safe='')}/daemonsets"
        document, _ = await self._get_json(f"{where}/{quote(name, safe='')}")
        return document

    async def agent_status(self, namespace: str, pod: str, port: int, within: float) -> Any:
        """The agent's /status through the pods' proxy subresource, parsed; KubeApiError saying
        why it could not be had within `within` seconds."""
        path = (
            f"/api/v1/namespaces/{quote(namespace, safe='')}/pods/"
            f"{quote(pod, safe='')}:{port}/proxy/status"
        )
        # Said in the row of its node: the request is not named.
        status, body = await self._client.send(
            "GET", path, limit=MAX_STATUS_BYTES, within=within, what=""
        )
        if status >= 400:
            raise refusal("", "GET", status, body, PROXY_HINTS)
        try:
            return json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise KubeApiError("its /status is not JSON") from exc

    async def _list(
        self, path: str, selector: str | None, fields: Fields | None = None
    ) -> dict[str, Any]:
        return await read_list(
            self._client, path, {"labelSelector": selector or ""}, FLEET_HINTS, fields
        )

    async def _get_json(self, url: str) -> tuple[Any, int]:
        """An object or a page of a list, parsed, and its size."""
        return await self._client.json(
            "GET", url, limit=MAX_PAGE_BYTES, within=LIST_TIMEOUT, hints=FLEET_HINTS
        )


@contextlib.asynccontextmanager
async def fleet_api(access: Access, connections: int) -> AsyncIterator[FleetApi]:
    """A FleetApi over one HTTP session holding at most `connections` connections."""
    async with api_client(access, connections) as client:
        yield FleetApi(client)
