"""A stand-in Kubernetes API server, for the readiness gate's tests: no API server is packaged
for these machines. It serves Nodes and Events (and an empty pod list, for `kubectl describe
node`), over HTTPS with bearer tokens, with Kubernetes' semantics where the agent depends on them:

- GET a node or the list; discovery (/api, /apis, /api/v1) so that the real `kubectl` works;
- PATCH a node (spec, metadata) or its status subresource (status only: each ignores the
  other half, as the API server's node strategies do) with a JSON patch (RFC 6902; a failed
  `test` is 422), a merge patch (RFC 7386) or a strategic merge patch (lists merged by their
  patch merge key: `status.conditions` and `status.addresses` by `type`, `$patch: delete`
  removing an item; other lists replaced);
- resourceVersion: every write bumps it; a patch naming another one is 409 Conflict;
- Events: create (409 if the name is taken), merge-patch, list in a namespace or in all of
  them with a field selector (involvedObject.*, type, reason), as `kubectl describe node` asks;
- Pods: list (in a namespace, by label selector), get, and the proxy subresource
  (`pods/{name}[:{port}]/proxy/{path}`) forwarding a GET to the pod's IP and port as the API
  server's proxy does (its answer passed through; a pod it cannot reach is 503 "error trying to
  reach service: …", one without an IP 400 "address not allowed", apimachinery
  pkg/util/proxy). Unlike the API server it proxies to loopback addresses: these machines have
  no other;
- lists honour `labelSelector` (equality, inequality, existence) and `limit`/`continue` pages;
- 401 for an unknown token or client certificate, 403 for a verb/resource the token's role
  lacks (namespaced resources are granted per namespace, as a Role does);
- every object it stores is validated against the official Node schema (kubernetes-validate);
  an invalid one is refused (422) and recorded in `invalid`, which tests assert is empty.

`tests/integration/test_gate.py` checks it against `kubectl` as well as against the agent."""

from __future__ import annotations

import asyncio
import copy
import json
import ssl
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml
from aiohttp import ClientError, ClientSession, ClientTimeout, web

from tests.harness.loopthread import LoopThread
from tests.harness.tls import ServerCert, make_ca_and_server

SCHEMA_VERSION = "1.35.0"
MERGE_KEYS = {("status", "conditions"): "type", ("status", "addresses"): "type"}
"""Lists a strategic merge patch merges by key (k8s.io/api core/v1 types.go patchMergeKey)."""
COMPONENTS = Path(__file__).resolve().parents[2] / "deploy/components"
RBAC = COMPONENTS / "readiness-gate/rbac.yaml"


def granted(rbac: Path) -> frozenset[tuple[str, str]]:
    """(verb, resource) pairs the ClusterRoles and Roles in `rbac` grant: a Role's resources are
    named `<namespace>/<resource>`, another API group's `<group>:<resource>`."""
    grants = set()
    for role in yaml.safe_load_all(rbac.read_text()):
        if role["kind"] not in ("ClusterRole", "Role"):
            continue
        scope = f"{role['metadata']['namespace']}/" if role["kind"] == "Role" else ""
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                prefix = scope + (f"{group}:" if group else "")
                grants |= {(v, prefix + r) for r in rule["resources"] for v in rule["verbs"]}
    return frozenset(grants)


NODE_ROLE = granted(RBAC)
"""What deploy/'s readiness-gate ClusterRole grants: the agent's token gets exactly this."""
ADMIN = frozenset(
    (verb, resource)
    for verb in ("get", "list", "patch", "update", "create")
    for resource in (
        "nodes",
        "nodes/status",
        "events",
        "*/events",
        "pods",
        "*/pods",
        "*/pods/proxy",
    )
)
FIELDS = {
    "involvedObject.kind": ("involvedObject", "kind"),
    "involvedObject.name": ("involvedObject", "name"),
    "involvedObject.namespace": ("involvedObject", "namespace"),
    "involvedObject.uid": ("involvedObject", "uid"),
    "type": ("type",),
    "reason": ("reason",),
}
"""The Event fields a field selector may name (the API server allows a few more)."""


