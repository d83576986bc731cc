"""A stand-in Kubernetes API server for `from-cluster`: no API server is packaged for these
machines. It serves, over HTTPS with a bearer token, the workload kinds (apps/v1 Deployments,
StatefulSets, DaemonSets, ReplicaSets; batch/v1 Jobs, CronJobs; v1 Pods and PodTemplates) and,
when asked to, CapacityBuffers (autoscaling.x-k8s.io/v1alpha1), with the API server's semantics
where `from-cluster` depends on them:

- discovery (/api, /api/v1, /apis, /apis/{group}, /apis/{group}/{version}) as the legacy
  (non-aggregated) documents, enough for the real `kubectl get` (tests check it against kubectl);
- lists in one namespace or all, `labelSelector` (equality, inequality, existence; the gate's
  stand-in's parser), `fieldSelector` on metadata.name and metadata.namespace (others: 400, as
  the API server refuses a field it does not index), `limit`/`continue` pages;
- items in a list carry no `kind` or `apiVersion` (the list does), as the API server sends them;
- 401 without the token, 403 for a resource in `forbidden`, 404 for a group it does not serve."""

from __future__ import annotations

import asyncio
import copy
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.harness.kubeapi import _label_selector, _labels_match, _status, write_kubeconfig
from tests.harness.loopthread import LoopThread
from tests.harness.tls import ServerCert, make_ca_and_server

TOKEN = "reader-token"
# (group path, version, resource, kind, namespaced): what it serves.
RESOURCES = (
    ("api", "v1", "pods", "Pod"),
    ("api", "v1", "podtemplates", "PodTemplate"),
    ("api", "v1", "configmaps", "ConfigMap"),
    ("api", "v1", "events", "Event"),
    ("apis/apps", "v1", "deployments", "Deployment"),
    ("apis/apps", "v1", "statefulsets", "StatefulSet"),
    ("apis/apps", "v1", "daemonsets", "DaemonSet"),
    ("apis/apps", "v1", "replicasets", "ReplicaSet"),
    ("apis/batch", "v1", "jobs", "Job"),
    ("apis/batch", "v1", "cronjobs", "CronJob"),
    ("apis/autoscaling.x-k8s.io", "v1alpha1", "capacitybuffers", "CapacityBuffer"),
)
BUFFER_GROUP = "apis/autoscaling.x-k8s.io"


@dataclass
class Seen:
    path: str
    query: dict[str, str]
    status: int
    method: str = "GET"
    content_type: str = ""


