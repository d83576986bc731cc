"""The Kubernetes API, as an operator reads the fleet through it: the nodes (by label), the agent
pods, and each agent's /status through the API server's proxy to the pod
(`/api/v1/namespaces/{ns}/pods/{name}:{port}/proxy/status`, kubernetes pkg/registry/core/pod's
ResourceLocation), with the user's kubeconfig credentials (agent.adapters.kubeconfig)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp

from agent.adapters.kube import KubeApiError, redirect_of, refusal_message
from agent.adapters.kubeconfig import Access
from agent.adapters.registry.transport import BodyTooLarge, read_bounded
from agent.core.files import size_text
from agent.core.jsonread import pick

# A page of a list; the API server hands the rest on with `continue`. A list longer than
# MAX_PAGES pages (the largest clusters hold some 15,000 nodes) is an API server that never ends.
PAGE = 500
MAX_PAGES = 200
MAX_PAGE_BYTES = 64 * 1024 * 1024
MAX_LIST_BYTES = 512 * 1024 * 1024
Fields = tuple[tuple[str, ...], ...]
# What `fleet` reads of each (agent.core.fleet, agent.core.targeting): a Node's status (its
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
LIST_TIMEOUT = 60.0
# What the API server's proxy says when it cannot reach the pod (k8s.io/apimachinery
# pkg/util/proxy/transport.go): 503 "error trying to reach service: …". With deploy/'s
# NetworkPolicy enforced, the API server is not let in unless an overlay admits it.
UNREACHABLE_HINT = (
    'is the API server let through the agent\'s NetworkPolicy? README, "The fleet view"'
)

FORBIDDEN_HINT = "deploy/components/fleet-reader holds the RBAC `fleet` needs"


class FleetApi:
    def __init__(self, session: aiohttp.ClientSession, access: Access) -> None:
        self._session = session
        self._access = access

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
        document, _ = await self._get_json(f"{where}/{quote(name, safe='')}", where)
        return document

    async def agent_status(self, namespace: str, pod: str, port: int, within: float) -> Any:
        """The agent's /status through the pods' proxy subresource, parsed; KubeApiError saying
        why it could not be had within `within` seconds."""
        path = (
            f"/api/v1/namespaces/{quote(namespace, safe='')}/pods/"
            f"{quote(pod, safe='')}:{port}/proxy/status"
        )
        status, body = await self._get(path, MAX_STATUS_BYTES, within)
        if status >= 400:
            message = refusal_message(body.decode(errors="replace"))
            hint = f"; {UNREACHABLE_HINT}" if status in (502, 503, 504) else _rbac_hint(status)
            raise KubeApiError(f"HTTP {status}: {message}{hint}", status)
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            raise KubeApiError("its /status is not JSON") from None

    async def _list(
        self, path: str, selector: str | None, fields: Fields | None = None
    ) -> dict[str, Any]:
        """All pages as one list, each item cut to `fields`; KubeApiError past MAX_PAGES pages
        or MAX_LIST_BYTES in all (what one page may hold times the pages is far too much)."""
        items: list[Any] = []
        token: Any = ""
        read = 0
        for _ in range(MAX_PAGES):
            query = {"limit": str(PAGE)}
            if selector:
                query["labelSelector"] = selector
            if token:
                query["continue"] = token
            page, size = await self._get_json(f"{path}?{urlencode(query)}", path)
            read += size
            if read > MAX_LIST_BYTES:
                raise KubeApiError(
                    f"GET {path}: the list is larger than {size_text(MAX_LIST_BYTES)} in all"
                )
            if not isinstance(page, dict) or not isinstance(page.get("items"), list):
                raise KubeApiError(f"GET {path}: the API server answered no list")
            items.extend(pick(i, fields) if fields else i for i in page["items"])
            metadata = page.get("metadata")
            token = metadata.get("continue") if isinstance(metadata, dict) else None
            if not isinstance(token, str) or not token:
                return {"items": items}
        raise KubeApiError(f"GET {path}: the API server sent more than {MAX_PAGES} pages")

    async def _get_json(self, url: str, path: str) -> tuple[Any, int]:
        """An object or a page of a list, parsed, and its size; errors name `path` (the URL
        without query)."""
        status, body = await self._get(url, MAX_PAGE_BYTES, LIST_TIMEOUT)
        if status >= 400:
            message = refusal_message(body.decode(errors="replace")) + _rbac_hint(status)
            raise KubeApiError(f"GET {path}: HTTP {status}: {message}", status)
        try:
            return json.loads(body), len(body)
        except (ValueError, RecursionError):
            raise KubeApiError(f"GET {path}: the API server answered no JSON") from None

    async def _get(self, path: str, limit: int, within: float) -> tuple[int, bytes]:
        try:
            async with self._session.get(
                self._access.server + path,
                headers={**self._access.headers, "Accept": "application/json"},
                ssl=self._access.ssl,
                server_hostname=self._access.tls_server_name,
                timeout=aiohttp.ClientTimeout(total=within),
                allow_redirects=False,  # nothing off the API server is read, nor credentialed
            ) as response:
                moved = redirect_of(response)
                if moved is not None:
                    raise KubeApiError(moved, response.status)
                return response.status, await read_bounded(response, limit)
        except BodyTooLarge as exc:
            raise KubeApiError(f"the answer is too large: {exc}") from None
        except TimeoutError:
            raise KubeApiError(f"no answer in {within:g}s") from None
        except (aiohttp.ClientError, ValueError) as exc:
            # aiohttp's messages name the URL, never the request's headers (the credentials).
            raise KubeApiError(f"the API server at {self._access.server}: {exc}") from exc


def _rbac_hint(status: int) -> str:
    return f"; {FORBIDDEN_HINT}" if status == 403 else ""


@contextlib.asynccontextmanager
async def fleet_api(access: Access, connections: int) -> AsyncIterator[FleetApi]:
    """A FleetApi over one HTTP session holding at most `connections` connections."""
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield FleetApi(session, access)
