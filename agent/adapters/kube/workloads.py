"""The workloads an API server holds, as `from-cluster` reads them: Deployments, StatefulSets,
DaemonSets, ReplicaSets, Jobs, CronJobs and Pods (one paged list each, in a namespace or all,
with the user's label and field selectors), CapacityBuffers where the API server serves them
(autoscaling.x-k8s.io, its version discovered) and the PodTemplates they name."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlencode

from agent.adapters.kube.client import Access, ApiClient, api_client
from agent.adapters.kube.errors import WORKLOAD_HINTS, KubeApiError
from agent.adapters.kube.pages import LIST_TIMEOUT, MAX_PAGE_BYTES, Fields, read_list
from agent.core.text import fit

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
WATCH_SECONDS = 300
"""How long the API server keeps one watch open (it ends it then; the watcher starts another)."""
MAX_EVENT_BYTES = 8 * 1024 * 1024
MAX_EVENT_MESSAGE = 1024
"""An Event's message is cut here (the API server refuses long ones)."""
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
        self._buffer_prefix: str | None = None
        """Where CapacityBuffers are served, once discovered."""

    async def workloads(
        self, kind: str, namespace: str | None, labels: str | None, fields: str | None
    ) -> Listed:
        """Every object of `kind` (one of WORKLOADS), each with its `kind` set (list items
        carry none), and the version the list was read at."""
        prefix, resource = _where(kind)
        return await self._list(kind, prefix, resource, namespace, labels, fields, FIELDS)

    async def changes(
        self,
        kind: str,
        namespace: str | None,
        labels: str | None,
        fields: str | None,
        version: str,
    ) -> AsyncIterator[str | None]:
        """Each change to objects of `kind` after `version`, as a watch with bookmarks tells it,
        until the API server ends the watch (WATCH_SECONDS): None for an object added, changed
        or deleted, the new version for a bookmark. Expired (410: the version is gone, list
        again) or KubeApiError."""
        if kind == "CapacityBuffer" and self._buffer_prefix is not None:
            prefix, resource = self._buffer_prefix, BUFFERS
        else:
            prefix, resource = _where(kind)
        where = f"/namespaces/{quote(namespace, safe='')}" if namespace else ""
        query = {
            "watch": "1",
            "allowWatchBookmarks": "true",
            "resourceVersion": version,
            "timeoutSeconds": str(WATCH_SECONDS),
            **({"labelSelector": labels} if labels else {}),
            **({"fieldSelector": fields} if fields else {}),
        }
        path = f"{prefix}{where}/{resource}?{urlencode(query)}"
        async for line in self._client.lines(
            path, idle=WATCH_SECONDS + 30, line_limit=MAX_EVENT_BYTES, hints=WORKLOAD_HINTS
        ):
            yield _change(line, path)

    async def buffers(
        self, namespace: str | None, labels: str | None, fields: str | None
    ) -> Listed | None:
        """Every CapacityBuffer, or None when the API server serves none (no such group, or
        no version of it with capacitybuffers)."""
        version = await self._buffer_version()
        if version is None:
            return None
        prefix = self._buffer_prefix = f"/apis/{BUFFER_GROUP}/{version}"
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
        path = f"{_configmap_path(namespace, name)}?{query}"
        await self._request("PATCH", path, body=document, content_type=APPLY_PATCH)

    async def record_event(
        self, namespace: str, configmap: str, kind: str, reason: str, message: str
    ) -> None:
        """An Event on the ConfigMap `namespace/configmap` (`kubectl describe configmap` and
        `kubectl get events` show it): what the keeper wrote or held, and why."""
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{configmap}.{time.time_ns():x}", "namespace": namespace},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "name": configmap,
                "namespace": namespace,
            },
            "type": kind,
            "reason": reason,
            "message": fit(message, MAX_EVENT_MESSAGE),
            "count": 1,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": FIELD_MANAGER,
            "reportingInstance": FIELD_MANAGER,
        }
        await self._request(
            "POST", f"/api/v1/namespaces/{quote(namespace, safe='')}/events", body=event
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
    ) -> Listed:
        where = f"/namespaces/{quote(namespace, safe='')}" if namespace else ""
        query = {"labelSelector": labels or "", "fieldSelector": fields or ""}
        listed = await read_list(
            self._client, f"{prefix}{where}/{resource}", query, WORKLOAD_HINTS, picked
        )
        items = [{**item, "kind": kind} for item in listed["items"] if isinstance(item, dict)]
        return Listed(items, listed["resourceVersion"])

    async def _get(self, path: str) -> Any:
        """The object at `path`, None when the API server has none (404)."""
        try:
            return await self._request("GET", path)
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def _request(
        self, method: str, path: str, body: object = None, content_type: str = "application/json"
    ) -> Any:
        """One request, its answer parsed; a refusal with from-cluster's hints."""
        document, _ = await self._client.json(
            method,
            path,
            limit=MAX_PAGE_BYTES,
            within=LIST_TIMEOUT,
            hints=WORKLOAD_HINTS,
            body=body,
            content_type=content_type,
        )
        return document


@dataclasses.dataclass(frozen=True)
class Listed:
    items: list[dict[str, Any]]
    version: str | None
    """The resourceVersion the list was read at (None if the API server said none)."""


class Expired(KubeApiError):
    """The watch's version is older than the API server keeps (410 Gone): list again."""


def _where(kind: str) -> tuple[str, str]:
    """(API path, resource) of a workload kind; KubeApiError for one this reader has not."""
    for known, prefix, resource in WORKLOADS:
        if known == kind:
            return prefix, resource
    raise KubeApiError(f"no API path known for {kind}")


def _change(line: bytes, path: str) -> str | None:
    what = f"GET {path.split('?')[0]}"
    try:
        event = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise KubeApiError(f"{what}: a watch event that is not JSON") from exc
    kind = event.get("type") if isinstance(event, dict) else None
    found = event.get("object") if isinstance(event, dict) else None
    if kind == "ERROR":
        code = found.get("code") if isinstance(found, dict) else None
        if code == 410:
            raise Expired(f"{what}: the watch's version is gone (410)", 410)
        message = found.get("message") if isinstance(found, dict) else None
        raise KubeApiError(f"{what}: the watch ended in error {code}: {fit(str(message))}")
    if kind == "BOOKMARK":
        metadata = found.get("metadata") if isinstance(found, dict) else None
        version = metadata.get("resourceVersion") if isinstance(metadata, dict) else None
        if isinstance(version, str) and version:
            return version
        raise KubeApiError(f"{what}: a bookmark without a version")
    if kind in ("ADDED", "MODIFIED", "DELETED"):
        return None
    raise KubeApiError(f"{what}: a watch event of no known type")


def _configmap_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{quote(namespace, safe='')}/configmaps/{quote(name, safe='')}"


@contextlib.asynccontextmanager
async def workloads_api(access: Access) -> AsyncIterator[WorkloadsApi]:
    async with api_client(access, 8) as client:
        yield WorkloadsApi(client)