@dataclass
class WorkloadsApiServer:
    workdir: Path
    buffers: bool = False
    """Serve autoscaling.x-k8s.io (CapacityBuffers), as a cluster with Karpenter 1.14 does."""
    objects: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """resource → the objects stored (each with metadata.namespace and name)."""
    forbidden: set[str] = field(default_factory=set)
    page_cap: int | None = None
    """Hand out at most this many items a page, whatever `limit` asks (API servers may)."""
    bookmark_seconds: float = 0.3
    """How often an idle watch that allows bookmarks gets one."""
    watch_cap: float | None = None
    """End every watch after this many seconds, whatever it asked (API servers may)."""
    version: int = 100
    """The store's resourceVersion: every change bumps it."""
    changes: list[tuple[int, str, str, dict[str, Any]]] = field(default_factory=list)
    """(version, resource, event type, object) of every change, for watches."""
    compacted: int = 0
    """Watches from a version older than this are answered 410 Gone."""
    watch_generation: int = 0
    """Bumped by compact(): open watches end."""
    seen: list[Seen] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self.tls: ServerCert = make_ca_and_server(self.workdir / "tls", "workloads-api")
        self._thread: LoopThread | None = None
        self._runner: web.AppRunner | None = None
        self._lock = threading.Lock()
        """compact() against a watch's step: no bookmark carries a version compacted away."""

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def add(self, resource: str, item: dict[str, Any]) -> None:
        stored = copy.deepcopy(item)
        stored.setdefault("metadata", {}).setdefault("namespace", "default")
        self.version += 1
        stored["metadata"]["resourceVersion"] = str(self.version)
        self.objects.setdefault(resource, []).append(stored)
        self.changes.append((self.version, resource, "ADDED", copy.deepcopy(stored)))

    def delete(self, resource: str, namespace: str, name: str) -> None:
        kept = []
        for item in self.objects.get(resource, []):
            if (item["metadata"]["namespace"], item["metadata"]["name"]) == (namespace, name):
                self.version += 1
                self.changes.append((self.version, resource, "DELETED", copy.deepcopy(item)))
            else:
                kept.append(item)
        self.objects[resource] = kept

    def compact(self) -> None:
        """A change nobody watches, then every change so far forgotten (etcd compaction): the
        open watches end, and a watch from any version seen before is 410 Gone."""
        with self._lock:
            self.watch_generation += 1
            self.version += 1
            self.compacted = self.version

    def watches(self, resource: str) -> list[Seen]:
        return [s for s in self.lists(resource) if s.query.get("watch") == "1"]

    def start(self) -> WorkloadsApiServer:
        self._thread = LoopThread()
        self._thread.run(self._start())
        return self

    def stop(self) -> None:
        if self._thread is not None and self._runner is not None:
            self._thread.run(self._runner.cleanup())
            self._thread.close()

    def kubeconfig(self, path: Path, token: str = TOKEN) -> Path:
        return write_kubeconfig(path, self.url, self.tls.ca, "reader", token)

    def lists(self, resource: str) -> list[Seen]:
        return [s for s in self.seen if s.path.endswith(f"/{resource}")]

    # -- server ------------------------------------------------------------------------------

    async def _start(self) -> None:
        import ssl

        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/version", self._version)
        app.router.add_get("/api", self._api)
        app.router.add_get("/apis", self._groups)
        app.router.add_get("/{group:api|apis/[^/]+}/{version}", self._resources)
        app.router.add_get("/apis/{name}", self._group)
        app.router.add_get("/{group:api|apis/[^/]+}/{version}/{resource}", self._list)
        app.router.add_get(
            "/{group:api|apis/[^/]+}/{version}/namespaces/{namespace}/{resource}", self._list
        )
        app.router.add_get(
            "/{group:api|apis/[^/]+}/{version}/namespaces/{namespace}/{resource}/{name}",
            self._get,
        )
        app.router.add_patch(
            "/{group:api}/{version}/namespaces/{namespace}/{resource}/{name}", self._apply
        )
        app.router.add_post("/{group:api}/{version}/namespaces/{namespace}/events", self._event)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.tls.cert, self.tls.key)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        response: web.StreamResponse
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            response = _status(401, "Unauthorized", "Unauthorized")
        elif request.match_info.get("resource") in self.forbidden:
            what = request.match_info["resource"]
            response = _status(403, "Forbidden", f'{what} is forbidden: cannot list "{what}"')
        else:
            response = await handler(request)
        self.seen.append(
            Seen(
                request.path,
                dict(request.query),
                response.status,
                request.method,
                request.content_type,
            )
        )
        return response

    def _served(self) -> list[tuple[str, str, str, str]]:
        return [r for r in RESOURCES if self.buffers or r[0] != BUFFER_GROUP]

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response({"major": "1", "minor": "35", "gitVersion": "v1.35.0-standin"})

    async def _api(self, request: web.Request) -> web.Response:
        address = f"127.0.0.1:{self.port}"
        return web.json_response(
            {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": address}
                ],
            }
        )

    def _group_document(self, group: str) -> dict[str, Any] | None:
        versions = sorted({v for g, v, _, _ in self._served() if g == group})
        if not versions:
            return None
        name = group.removeprefix("apis/")
        listed = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
        return {"kind": "APIGroup", "apiVersion": "v1", "name": name, "versions": listed,
                "preferredVersion": listed[0]}  # fmt: skip

    async def _groups(self, request: web.Request) -> web.Response:
        groups = sorted({g for g, _, _, _ in self._served() if g != "api"})
        documents = [self._group_document(g) for g in groups]
        return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": documents})

    async def _group(self, request: web.Request) -> web.Response:
        document = self._group_document(f"apis/{request.match_info['name']}")
        if document is None:
            return _status(404, "NotFound", "the server could not find the requested resource")
        return web.json_response(document)

    async def _resources(self, request: web.Request) -> web.Response:
        group, version = request.match_info["group"], request.match_info["version"]
        served = [r for r in self._served() if r[0] == group and r[1] == version]
        if not served:
            return _status(404, "NotFound", "the server could not find the requested resource")
        name = group.removeprefix("apis/")
        return web.json_response(
            {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": version if group == "api" else f"{name}/{version}",
                "resources": [
                    {"name": resource, "singularName": kind.lower(), "namespaced": True,
                     "kind": kind, "verbs": ["get", "list"]}
                    for _, _, resource, kind in served
                ],
            }
        )  # fmt: skip

    def _kind(self, request: web.Request) -> tuple[str, str, str] | None:
        group, version = request.match_info["group"], request.match_info["version"]
        resource = request.match_info["resource"]
        for g, v, r, kind in self._served():
            if (g, v, r) == (group, version, resource):
                api_version = v if g == "api" else f"{g.removeprefix('apis/')}/{v}"
                return resource, kind, api_version
        return None

    async def _list(self, request: web.Request) -> web.StreamResponse:
        known = self._kind(request)
        if known is None:
            return _status(404, "NotFound", "the server could not find the requested resource")
        resource, kind, api_version = known
        namespace = request.match_info.get("namespace")
        if request.query.get("watch") in ("1", "true"):
            return await self._watch(request, resource, namespace)
        try:
            labels = _label_selector(request.query.get("labelSelector", ""))
            fields = _field_selector(request.query.get("fieldSelector", ""), kind)
        except ValueError as exc:
            return _status(400, "BadRequest", str(exc))
        items = [
            _listed(i)
            for i in self.objects.get(resource, [])
            if (namespace is None or i["metadata"]["namespace"] == namespace)
            and _labels_match(i, labels)
            and all(_field(i, f) == v for f, v in fields)
        ]
        start = int(request.query.get("continue") or 0)
        limit = int(request.query.get("limit") or 0) or len(items) or 1
        limit = min(limit, self.page_cap or limit)
        metadata = {"resourceVersion": str(self.version)}
        if start + limit < len(items):
            metadata["continue"] = str(start + limit)
        return web.json_response(
            {"kind": f"{kind}List", "apiVersion": api_version, "metadata": metadata,
             "items": items[start : start + limit]}
        )  # fmt: skip

    async def _apply(self, request: web.Request) -> web.Response:
        """Server-side apply of a ConfigMap (what from-cluster writes): the applied keys of
        `data` replace those keys; created when absent. 415 for another patch type, 400
        without a field manager, as the API server answers."""
        if request.content_type != "application/apply-patch+yaml":
            return _status(415, "UnsupportedMediaType", f"{request.content_type} not supported")
        manager = request.query.get("fieldManager")
        if not manager:
            return _status(400, "BadRequest", "fieldManager is required for apply requests")
        applied = json.loads(await request.read())
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        if applied.get("metadata", {}).get("name") != name:
            return _status(400, "BadRequest", "the name of the object does not match")
        stored = self.configmap(namespace, name)
        if stored is None:
            stored = {"metadata": {"name": name, "namespace": namespace}, "data": {}}
            self.objects.setdefault("configmaps", []).append(stored)
        stored.setdefault("data", {}).update(applied.get("data") or {})
        self.version += 1  # one revision for the whole store, as etcd's
        stored["metadata"]["resourceVersion"] = str(self.version)
        _managed(stored, manager, sorted(applied.get("data") or {}))
        return web.json_response({"kind": "ConfigMap", "apiVersion": "v1", **stored})

    async def _event(self, request: web.Request) -> web.Response:
        """An Event created (its name must be new), as the keeper records them."""
        event = json.loads(await request.read())
        namespace = request.match_info["namespace"]
        if event.get("metadata", {}).get("namespace") != namespace:
            return _status(400, "BadRequest", "the namespace of the object does not match")
        names = {e["metadata"]["name"] for e in self.objects.get("events", [])}
        if event["metadata"]["name"] in names:
            return _status(409, "AlreadyExists", "events already exists")
        self.objects.setdefault("events", []).append(event)
        return web.json_response(event, status=201)

    def configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.find("configmaps", namespace, name)

    def find(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored object of `resource` by namespace and name."""
        return next(
            (
                i
                for i in self.objects.get(resource, [])
                if (i["metadata"]["namespace"], i["metadata"]["name"]) == (namespace, name)
            ),
            None,
        )

    async def _watch(
        self, request: web.Request, resource: str, namespace: str | None
    ) -> web.StreamResponse:
        """A watch from `resourceVersion`: the changes since, then each as it comes, BOOKMARKs
        while idle (if allowed), until `timeoutSeconds`; 410 in an ERROR event for a version
        older than the last compaction (as the API server sends it)."""
        since = int(request.query.get("resourceVersion") or self.version)
        seconds = min(float(request.query.get("timeoutSeconds") or 300), self.watch_cap or 1e9)
        bookmarks = request.query.get("allowWatchBookmarks") == "true"
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)

        async def send(event_type: str, item: dict[str, Any]) -> None:
            await response.write(json.dumps({"type": event_type, "object": item}).encode() + b"\n")

        if since < self.compacted:
            gone = {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "code": 410,
                "reason": "Expired",
                "message": f"too old resource version: {since}",
            }
            await send("ERROR", gone)
            return response
        generation = self.watch_generation
        loop = asyncio.get_running_loop()
        ends = loop.time() + seconds
        quiet_since = loop.time()
        while loop.time() < ends:
            lines: list[tuple[str, dict[str, Any]]] = []
            with self._lock:
                if generation != self.watch_generation:
                    break
                for version, changed, event_type, item in list(self.changes):
                    in_scope = namespace is None or item["metadata"]["namespace"] == namespace
                    if version > since and changed == resource and in_scope:
                        lines.append((event_type, _listed(item)))
                        since, quiet_since = version, loop.time()
                if bookmarks and loop.time() - quiet_since > self.bookmark_seconds:
                    since = max(since, self.version)
                    lines.append(("BOOKMARK", {"metadata": {"resourceVersion": str(since)}}))
                    quiet_since = loop.time()
            for event_type, item in lines:
                await send(event_type, item)
            await asyncio.sleep(0.02)
        return response

    async def _get(self, request: web.Request) -> web.Response:
        known = self._kind(request)
        if known is None:
            return _status(404, "NotFound", "the server could not find the requested resource")
        resource, kind, api_version = known
        name = request.match_info["name"]
        item = self.find(resource, request.match_info["namespace"], name)
        if item is None:
            return _status(404, "NotFound", f'{resource} "{name}" not found')
        return web.json_response({"kind": kind, "apiVersion": api_version, **item})


def _managed(item: dict[str, Any], manager: str, fields: list[str]) -> None:
    item["metadata"]["managedFields"] = [
        {"manager": manager, "operation": "Apply", "fieldsV1": {f"f:{f}": {} for f in fields}}
    ]


def _listed(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k not in ("kind", "apiVersion")}


def _field_selector(text: str, kind: str) -> list[tuple[str, str]]:
    pairs = []
    for term in filter(None, text.split(",")):
        name, _, value = term.replace("==", "=").partition("=")
        if name not in ("metadata.name", "metadata.namespace"):
            raise ValueError(f"field label not supported: {name} (for {kind})")
        pairs.append((name, value))
    return pairs


def _field(item: dict[str, Any], name: str) -> str:
    return str(item["metadata"].get(name.removeprefix("metadata."), ""))
