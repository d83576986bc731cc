"""The registry client against a small fake registry served by aiohttp.web on loopback."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from agent.adapters.registry.client import RegistryClient, open_session
from agent.adapters.registry.hosts import HostsDirectory, resolver
from agent.core.errors import RegistryError, TransientRegistryError
from agent.core.images.manifest import ACCEPT, OCI_INDEX, OCI_MANIFEST, sha256_digest
from agent.core.images.platform import Platform
from agent.core.images.reference import Reference
from agent.core.lists.config import RegistrySettings
from agent.core.lists.credentials import Credential
from agent.core.retry import RetryPolicy

INDEX = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": "sha256:" + "a" * 64,
                "size": 10,
                "platform": {"os": "linux", "architecture": "arm64"},
            }
        ],
    }
).encode()
INDEX_DIGEST = sha256_digest(INDEX)
PLAIN_HTTP = resolver(lambda host: RegistrySettings(insecure=True), HostsDirectory(None))
HOLD_SECONDS = 10.0
FAST = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.001, max_server_delay=0.01)


@dataclass
class StandInRegistry:
    """Serves one index under acme/app:1; the knobs below inject faults."""

    require_token: bool = False
    basic_challenge: bool = False
    send_digest_header: bool = True
    body_override: bytes | None = None
    failures: list[int] = field(default_factory=list)
    """Statuses to answer with before serving normally."""
    seen: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    tokens_issued: int = 0
    port: int = 0
    basic_password: str | None = None
    """With basic_challenge: the password the registry accepts for user "u"."""
    token_password: str | None = None
    """With require_token: the token service demands Basic u:<this>, or this refresh token."""
    token_requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    delay: float = 0.0
    retry_after: str = "0"
    arrivals: list[float] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    together: int = 0
    """Requests are held until this many are in flight at once (a state, not a moment), or
    HOLD_SECONDS pass."""
    all_in: asyncio.Event = field(default_factory=asyncio.Event)

    async def manifest(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.method, request.path, dict(request.headers)))
        self.arrivals.append(asyncio.get_running_loop().time())
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        if self.together and self.in_flight >= self.together:
            self.all_in.set()
        try:
            if self.together:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.all_in.wait(), HOLD_SECONDS)
            await asyncio.sleep(self.delay)
            return await self._manifest(request)
        finally:
            self.in_flight -= 1

    async def _manifest(self, request: web.Request) -> web.StreamResponse:
        if self.basic_challenge:
            expected = "Basic " + base64.b64encode(f"u:{self.basic_password}".encode()).decode()
            if self.basic_password is None or request.headers.get("Authorization") != expected:
                return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        if self.require_token and request.headers.get("Authorization") != "Bearer tok":
            challenge = (
                f'Bearer realm="http://127.0.0.1:{self.port}/token",service="fake",'
                'scope="repository:acme/app:pull"'
            )
            return web.Response(status=401, headers={"WWW-Authenticate": challenge})
        if self.failures:
            status = self.failures.pop(0)
            return web.Response(status=status, headers={"Retry-After": self.retry_after})
        if request.match_info["ref"] not in ("1", INDEX_DIGEST):
            unknown = {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}
            return web.json_response(unknown, status=404)
        headers = {"Content-Type": OCI_INDEX}
        if self.send_digest_header:
            headers["Docker-Content-Digest"] = INDEX_DIGEST
        body = self.body_override if self.body_override is not None else INDEX
        return web.Response(body=body if request.method == "GET" else None, headers=headers)

    async def tags(self, request: web.Request) -> web.Response:
        """The repository's tags, as distribution lists them (how a client tells a missing
        repository from a missing tag after a 404)."""
        return web.json_response({"name": "acme/app", "tags": ["1"]})

    async def token(self, request: web.Request) -> web.Response:
        form = dict(await request.post()) if request.method == "POST" else dict(request.query)
        self.token_requests.append((request.method, {k: str(v) for k, v in form.items()}))
        assert form["scope"] == "repository:acme/app:pull"
        assert form["service"] == "fake"
        if self.token_password is not None:
            basic = "Basic " + base64.b64encode(f"u:{self.token_password}".encode()).decode()
            refresh = (
                form.get("grant_type") == "refresh_token"
                and form.get("refresh_token") == self.token_password
            )
            if request.headers.get("Authorization") != basic and not refresh:
                return web.Response(status=401)
        self.tokens_issued += 1
        return web.json_response({"token": "tok", "expires_in": 300})


@pytest.fixture
async def fake() -> AsyncIterator[StandInRegistry]:
    state = StandInRegistry()
    app = web.Application()
    app.router.add_route("*", "/v2/acme/app/manifests/{ref}", state.manifest)
    app.router.add_route("GET", "/v2/acme/app/tags/list", state.tags)
    app.router.add_route("*", "/token", state.token)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.port = runner.addresses[0][1]
    try:
        yield state
    finally:
        await runner.cleanup()


@pytest.fixture
async def client(fake: StandInRegistry) -> AsyncIterator[RegistryClient]:
    async with open_session() as session:
        yield RegistryClient(session, PLAIN_HTTP, policy=FAST)


def ref(fake: StandInRegistry, tag: str = "1") -> Reference:
    return Reference(f"127.0.0.1:{fake.port}", "acme/app", tag)


async def test_head_resolves_with_the_full_accept_list(
    fake: StandInRegistry, client: RegistryClient
) -> None:
    digest, media_type = await client.head_digest(ref(fake))
    assert (digest, media_type) == (INDEX_DIGEST, OCI_INDEX)
    assert [m for m, _, _ in fake.seen] == ["HEAD"], "a GET counts against Docker Hub's limit"
    assert fake.seen[0][2]["Accept"] == ACCEPT


async def test_missing_digest_header_means_get_and_hash(
    fake: StandInRegistry, client: RegistryClient
) -> None:
    fake.send_digest_header = False
    digest, _ = await client.head_digest(ref(fake))
    assert digest == INDEX_DIGEST
    assert [m for m, _, _ in fake.seen] == ["HEAD", "GET"]


async def test_fetched_body_must_match_the_digest_asked_for(
    fake: StandInRegistry, client: RegistryClient
) -> None:
    fake.body_override = INDEX + b" "
    with pytest.raises(RegistryError, match="does not match"):
        await client.fetch_manifest(ref(fake), INDEX_DIGEST)


async def test_anonymous_bearer_token_is_fetched_once_and_reused(
    fake: StandInRegistry, client: RegistryClient
) -> None:
    fake.require_token = True
    await client.head_digest(ref(fake))
    await client.head_digest(ref(fake))
    assert fake.tokens_issued == 1
    assert fake.seen[-1][2]["Authorization"] == "Bearer tok"


async def test_429_and_5xx_are_retried(fake: StandInRegistry, client: RegistryClient) -> None:
    fake.failures = [429, 503]
    digest, _ = await client.head_digest(ref(fake))
    assert digest == INDEX_DIGEST
    assert len(fake.seen) == 3


async def test_persistent_5xx_surfaces_as_transient_after_the_attempts(
    fake: StandInRegistry, client: RegistryClient
) -> None:
    fake.failures = [502] * 10
    with pytest.raises(TransientRegistryError) as info:
        await client.head_digest(ref(fake))
    assert info.value.status == 502
    assert len(fake.seen) == FAST.attempts


async def test_unknown_tag_is_permanent_and_named(
    fake: StandInRegistry, client: RegistryClient
) -> None:
    with pytest.raises(RegistryError) as info:
        await client.fetch_manifest(ref(fake, "nope"))
    assert not isinstance(info.value, TransientRegistryError)
    message = str(info.value)
    assert f"127.0.0.1:{fake.port}" in message and "acme/app" in message
    assert "not found: tag 'nope' (the repository exists)" in message
    assert len(fake.seen) == 1, "a permanent failure was retried"


async def test_basic_challenge_without_credentials_says_none_were_sent(
    fake: StandInRegistry, client: RegistryClient
) -> None:
    fake.basic_challenge = True
    with pytest.raises(RegistryError, match="no credentials were sent") as info:
        await client.head_digest(ref(fake))
    assert info.value.status == 401
    assert "name a pull secret under `credentials:`" in str(info.value), "says what to do"


async def test_resolve_reports_no_manifest_for_the_platform(
    fake: StandInRegistry, client: RegistryClient
) -> None:
    resolution = await client.resolve(ref(fake), Platform("linux", "amd64"))
    assert resolution.digest == INDEX_DIGEST and resolution.chosen is None
    arm = await client.resolve(ref(fake), Platform("linux", "arm64"))
    assert arm.chosen is not None and arm.chosen.digest == "sha256:" + "a" * 64


async def test_unreachable_registry_is_transient(client: RegistryClient) -> None:
    closed = Reference("127.0.0.1:9", "acme/app", "1")
    with pytest.raises(TransientRegistryError, match="connection failed"):
        await client.head_digest(closed)


@pytest.fixture
async def client_with(fake: StandInRegistry) -> AsyncIterator:  # type: ignore[type-arg]
    async with open_session() as session:

        def make(*credentials: Credential) -> RegistryClient:
            return RegistryClient(
                session,
                PLAIN_HTTP,
                policy=FAST,
                credentials=lambda ref: credentials,
            )

        yield make


async def test_basic_challenge_is_answered_with_each_credential_in_turn(
    fake: StandInRegistry, client_with
) -> None:
    fake.basic_challenge, fake.basic_password = True, "right"
    client = client_with(Credential("u", "wrong", source="a"), Credential("u", "right", source="b"))

    digest, _ = await client.head_digest(ref(fake))
    await client.head_digest(ref(fake))

    assert digest == INDEX_DIGEST
    statuses = [h.get("Authorization", "") for _, _, h in fake.seen]
    assert len(fake.seen) == 4, "401, wrong, right, then the working header reused at once"
    assert statuses[0] == "" and statuses[3] == statuses[2]


async def test_bearer_token_with_basic_credentials(fake: StandInRegistry, client_with) -> None:
    fake.require_token, fake.token_password = True, "right"
    client = client_with(Credential("u", "wrong", source="a"), Credential("u", "right", source="b"))

    digest, _ = await client.head_digest(ref(fake))

    assert digest == INDEX_DIGEST and fake.tokens_issued == 1
    assert [m for m, _ in fake.token_requests] == ["GET", "GET"]


async def test_identity_token_is_used_as_an_oauth_refresh_token(
    fake: StandInRegistry, client_with
) -> None:
    fake.require_token, fake.token_password = True, "refresh-me"
    client = client_with(Credential("", "", identity_token="refresh-me", source="a"))

    await client.head_digest(ref(fake))

    ((method, form),) = fake.token_requests
    assert method == "POST" and form["grant_type"] == "refresh_token"
    assert form["client_id"] == "prepull-agent"


async def test_refused_credentials_are_reported_as_sent_and_never_shown(
    fake: StandInRegistry, client_with
) -> None:
    fake.require_token, fake.token_password = True, "right"
    client = client_with(Credential("u", "Wr0ng-secret", source="pull-secret"))

    with pytest.raises(RegistryError) as info:
        await client.head_digest(ref(fake))

    assert info.value.credentials_sent and info.value.status == 401
    assert "refused the credentials" in str(info.value) and "Wr0ng-secret" not in str(info.value)


async def test_a_registry_concurrency_limit_holds(fake: StandInRegistry) -> None:
    fake.delay, fake.together = 0.02, 2  # the first two are held until both are in flight
    async with open_session() as session:
        client = RegistryClient(session, PLAIN_HTTP, policy=FAST, concurrency=lambda domain: 2)
        await asyncio.gather(*(client.head_digest(ref(fake)) for _ in range(6)))
    assert fake.max_in_flight == 2


async def test_a_stated_concurrency_above_eight_is_what_the_registry_sees(
    fake: StandInRegistry,
) -> None:
    """The connection pool has no cap of its own (it once held every registry to 8)."""
    fake.delay, fake.together = 0.05, 16  # held until sixteen are in flight at once
    async with open_session() as session:
        client = RegistryClient(session, PLAIN_HTTP, policy=FAST, concurrency=lambda domain: 16)
        await asyncio.gather(*(client.head_digest(ref(fake)) for _ in range(32)))
    assert fake.max_in_flight == 16


async def test_a_429_pauses_every_request_to_that_registry(fake: StandInRegistry) -> None:
    fake.failures, fake.retry_after = [429], "0.3"
    answered = asyncio.Event()

    class Heard:
        def registry_request(self, host: str, method: str, status: str, seconds: float) -> None:
            if status == "429":
                answered.set()

        def registry_rate_limit(self, host: str, remaining: float) -> None:
            pass

    async with open_session() as session:
        client = RegistryClient(
            session, PLAIN_HTTP, policy=RetryPolicy(base_delay=0.001), observer=Heard()
        )
        refused = asyncio.create_task(client.head_digest(ref(fake)))
        await asyncio.wait_for(answered.wait(), 5)  # the 429 is in: an unrelated request comes
        await client.head_digest(ref(fake))
        await refused
    first, *later = fake.arrivals
    assert len(later) == 2 and all(t - first >= 0.3 for t in later), [t - first for t in later]
