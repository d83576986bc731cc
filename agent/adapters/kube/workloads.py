"""The workloads an API server holds, as `from-cluster` reads them: Deployments, StatefulSets,
DaemonSets, ReplicaSets, Jobs, CronJobs and Pods (one paged list each, in a namespace or all,
with the user's label and field selectors), CapacityBuffers where the API server serves them
(autoscaling.x-k8s.io, its version discovered) and the PodTemplates they name."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlencode

from agent.adapters.kube.client import Access, ApiClient, api_client
from agent.adapters.kube.errors import WORKLOAD_HINTS, KubeApiError
from agent.adapters.kube.pages import LIST_TIMEOUT, MAX_PAGE_BYTES, Fields, read_list

# (kind, API path, resource): what holds a pod template (k8s.io/api apps/v1, batch/v1, core/v1).
WORKLOADS = (
    ("Deployment", "/apis/apps/v1", "deployments"),
    ("StatefulSet", "/apis/apps/v1", "statefulsets"),
    ("DaemonSet", "/apis/apps/v1", "daemonsets"),
    ("ReplicaSet", "/apis/apps/v1", "replicasets"),
    ("Job", "/apis/batch/v1", "jobs"),
    ("CronJob", "/apis/batch/v1", "cronjobs"),
    ("Pod", "/api/v1", "pods"),
)
BUFFER_GROUP = "autoscaling.x-k8s.io"
FIELD_MANAGER = "prepull-from-cluster"
APPLY_PATCH = "application/apply-patch+yaml"  # JSON is YAML: the body is sent as JSON
BUFFERS = "capacitybuffers"
# What is read of each object (a Pod's status, most of its size, never is).
FIELDS: Fields = (
    ("metadata", "name"),
    ("metadata", "namespace"),
    ("metadata", "ownerReferences"),
    ("spec",),
)
BUFFER_FIELDS: Fields = (*FIELDS, ("status", "podTemplateRef"))


class WorkloadsApi:
    def __init__(self, client: ApiClient) -> None:
        self._client = client

    async def workloads(
        self, kind: str, namespace: str | None, labels: str | None, fields: str | None
    ) -> list[dict[str, Any]]:
        """Every object of `kind` (one of WORKLOADS), each with its `kind` set (list items
        carry none)."""
        prefix, resource = next((p, r) for k, p, r in WORKLOADS if k == kind)
        return await self._list(kind, prefix, resource, namespace, labels, fields, FIELDS)

    async def buffers(
        self, namespace: str | None, labels: str | None, fields: str | None
    ) -> list[dict[str, Any]] | None:
        """Every CapacityBuffer, or None when the API server serves none (no such group, or
        no version of it with capacitybuffers)."""
        version = await self._buffer_version()
        if version is None:
            return None
        prefix = f"/apis/{BUFFER_GROUP}/{version}"
        return await self._list(
            "CapacityBuffer", prefix, BUFFERS, namespace, labels, fields, BUFFER_FIELDS
        )

    async def pod_template(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The PodTemplate `namespace/name`, None if there is none."""
        path = f"/api/v1/namespaces/{quote(namespace, safe='')}/podtemplates/{quote(name, safe='')}"
        document = await self._get(path)
        return document if isinstance(document, dict) else None

    async def configmap_data(self, namespace: str, name: str, key: str) -> str | None:
        """The text under `key` of the ConfigMap `namespace/name`, None without one."""
        document = await self._get(_configmap_path(namespace, name))
        data = document.get("data") if isinstance(document, dict) else None
        value = data.get(key) if isinstance(data, dict) else None
        return value if isinstance(value, str) else None

    async def apply_configmap(self, namespace: str, name: str, key: str, text: str) -> None:
        """`text` under `key` of the ConfigMap `namespace/name` by server-side apply, as
        FIELD_MANAGER (created if absent; other keys and other managers' fields left alone;
        `force`: the key is this manager's to write even where another set it before)."""
        document = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace},
            "data": {key: text},
        }
        query = urlencode({"fieldManager": FIELD_MANAGER, "force": "true"})
        await self._client.json(
            "PATCH",
            f"{_configmap_path(namespace, name)}?{query}",
            limit=MAX_PAGE_BYTES,
            within=LIST_TIMEOUT,
            hints=WORKLOAD_HINTS,
            body=document,
            content_type=APPLY_PATCH,
        )

    async def _buffer_version(self) -> str | None:
        group = await self._get(f"/apis/{BUFFER_GROUP}")
        if not isinstance(group, dict):
            return None
        versions: list[str] = [
            str(v["version"])
            for v in group.get("versions") or []
            if isinstance(v, dict) and isinstance(v.get("version"), str)
        ]
        preferred = group.get("preferredVersion")
        if isinstance(preferred, dict) and preferred.get("version") in versions:
            versions.insert(0, versions.pop(versions.index(preferred["version"])))
        for version in versions:
            resources = await self._get(f"/apis/{BUFFER_GROUP}/{quote(version, safe='')}")
            served = resources.get("resources") if isinstance(resources, dict) else None
            if any(isinstance(r, dict) and r.get("name") == BUFFERS for r in served or []):
                return str(version)
        return None

    async def _list(
        self,
        kind: str,
        prefix: str,
        resource: str,
        namespace: str | None,
        labels: str | None,
        fields: str | None,
        picked: Fields,
    ) -> list[dict[str, Any]]:
        where = f"/namespaces/{quote(namespace, safe='')}" if namespace else ""
        query = {"labelSelector": labels or "", "fieldSelector": fields or ""}
        listed = await read_list(
            self._client, f"{prefix}{where}/{resource}", query, WORKLOAD_HINTS, picked
        )
        return [{**item, "kind": kind} for item in listed["items"] if isinstance(item, dict)]

    async def _get(self, path: str) -> Any:
        """The object at `path`, None when the API server has none (404)."""
        try:
            document, _ = await self._client.json(
                "GET", path, limit=MAX_PAGE_BYTES, within=LIST_TIMEOUT, hints=WORKLOAD_HINTS
            )
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise
        return document


def _configmap_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{quote(namespace, safe='')}/configmaps/{quote(name, safe='')}"


@contextlib.asynccontextmanager
async def workloads_api(access: Access) -> AsyncIterator[WorkloadsApi]:
    async with api_client(access, 8) as client:
        yield WorkloadsApi(client)
