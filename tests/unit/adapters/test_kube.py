"""The Kubernetes API client against an in-process server sending whatever it likes: every
answer is a checked Node or an AgentError, never anything else."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.adapters.kube import pages as pages_adapter
from agent.adapters.kube.access import ClusterAccess, gate_access
from agent.adapters.kube.client import Access, ApiClient
from agent.adapters.kube.fleet import MAX_STATUS_BYTES, FleetApi
from agent.adapters.kube.node import MAX_RESPONSE_BYTES, KubeApi
from agent.adapters.kube.pages import MAX_PAGES
from agent.core.errors import AgentError, KubeApiError

Answer = Callable[[web.Request], web.StreamResponse]


class Server:
    def __init__(self) -> None:
        self.answer: Callable[[web.Request], Any] = lambda request: web.json_response({})
        self.tokens: list[str] = []
        self.acting: list[str | None] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.tokens.append(request.headers.get("Authorization", ""))
        self.acting.append(request.headers.get("Impersonate-User"))
        response: web.StreamResponse = await self.answer(request)
        return response


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    served = Server()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", served.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    served.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    yield served
    await runner.cleanup()


def client(session: aiohttp.ClientSession, server: Server, token_file: Path) -> KubeApi:
    # Built directly: ClusterAccess.resolve refuses http://, this in-process server is plain.
    return gate_api(session, ClusterAccess(server.url, token_file, None, "n1"))


def gate_api(session: aiohttp.ClientSession, access: ClusterAccess) -> KubeApi:
    """The gate's client as wiring.node_api builds it, on the test's session."""
    return KubeApi(ApiClient(session, gate_access(access)), access)


def token(tmp_path: Path, text: str = "t0ken\n") -> Path:
    path = tmp_path / "token"
    path.write_text(text)
    return path


async def test_a_body_sent_in_small_chunks_is_read_whole(server: Server, tmp_path: Path) -> None:
    node = {"metadata": {"name": "n1", "annotations": {"pad": "x" * 40_000}}, "spec": {}}
    body = json.dumps(node).encode()

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for start in range(0, len(body), 1024):
            await response.write(body[start : start + 1024])
            await asyncio.sleep(0.001)
        await response.write_eof()
        return response

    server.answer = chunked
    async with aiohttp.ClientSession() as session:
        assert await client(session, server, token(tmp_path)).get_node() == node


async def test_a_body_past_the_limit_is_refused(server: Server, tmp_path: Path) -> None:
    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(MAX_RESPONSE_BYTES // (1 << 20) + 2):
            await response.write(b" " * (1 << 20))
        await response.write_eof()
        return response

    server.answer = huge
    async with aiohttp.ClientSession() as session:
        with pytest.raises(AgentError, match="more than"):
            await client(session, server, token(tmp_path)).get_node()


@pytest.mark.parametrize("text", ["", "\n", "a b", "ab\r\nX-Forged: 1", "tok\x00en"])
async def test_a_token_that_cannot_go_in_a_header_is_refused_unquoted(
    server: Server, tmp_path: Path, text: str
) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(AgentError, match="control characters") as caught:
            await client(session, server, token(tmp_path, text)).get_node()
    assert server.tokens == [], "nothing is sent"
    assert "X-Forged" not in str(caught.value)


bodies = st.one_of(
    st.binary(max_size=200),
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.text(max_size=8),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(
                st.sampled_from(["spec", "status", "taints", "conditions", "key", "type"]),
                inner,
                max_size=4,
            )
        ),
        max_leaves=25,
    ).map(lambda value: json.dumps(value).encode()),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=bodies, status=st.sampled_from([200, 200, 200, 404, 409, 500]))
async def test_any_answer_is_a_checked_node_or_an_agent_error(
    server: Server, tmp_path: Path, body: bytes, status: int
) -> None:
    async def answer(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, body=body, content_type="application/json")

    server.answer = answer
    async with aiohttp.ClientSession() as session:
        try:
            node = await client(session, server, token(tmp_path)).get_node()
        except AgentError:
            return
    assert isinstance(node, dict)


async def test_acting_as_its_node_every_request_names_the_node_and_events_too(
    server: Server, tmp_path: Path
) -> None:
    server.answer = lambda request: _json({"metadata": {"name": "n1"}})
    access = ClusterAccess(server.url, token(tmp_path), None, "n1", "ns", impersonate_node=True)
    async with aiohttp.ClientSession() as session:
        api = gate_api(session, access)
        await api.get_node()
        await api.create_event({"metadata": {"name": "n1.1"}})
        assert await api.patch_event("n1.1", {"count": 2})
    assert server.acting == ["system:node:n1"] * 3


async def _json(document: dict[str, Any]) -> web.Response:
    return web.json_response(document)


async def test_an_expired_event_is_reported_as_gone_other_refusals_raise(
    server: Server, tmp_path: Path
) -> None:
    async def gone(request: web.Request) -> web.Response:
        return web.json_response({"kind": "Status", "message": "not found"}, status=404)

    server.answer = gone
    async with aiohttp.ClientSession() as session:
        api = client(session, server, token(tmp_path))
        assert await api.patch_event("n1.1", {"count": 2}) is False
        with pytest.raises(AgentError, match="HTTP 404"):
            await api.create_event({"metadata": {"name": "n1.1"}})


def test_only_a_node_name_may_be_acted_as() -> None:
    with pytest.raises(AgentError, match="not a node name"):
        ClusterAccess.resolve("n1\r\nX-Evil: 1", "https://k:6443", impersonate_node=True)
    access = ClusterAccess.resolve("ip-10-0-0-1.ec2.internal", "https://k:6443", namespace="ns")
    assert access.namespace == "ns" and not access.impersonate_node


# -- the fleet view's reads (agent.adapters.kube.fleet) ----------------------------------------


READER = {"Authorization": "Bearer reader"}


def fleet_api(session: aiohttp.ClientSession, server: Server) -> FleetApi:
    return FleetApi(ApiClient(session, Access(server.url, False, lambda: READER)))


async def test_lists_are_read_page_by_page_with_the_selector(server: Server) -> None:
    asked: list[dict[str, str]] = []

    async def paged(request: web.Request) -> web.Response:
        asked.append(dict(request.query))
        start = int(request.query.get("continue") or 0)
        more = {"continue": str(start + 1)} if start < 2 else {}
        node = {"metadata": {"name": f"n{start}", "uid": "u"}, "status": {"images": ["x"] * 99}}
        return web.json_response({"metadata": more, "items": [node]})

    server.answer = paged
    async with aiohttp.ClientSession() as session:
        listed = await fleet_api(session, server).node_list("pool=a")
    # Only what `fleet` reads is kept: a Node's status (its images) is most of its size.
    assert listed["items"] == [{"metadata": {"name": f"n{i}"}} for i in range(3)]
    assert [a.get("continue") for a in asked] == [None, "1", "2"]
    assert all(a["labelSelector"] == "pool=a" and a["limit"] == "500" for a in asked)
    assert server.tokens == ["Bearer reader"] * 3


async def test_a_list_that_never_ends_is_an_error(server: Server) -> None:
    async def endless(request: web.Request) -> web.Response:
        return web.json_response({"metadata": {"continue": "again"}, "items": [{}]})

    server.answer = endless
    async with aiohttp.ClientSession() as session:
        with pytest.raises(KubeApiError, match=f"more than {MAX_PAGES} pages"):
            await fleet_api(session, server).pod_list("prepull-system", "a=b")
    assert len(server.tokens) == MAX_PAGES


@pytest.mark.parametrize(
    ("body", "status", "said"),
    [
        (b"<html>not json</html>", 200, "its /status is not JSON"),
        (b"x" * (MAX_STATUS_BYTES + 10), 200, "too large"),
        (b'{"kind":"Status","message":"error trying to reach service: refused"}', 503,
         "HTTP 503: error trying to reach service: refused; is the API server let through"),
        (b'{"kind":"Status","message":"pods \\"p\\" is forbidden"}', 403, "HTTP 403: pods"),
    ],
)  # fmt: skip
async def test_an_agents_answer_is_checked_before_it_is_read(
    server: Server, body: bytes, status: int, said: str
) -> None:
    paths: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        paths.append(request.path)
        return web.Response(body=body, status=status, content_type="application/json")

    server.answer = answer
    async with aiohttp.ClientSession() as session:
        with pytest.raises(KubeApiError, match=re.escape(said)):
            await fleet_api(session, server).agent_status("prepull-system", "p-1", 9410, 5)
    assert paths == ["/api/v1/namespaces/prepull-system/pods/p-1:9410/proxy/status"]


async def test_an_agent_that_does_not_answer_in_time_is_said_so(server: Server) -> None:
    released = asyncio.Event()

    async def never(request: web.Request) -> web.Response:
        await released.wait()
        return web.json_response({})

    server.answer = never
    async with aiohttp.ClientSession() as session:
        with pytest.raises(KubeApiError, match=r"no answer in 0\.2s"):
            await fleet_api(session, server).agent_status("ns", "p", 9410, 0.2)
    released.set()  # the server's handler ends before the server stops


async def test_a_list_larger_than_the_bound_in_all_is_an_error(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages_adapter, "MAX_LIST_BYTES", 4096)

    async def pages(request: web.Request) -> web.Response:
        node = {"metadata": {"name": "n", "labels": {"pad": "x" * 1000}}}
        return web.json_response({"metadata": {"continue": "more"}, "items": [node]})

    server.answer = pages
    async with aiohttp.ClientSession() as session:
        with pytest.raises(KubeApiError, match="larger than 4 KiB in all"):
            await fleet_api(session, server).node_list(None)
    assert 3 <= len(server.tokens) <= 5, "stopped at the bound, not at the page count"


async def test_no_redirect_is_followed_off_the_api_server(server: Server, tmp_path: Path) -> None:
    elsewhere: list[str] = []

    async def redirect(request: web.Request) -> web.Response:
        if request.path.startswith("/elsewhere"):
            elsewhere.append(request.headers.get("Authorization", ""))
            return web.json_response({"ready": True, "images": []})
        return web.Response(status=302, headers={"Location": f"{server.url}/elsewhere"})

    server.answer = redirect
    async with aiohttp.ClientSession() as session:
        with pytest.raises(
            KubeApiError, match=r"redirect \(HTTP 302\) to http://.*/elsewhere; not followed"
        ):
            await fleet_api(session, server).agent_status("ns", "p", 9410, 5)
        with pytest.raises(
            KubeApiError, match=r"redirect \(HTTP 302\) to http://.*/elsewhere; not followed"
        ):
            await client(session, server, token(tmp_path)).get_node()
    assert elsewhere == [], "nothing was asked where the redirect pointed"


# -- hostile answers to the readiness gate's writes --------------------------------------------


@pytest.mark.parametrize("mode", ["409", "422", "500", "slow", "huge", "not json"])
async def test_node_events_survive_every_hostile_answer_and_recover(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """POST and PATCH answered 409, 422, 500, too slowly or too large: the recorder never
    raises, says the error once (escaped), keeps at most PENDING writes, drops each after
    ATTEMPTS tries, and sends again once the API server answers."""
    from agent.adapters.kube import node as kube_adapter
    from agent.core.reports.events import ATTEMPTS, PENDING, EventBook, EventRecorder, NodeEvent

    monkeypatch.setattr(kube_adapter, "REQUEST_TIMEOUT", 0.3)
    healthy = False
    released = asyncio.Event()

    async def hostile(request: web.Request) -> web.StreamResponse:
        if healthy:
            return web.json_response({"metadata": {"name": "e"}}, status=201)
        if mode == "slow":
            await released.wait()
        if mode == "huge":
            return web.Response(body=b"{" + b" " * (MAX_RESPONSE_BYTES + 10), status=201)
        if mode == "not json":
            return web.Response(body=b"\x1b]0;pwned\x07<html>", status=201)
        status = int(mode) if mode.isdigit() else 500
        return web.json_response({"kind": "Status", "message": "no\x1b[2J"}, status=status)

    server.answer = hostile
    clock = [0.0]
    async with aiohttp.ClientSession() as session:
        api = client(session, server, token(tmp_path))
        recorder = EventRecorder(EventBook("n1", "ns", lambda: clock[0]), api)
        for i in range(ATTEMPTS + 1):
            clock[0] += 400.0  # past the rate limit's refill
            await recorder.flush([NodeEvent("Warning", "PreloadFailed", f"image {i} failed")])
        said = recorder.to_json()
        assert said["error"] and "\x1b" not in said["error"], said
        assert said["failed"] >= 1 and len(recorder._pending) <= PENDING, said
        healthy = True
        await recorder.flush([])
        assert recorder.to_json()["error"] is None and recorder.sent >= 1
    released.set()


def test_a_flapping_image_is_held_to_the_rate_limit_for_an_hour() -> None:
    """An image that fails and recovers every few seconds, with a new message each time, for an
    hour: at most the burst plus one write per refill, the rest counted as rate-limited."""
    from agent.core.reports.events import BURST, REFILL_SECONDS, EventBook, NodeEvent

    clock = [0.0]
    book = EventBook("n1", "ns", lambda: clock[0])
    writes = 0
    for second in range(0, 3600, 3):
        clock[0] = float(second)
        reason = "PreloadFailed" if second % 2 else "ImagesPreloaded"
        writes += book.record(NodeEvent("Warning", reason, f"attempt {second}")) is not None
    assert writes <= BURST + 3600 / REFILL_SECONDS + 1, writes
    assert book.dropped == 1200 - writes


async def test_impersonation_refused_mid_run_is_said_with_what_to_grant_and_tried_again(
    server: Server, tmp_path: Path
) -> None:
    refused = False

    async def answer(request: web.Request) -> web.Response:
        if refused:
            message = 'users "system:node:n1" is forbidden: cannot impersonate'
            return web.json_response({"kind": "Status", "message": message}, status=403)
        return web.json_response({"metadata": {"name": "n1"}})

    server.answer = answer
    access = ClusterAccess(server.url, token(tmp_path), None, "n1", "ns", impersonate_node=True)
    async with aiohttp.ClientSession() as session:
        api = gate_api(session, access)
        assert (await api.get_node())["metadata"]["name"] == "n1"
        refused = True
        with pytest.raises(KubeApiError, match="impersonate:associated-node") as raised:
            await api.patch_status({"status": {"conditions": []}})
        assert raised.value.status == 403
        refused = False
        await api.patch_status({"status": {"conditions": []}})  # the next sync goes through