class PatchFailed(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


@dataclass
class Request:
    method: str
    path: str
    content_type: str
    body: Any
    status: int


def node(name: str, taints: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """A Node as kubelet registers it: Ready condition, addresses, maybe startup taints."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
            "labels": {"kubernetes.io/os": "linux"},
            "creationTimestamp": "2026-11-27T00:00:00Z",
        },
        "spec": {"taints": taints} if taints else {},
        "status": {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                    "lastHeartbeatTime": "2026-11-27T00:00:00Z",
                    "lastTransitionTime": "2026-11-27T00:00:00Z",
                }
            ],
            "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
        },
    }


class KubeApiServer:
    def __init__(self, workdir: Path, nodes: list[dict[str, Any]], token: str = "agent-token"):
        self.tls: ServerCert = make_ca_and_server(workdir / "tls", "kube-api")
        self.tokens: dict[str, frozenset[tuple[str, str]]] = {
            token: NODE_ROLE,
            "admin-token": ADMIN,
        }
        """Accepted bearer tokens and what each may do; tests rotate or revoke them."""
        self.token_nodes: dict[str, str] = {token: "n1"}
        """The node each pod-bound token names (`authentication.kubernetes.io/node-name`)."""
        self.nodes: dict[str, dict[str, Any]] = {}
        self.events: dict[tuple[str, str], dict[str, Any]] = {}
        """(namespace, name): the Events recorded."""
        self.requests: list[Request] = []
        self.invalid: list[str] = []
        self.faults: list[tuple[str, int]] = []
        """(path suffix, status): the next request whose path ends so fails with status."""
        self.before_patch: Callable[[str], bool] | None = None
        """Called with the path just before each PATCH applies (a concurrent writer's change);
        dropped once it returns True."""
        self.served: Callable[[dict[str, Any]], Any] | None = None
        """What GET sends instead of the stored node (a hostile or broken API server)."""
        self.chunk: int | None = None
        """Send GET bodies in chunks of this many bytes, a moment apart (a slow link)."""
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        """(namespace, name): the Pods stored."""
        self.daemonsets: dict[tuple[str, str], dict[str, Any]] = {}
        """(namespace, name): the DaemonSets stored (apps/v1)."""
        self.client_ca: Path | None = None
        """Trust client certificates this CA signed (set before start)."""
        self.cert_users: dict[str, frozenset[tuple[str, str]]] = {}
        """A client certificate's common name: what it may do."""
        self._version = 100
        for item in nodes:
            self._store(item["metadata"]["name"], copy.deepcopy(item))
        self.port = 0
        self._thread: LoopThread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> KubeApiServer:
        self._thread = LoopThread()
        self._thread.run(self._start())
        return self

    def stop(self) -> None:
        if self._thread is not None and self._runner is not None:
            self._thread.run(self._runner.cleanup())
            self._thread.close()

    def kubeconfig(self, path: Path, token: str = "agent-token") -> Path:
        """A kubeconfig for the real kubectl: this server, its CA, the bearer token."""
        return write_kubeconfig(path, self.url, self.tls.ca, "agent", token)

    def taints(self, name: str) -> list[dict[str, Any]]:
        return list(self.nodes[name].get("spec", {}).get("taints") or [])

    def condition(self, name: str, kind: str) -> dict[str, Any] | None:
        found = [c for c in self.nodes[name]["status"].get("conditions", []) if c["type"] == kind]
        return found[0] if found else None

    def writes(self) -> list[Request]:
        return [r for r in self.requests if r.method == "PATCH"]

    # -- server ------------------------------------------------------------------------------

    async def _start(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/version", self._version_info)
        app.router.add_get("/api", self._api_versions)
        app.router.add_get("/apis", self._api_groups)
        app.router.add_get("/api/v1", self._resources)
        app.router.add_get("/api/v1/nodes", self._list)
        app.router.add_get("/api/v1/nodes/{name}", self._get)
        app.router.add_get("/api/v1/nodes/{name}/status", self._get)
        app.router.add_patch("/api/v1/nodes/{name}", self._patch)
        app.router.add_patch("/api/v1/nodes/{name}/status", self._patch)
        app.router.add_get("/api/v1/events", self._list_events)
        app.router.add_get("/api/v1/namespaces/{namespace}/events", self._list_events)
        app.router.add_post("/api/v1/namespaces/{namespace}/events", self._create_event)
        app.router.add_patch("/api/v1/namespaces/{namespace}/events/{name}", self._patch_event)
        app.router.add_get("/apis/apps/v1/namespaces/{namespace}/daemonsets", self._list_daemonsets)
        app.router.add_get(
            "/apis/apps/v1/namespaces/{namespace}/daemonsets/{name}", self._get_daemonset
        )
        app.router.add_get("/api/v1/pods", self._no_pods)
        app.router.add_get("/api/v1/namespaces/{namespace}/pods", self._list_pods)
        app.router.add_get("/api/v1/namespaces/{namespace}/pods/{name}", self._get_pod)
        app.router.add_get("/api/v1/namespaces/{namespace}/pods/{name}/proxy", self._proxy)
        app.router.add_get(
            "/api/v1/namespaces/{namespace}/pods/{name}/proxy/{path:.*}", self._proxy
        )
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.tls.cert, self.tls.key)
        if self.client_ca is not None:
            context.verify_mode = ssl.CERT_OPTIONAL
            context.load_verify_locations(cafile=str(self.client_ca))
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        response = await self._answer(request, handler)
        self.requests.append(
            Request(request.method, request.path, request.content_type, body, response.status)
        )
        return response

    async def _answer(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ")
        role = self.tokens.get(token) if auth.startswith("Bearer ") else None
        if role is None and not auth:
            role = self.cert_users.get(_common_name(request))
        if role is None:
            return _status(401, "Unauthorized", "Unauthorized")
        namespace, resource = _resource(request.path)
        verb = {
            "GET": "get" if "name" in request.match_info else "list",
            "PATCH": "patch",
            "POST": "create",
        }.get(request.method, request.method.lower())
        acting = request.headers.get("Impersonate-User")
        if resource and acting is not None:
            refused = self._as_node(token, role, acting, verb, resource, request)
            if refused is not None:
                return _status(403, "Forbidden", refused)
        elif resource and not _allowed(role, verb, namespace, resource):
            return _status(
                403,
                "Forbidden",
                f'{resource} is forbidden: cannot {verb} resource "{resource}"',
            )
        for i, (suffix, status) in enumerate(self.faults):
            if request.path.endswith(suffix):
                del self.faults[i]
                reason = {409: "Conflict", 500: "InternalError"}.get(status, "Failure")
                return _status(status, reason, f"injected {status}")
        response: web.StreamResponse = await handler(request)
        return response

    def _as_node(
        self,
        token: str,
        role: frozenset[tuple[str, str]],
        acting: str,
        verb: str,
        resource: str,
        request: web.Request,
    ) -> str | None:
        """Why a request made as a node (constrained impersonation, KEP-5284) is refused, or
        None: the token may act as the node its pod runs on and no other, only for the requests
        its `impersonate-on:associated-node:<verb>` grants name; the node identity may then
        write only its own Node (the node authorizer)."""
        if ("impersonate:associated-node", "authentication.k8s.io:nodes") not in role:
            return 'cannot impersonate resource "nodes" in API group "authentication.k8s.io"'
        bound = self.token_nodes.get(token)
        if bound is None or acting != f"system:node:{bound}":
            return f'cannot impersonate "{acting}": not the node this token is bound to'
        if (f"impersonate-on:associated-node:{verb}", resource) not in role:
            return f'cannot {verb} resource "{resource}" while impersonating its node'
        name = request.match_info.get("name")
        if resource.startswith("nodes") and verb != "get" and name != bound:
            return f'node "{bound}" is not allowed to modify node "{name}"'
        return None

    async def _version_info(self, request: web.Request) -> web.Response:
        return web.json_response({"major": "1", "minor": "35", "gitVersion": "v1.35.0-standin"})

    async def _api_versions(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.port}"}
                ],
            }
        )

    async def _api_groups(self, request: web.Request) -> web.Response:
        return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})

    async def _resources(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "kind": "APIResourceList",
                "groupVersion": "v1",
                "resources": [
                    {
                        "name": "nodes",
                        "singularName": "node",
                        "namespaced": False,
                        "kind": "Node",
                        "verbs": ["get", "list", "patch", "update"],
                        "shortNames": ["no"],
                    },
                    {
                        "name": "nodes/status",
                        "singularName": "",
                        "namespaced": False,
                        "kind": "Node",
                        "verbs": ["get", "patch", "update"],
                    },
                    {
                        "name": "events",
                        "singularName": "event",
                        "namespaced": True,
                        "kind": "Event",
                        "verbs": ["create", "get", "list", "patch"],
                        "shortNames": ["ev"],
                    },
                    {
                        "name": "pods",
                        "singularName": "pod",
                        "namespaced": True,
                        "kind": "Pod",
                        "verbs": ["get", "list"],
                        "shortNames": ["po"],
                    },
                    {
                        "name": "pods/proxy",
                        "singularName": "",
                        "namespaced": True,
                        "kind": "PodProxyOptions",
                        "verbs": ["get"],
                    },
                ],
            }
        )

    async def _list(self, request: web.Request) -> web.Response:
        return self._paged(request, "NodeList", list(self.nodes.values()))

    def _paged(self, request: web.Request, kind: str, items: list[Any]) -> web.Response:
        """`items` as a list of `kind`, those the label selector picks, one page of `limit`."""
        try:
            wanted = _label_selector(request.query.get("labelSelector", ""))
        except ValueError as exc:
            return _status(400, "BadRequest", str(exc))
        items = [i for i in items if _labels_match(i, wanted)]
        start = int(request.query.get("continue") or 0)
        limit = int(request.query.get("limit") or 0) or len(items) or 1
        metadata = {"resourceVersion": str(self._version)}
        if start + limit < len(items):
            metadata["continue"] = str(start + limit)
        page = items[start : start + limit]
        return web.json_response(
            {"kind": kind, "apiVersion": "v1", "metadata": metadata, "items": page}
        )

    def add_pod(self, pod: dict[str, Any]) -> None:
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        pod = copy.deepcopy(pod)
        problem = self._versioned(f"pod {name}", pod)
        assert problem is None, problem
        self.pods[(namespace, name)] = pod

    def add_daemonset(self, daemonset: dict[str, Any]) -> None:
        namespace, name = daemonset["metadata"]["namespace"], daemonset["metadata"]["name"]
        daemonset = copy.deepcopy(daemonset)
        problem = self._versioned(f"daemonset {name}", daemonset)
        assert problem is None, problem
        self.daemonsets[(namespace, name)] = daemonset

    async def _list_daemonsets(self, request: web.Request) -> web.Response:
        namespace = request.match_info["namespace"]
        items = [d for (where, _), d in sorted(self.daemonsets.items()) if where == namespace]
        return self._paged(request, "DaemonSetList", items)

    async def _get_daemonset(self, request: web.Request) -> web.Response:
        key = (request.match_info["namespace"], request.match_info["name"])
        if key not in self.daemonsets:
            return _status(404, "NotFound", f'daemonsets.apps "{key[1]}" not found')
        return web.json_response(self.daemonsets[key])

    async def _list_pods(self, request: web.Request) -> web.Response:
        namespace = request.match_info["namespace"]
        items = [pod for (where, _), pod in sorted(self.pods.items()) if where == namespace]
        return self._paged(request, "PodList", items)

    async def _get_pod(self, request: web.Request) -> web.Response:
        key = (request.match_info["namespace"], request.match_info["name"])
        if key not in self.pods:
            return _status(404, "NotFound", f'pods "{key[1]}" not found')
        return web.json_response(self.pods[key])

    async def _proxy(self, request: web.Request) -> web.StreamResponse:
        """The pods/proxy subresource (kubernetes pkg/registry/core/pod ResourceLocation: the
        name is `pod`, `pod:port` or `scheme:pod:port`; no port is the first one declared)."""
        parts = request.match_info["name"].split(":")
        scheme, name, port = (
            ("http", parts[0], "") if len(parts) == 1
            else ("http", parts[0], parts[1]) if len(parts) == 2
            else (parts[0], parts[1], parts[2])
        )  # fmt: skip
        pod = self.pods.get((request.match_info["namespace"], name))
        if pod is None:
            return _status(404, "NotFound", f'pods "{name}" not found')
        if not port:
            declared = [p for c in pod["spec"]["containers"] for p in c.get("ports", [])]
            port = str(declared[0]["containerPort"]) if declared else ""
        address = pod.get("status", {}).get("podIP")
        if not address:
            return _status(400, "BadRequest", "address not allowed")
        host = f"{address}:{port}" if port else address
        url = f"{scheme}://{host}/{request.match_info.get('path', '')}"
        try:
            async with (
                ClientSession() as session,
                session.get(url, params=request.query, timeout=ClientTimeout(total=300)) as reply,
            ):
                body = await reply.read()
                kind = reply.headers.get("Content-Type", "application/octet-stream")
                return web.Response(status=reply.status, body=body, headers={"Content-Type": kind})
        except (ClientError, OSError) as exc:
            message = f"error trying to reach service: dial tcp {host}: {exc}"
            return _status(503, "ServiceUnavailable", message)

    async def _get(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in self.nodes:
            return _status(404, "NotFound", f'nodes "{name}" not found')
        document = self.nodes[name]
        if self.served is not None:
            document = self.served(copy.deepcopy(document))
        body = json.dumps(document).encode()
        if self.chunk is None:
            return web.Response(body=body, content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for start in range(0, len(body), self.chunk):
            await response.write(body[start : start + self.chunk])
            await asyncio.sleep(0.002)
        await response.write_eof()
        return response

    async def _patch(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.nodes:
            return _status(404, "NotFound", f'nodes "{name}" not found')
        if self.before_patch is not None and self.before_patch(request.path):
            self.before_patch = None
        current = self.nodes[name]
        patch = json.loads(await request.read())
        try:
            patched = _apply(request.content_type, copy.deepcopy(current), patch)
        except PatchFailed as exc:
            return _status(exc.status, exc.reason, exc.message)
        asked = patched.get("metadata", {}).get("resourceVersion")
        if asked != current["metadata"]["resourceVersion"]:
            return _status(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on nodes "{name}": the object has been '
                "modified; please apply your changes to the latest version and try again",
            )
        # The node strategies: the main resource cannot change status, the subresource only it.
        if request.path.endswith("/status"):
            patched = {**current, "status": patched.get("status", {})}
        else:
            patched["status"] = current["status"]
        problem = self._store(name, patched)
        if problem is not None:
            return _status(422, "Invalid", problem)
        return web.json_response(self.nodes[name])

    async def _no_pods(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": []}
        )

    async def _list_events(self, request: web.Request) -> web.Response:
        namespace = request.match_info.get("namespace")
        try:
            wanted = _field_selector(request.query.get("fieldSelector", ""))
        except ValueError as exc:
            return _status(400, "BadRequest", str(exc))
        items = [
            event
            for (where, _), event in self.events.items()
            if namespace in (None, where) and all(_field(event, f) == v for f, v in wanted)
        ]
        return web.json_response(
            {
                "kind": "EventList",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": str(self._version)},
                "items": items,
            }
        )

    async def _create_event(self, request: web.Request) -> web.Response:
        namespace = request.match_info["namespace"]
        event = json.loads(await request.read())
        name = event.get("metadata", {}).get("name", "")
        if (namespace, name) in self.events:
            return _status(409, "AlreadyExists", f'events "{name}" already exists')
        if event.get("metadata", {}).get("namespace", namespace) != namespace:
            return _status(400, "BadRequest", "the namespace of the object does not match")
        # Set by the API server on create: clients tell objects apart by uid (kubectl
        # describe node merges two searches by it).
        event["metadata"]["uid"] = str(uuid.uuid4())
        problem = self._store_event(namespace, name, event)
        if problem is not None:
            return _status(422, "Invalid", problem)
        return web.json_response(self.events[(namespace, name)], status=201)

    async def _patch_event(self, request: web.Request) -> web.Response:
        key = (request.match_info["namespace"], request.match_info["name"])
        if key not in self.events:
            return _status(404, "NotFound", f'events "{key[1]}" not found')
        try:
            patched = _apply(
                request.content_type,
                copy.deepcopy(self.events[key]),
                json.loads(await request.read()),
            )
        except PatchFailed as exc:
            return _status(exc.status, exc.reason, exc.message)
        problem = self._store_event(*key, patched)
        if problem is not None:
            return _status(422, "Invalid", problem)
        return web.json_response(self.events[key])

    def _store_event(self, namespace: str, name: str, event: dict[str, Any]) -> str | None:
        event.setdefault("metadata", {}).update(namespace=namespace, name=name)
        problem = self._versioned(f"event {name}", event)
        if problem is None:
            self.events[(namespace, name)] = event
        return problem

    def node_events(self, node: str) -> list[dict[str, Any]]:
        """The Events recorded about `node`, oldest first."""
        found = [
            e
            for e in self.events.values()
            if e["involvedObject"].get("kind") == "Node" and e["involvedObject"]["name"] == node
        ]
        return sorted(found, key=lambda e: int(e["metadata"]["resourceVersion"]))

    def _store(self, name: str, item: dict[str, Any]) -> str | None:
        """Store `item` as the node `name` with a new resourceVersion, if the schema allows."""
        item.setdefault("metadata", {})["name"] = name
        problem = self._versioned(name, item)
        if problem is None:
            self.nodes[name] = item
        return problem

    def _versioned(self, what: str, item: dict[str, Any]) -> str | None:
        """Give `item` the next resourceVersion; why its schema refuses it, if it does (also
        recorded in `invalid`)."""
        self._version += 1
        item["metadata"]["resourceVersion"] = str(self._version)
        try:
            kubernetes_validate.validate(item, SCHEMA_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            message = f"{what}: {exc.message} at {list(exc.path)}"
            self.invalid.append(message)
            return message
        return None


def write_kubeconfig(path: Path, server: str, ca: Path, user: str, token: str) -> Path:
    """A kubeconfig of one cluster (`server`, trusting `ca`) and one user (a bearer token)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "standin", "cluster": {"server": server, "certificate-authority": str(ca)}}
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": user}}],
        "current-context": "standin",
    }
    path.write_text(json.dumps(config))
    return path


def _resource(path: str) -> tuple[str | None, str | None]:
    """The namespace (None: cluster-wide) and what RBAC names the resource at `path` (`nodes`,
    `nodes/status`, `events`, `pods`); (None, None) for discovery."""
    parts = path.strip("/").split("/")
    if parts[:1] == ["apis"] and len(parts) >= 6 and parts[3] == "namespaces":
        return parts[4], f"{parts[1]}:{parts[5]}"  # another group's: apps:daemonsets
    if parts[:2] != ["api", "v1"] or len(parts) < 3:
        return None, None
    if parts[2] == "namespaces" and len(parts) >= 7:
        return parts[3], f"{parts[4]}/{parts[6]}"  # a subresource: pods/proxy
    if parts[2] == "namespaces" and len(parts) >= 5:
        return parts[3], parts[4]
    if parts[2] == "nodes":
        return None, "nodes/status" if parts[-1] == "status" and len(parts) == 5 else "nodes"
    return None, parts[2]


def _allowed(
    role: frozenset[tuple[str, str]], verb: str, namespace: str | None, resource: str
) -> bool:
    """A ClusterRole's grant holds in every namespace; a Role's (`<namespace>/<resource>`) in
    its own; `*/<resource>` (the admin's) in any."""
    names = {resource, f"*/{resource}"} | ({f"{namespace}/{resource}"} if namespace else set())
    return any((verb, name) in role for name in names)


def _label_selector(text: str) -> list[tuple[str, str, str]]:
    """`a=b,c!=d,e,!f` as (key, operator, value) terms; ValueError for the set-based forms
    (`in (…)`), which this stand-in does not read."""
    terms = []
    for term in filter(None, (t.strip() for t in text.split(","))):
        if "(" in term or " " in term:
            raise ValueError(f"unable to parse requirement: {term!r} (stand-in: no set-based)")
        if term.startswith("!"):
            terms.append((term[1:], "!", ""))
        elif "!=" in term:
            key, _, value = term.partition("!=")
            terms.append((key, "!=", value))
        elif "=" in term:
            key, _, value = term.replace("==", "=").partition("=")
            terms.append((key, "=", value))
        else:
            terms.append((term, "exists", ""))
    return terms


def _labels_match(item: dict[str, Any], terms: list[tuple[str, str, str]]) -> bool:
    labels = item.get("metadata", {}).get("labels") or {}
    for key, op, value in terms:
        if op == "=" and labels.get(key) != value:
            return False
        if op == "!=" and labels.get(key) == value:
            return False
        if op == "exists" and key not in labels:
            return False
        if op == "!" and key in labels:
            return False
    return True


def _common_name(request: web.Request) -> str:
    """The subject CN of the client certificate the request came with ("" without one)."""
    peer = request.transport.get_extra_info("peercert") if request.transport else None
    for rdn in (peer or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


def _field_selector(text: str) -> list[tuple[str, str]]:
    """`a=b,c==d` as (field, value) pairs; ValueError for a field Events cannot be selected by."""
    pairs = []
    for term in filter(None, text.split(",")):
        field, _, value = term.replace("==", "=").partition("=")
        if field not in FIELDS:
            raise ValueError(f'"{field}" is not a known field selector for events')
        pairs.append((field, value))
    return pairs


def _field(event: dict[str, Any], field: str) -> str:
    value: Any = event
    for part in FIELDS[field]:
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def _status(code: int, reason: str, message: str) -> web.Response:
    return web.json_response(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        },
        status=code,
    )


def _apply(content_type: str, document: dict[str, Any], patch: Any) -> dict[str, Any]:
    if content_type == "application/json-patch+json":
        return _json_patch(document, patch)
    if content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
        merged: dict[str, Any] = _merge(
            document, patch, (), strategic=content_type.startswith("application/strategic")
        )
        return merged
    raise PatchFailed(415, "UnsupportedMediaType", f"unsupported patch type {content_type}")


def _merge(target: Any, patch: Any, path: tuple[str, ...], strategic: bool = False) -> Any:
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        here = (*path, key)
        if value is None:
            result.pop(key, None)
        elif strategic and here in MERGE_KEYS and isinstance(value, list):
            result[key] = _merge_list(result.get(key) or [], value, MERGE_KEYS[here])
        else:
            result[key] = _merge(result.get(key), value, here, strategic)
    return result


def _merge_list(current: list[Any], patch: list[Any], key: str) -> list[Any]:
    merged = [dict(item) for item in current]
    for item in patch:
        if item.get("$patch") == "delete":  # the strategic merge patch directive
            merged = [existing for existing in merged if existing.get(key) != item.get(key)]
            continue
        same = [i for i, existing in enumerate(merged) if existing.get(key) == item.get(key)]
        if same:
            merged[same[0]] = _merge(merged[same[0]], item, (), True)
        else:
            merged.append(item)
    return merged


def _json_patch(document: dict[str, Any], operations: list[dict[str, Any]]) -> dict[str, Any]:
    for operation in operations:
        op, path = operation.get("op"), operation.get("path", "")
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]
        holder: Any = document
        for part in parents:
            holder = holder[int(part)] if isinstance(holder, list) else holder.get(part)
            if holder is None:
                raise PatchFailed(422, "Invalid", f"doc is missing path: {path}")
        if op == "test":
            actual = holder[int(last)] if isinstance(holder, list) else holder.get(last)
            if actual != operation.get("value"):
                raise PatchFailed(422, "Invalid", f"testing value {path} failed")
        elif op == "remove":
            try:
                del holder[int(last) if isinstance(holder, list) else last]
            except (KeyError, IndexError):
                raise PatchFailed(
                    422, "Invalid", f"unable to remove nonexistent key: {path}"
                ) from None
        elif op in ("add", "replace"):
            if isinstance(holder, list):
                index = len(holder) if last == "-" else int(last)
                if op == "add":
                    holder.insert(index, operation["value"])
                else:
                    holder[index] = operation["value"]
            else:
                holder[last] = operation["value"]
        else:
            raise PatchFailed(400, "BadRequest", f"unsupported operation {op!r}")
    return document
