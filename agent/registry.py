"""The OCI distribution API over aiohttp: resolve tags, fetch and verify manifests, token auth."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urljoin, urlsplit

import aiohttp

from agent import manifest as manifests
from agent.credentials import Credential
from agent.errors import ConfigError, RegistryError, TransientRegistryError
from agent.hosts import Endpoint
from agent.manifest import Descriptor, Manifest, ManifestError, Resolution
from agent.platform import Platform, best_match, can_run
from agent.reference import Reference
from agent.retry import RetryPolicy, retry

# Remote bodies are cut before they reach a message or a log.
MAX_REMOTE_TEXT = 256
# Image configs are small JSON documents; anything bigger is not one.
MAX_CONFIG_BYTES = 4 * 1024 * 1024
# Every body is read with a bound (manifests and configs: 4 MiB), stopping as soon as it is
# crossed: a hostile or broken registry cannot make the agent hold gigabytes.
MAX_BODY_BYTES = max(MAX_CONFIG_BYTES, manifests.MAX_MANIFEST_BYTES)
# Token responses carry one JWT: a few kB.
MAX_TOKEN_BYTES = 1024 * 1024
# A registry that accepts connections and then says nothing must cost seconds, not minutes:
# every read waits at most this long for the next bytes.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 10.0
REQUEST_TIMEOUT = 30.0
# Requests in flight to one registry when the list does not say (`registries.<host>.concurrency`):
# a dead registry then holds only its own images, never the others'.
DEFAULT_REGISTRY_CONCURRENCY = 8
# distribution-spec token auth: a token without expires_in lives 60 s.
DEFAULT_TOKEN_SECONDS = 60.0
# A Basic header that worked is sent up front for this long, saving a 401 round trip per request.
BASIC_REUSE_SECONDS = 300.0
_TOKEN_EARLY_REFRESH = 0.9
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
USER_AGENT = "prepull-agent"
# A 429 without Retry-After still pauses that registry this long (seconds).
DEFAULT_429_PAUSE = 5.0
# A mirror gets one try: on any failure the registry itself is asked.
MIRROR_POLICY = RetryPolicy(attempts=1)
log = logging.getLogger(__name__)


def open_session(limit: int = 32, limit_per_host: int = 8) -> aiohttp.ClientSession:
    """One keep-alive session per process, owned and closed by the caller."""
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit_per_host)
    timeout = aiohttp.ClientTimeout(
        total=REQUEST_TIMEOUT, sock_connect=CONNECT_TIMEOUT, sock_read=READ_TIMEOUT
    )
    return aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers={"User-Agent": USER_AGENT}
    )


class RegistryObserver(Protocol):
    """What the registry client reports as it works (agent.metrics.Metrics implements it)."""

    def registry_request(self, host: str, method: str, status: str, seconds: float) -> None:
        """One request: its host, method, status (or "error") and duration."""

    def registry_rate_limit(self, host: str, remaining: float) -> None:
        """The host's RateLimit-Remaining, whenever it sends one."""


class _Unobserved:
    def registry_request(self, host: str, method: str, status: str, seconds: float) -> None:
        pass

    def registry_rate_limit(self, host: str, remaining: float) -> None:
        pass


class RegistryClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        endpoints: Callable[[Reference], Sequence[Endpoint]] = lambda ref: (
            Endpoint(f"https://{ref.api_host}"),
        ),
        *,
        policy: RetryPolicy = RetryPolicy(),
        observer: RegistryObserver | None = None,
        credentials: Callable[[Reference], Sequence[Credential]] = lambda ref: (),
        concurrency: Callable[[str], int | None] = lambda domain: None,
    ) -> None:
        self._session = session
        self._observer = observer or _Unobserved()
        self._endpoints = endpoints
        self._policy = policy
        self._ssl_contexts: dict[tuple[str, ...], ssl.SSLContext] = {}
        self._auth: dict[tuple[str, str], tuple[str, bool, float]] = {}
        """(API host, scope) → (Authorization value, credentials in it?, monotonic expiry)."""
        self._credentials = credentials
        self._limit_for = concurrency
        self._limits: dict[str, asyncio.Semaphore] = {}
        self._paused_until: dict[str, float] = {}
        """Registry host → monotonic time before which it gets no request (after a 429)."""
        self.requests = 0
        """Requests sent to registries (token requests included): for tests and benchmarks."""

    async def head_digest(self, ref: Reference) -> tuple[str, str]:
        """The digest and media type a tag (or digest) names now; HEAD, GET only if needed."""
        target = ref.digest or ref.tag or "latest"
        response = await self._call(
            ref, "HEAD", f"manifests/{target}", {"Accept": manifests.ACCEPT}
        )
        digest = response.headers.get("Docker-Content-Digest")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        if digest:
            return digest, media_type
        fetched = await self.fetch_manifest(ref, target)
        return fetched.digest, fetched.media_type

    async def fetch_manifest(self, ref: Reference, target: str | None = None) -> Manifest:
        """GET a manifest by tag or digest and verify its content against the digest."""
        target = target or ref.digest or ref.tag or "latest"
        response = await self._call(ref, "GET", f"manifests/{target}", {"Accept": manifests.ACCEPT})
        body = response.body
        if len(body) > manifests.MAX_MANIFEST_BYTES:
            raise RegistryError(ref.domain, ref.path, "manifest larger than 4 MiB refused")
        # Trust only a digest we asked for, else the body's own hash (never the header alone).
        expected = target if target.startswith("sha") and ":" in target else None
        header = response.headers.get("Docker-Content-Digest")
        try:
            for claimed in filter(None, (expected, header)):
                manifests.verify(body, claimed)
            digest = expected or manifests.sha256_digest(body)
            return manifests.parse_manifest(body, digest, response.headers.get("Content-Type"))
        except ManifestError as exc:
            raise RegistryError(ref.domain, ref.path, f"manifest {target}: {exc}") from None

    async def fetch_blob(
        self, ref: Reference, digest: str, max_bytes: int = MAX_CONFIG_BYTES
    ) -> bytes:
        response = await self._call(ref, "GET", f"blobs/{digest}", {})
        if len(response.body) > max_bytes:
            raise RegistryError(ref.domain, ref.path, f"blob {digest} larger than expected")
        try:
            manifests.verify(response.body, digest)
        except ManifestError as exc:
            raise RegistryError(ref.domain, ref.path, f"blob {digest}: {exc}") from None
        return response.body

    async def resolve(self, ref: Reference, platform: Platform) -> Resolution:
        """Resolve `ref` and find the manifest `platform` would run (tags alone: head_digest)."""
        document = await self.fetch_manifest(ref)
        pinned = ref.pinned(document.digest)
        if document.is_index:
            offered = document.platforms
            chosen = best_match(
                platform, ((d.platform, d) for d in document.manifests if d.platform)
            )
        else:
            # A single-platform manifest says its platform only in the image config.
            assert document.config is not None
            config = await self.fetch_blob(ref, document.config.digest)
            try:
                declared = manifests.config_platform(config)
            except ManifestError as exc:
                raise RegistryError(ref.domain, ref.path, f"config: {exc}") from None
            offered = (declared,)
            this = Descriptor(document.media_type, document.digest, document.size, declared)
            chosen = this if can_run(platform, declared) else None
        return Resolution(pinned, document.digest, document.media_type, platform, offered, chosen)

    # -- transport ---------------------------------------------------------------------------

    async def _call(
        self, ref: Reference, method: str, path: str, headers: Mapping[str, str]
    ) -> _Response:
        """Mirrors first, each tried once and skipped on any failure; then the registry itself,
        with retries. The registry's answer is the one that counts."""
        *mirrors, upstream = self._endpoints(ref)
        for endpoint in mirrors:
            try:
                return await self._call_endpoint(
                    ref, endpoint, method, path, headers, MIRROR_POLICY
                )
            except RegistryError as exc:
                log.warning("mirror %s failed for %s (%s); trying the next", endpoint.url, ref, exc)
        return await self._call_endpoint(ref, upstream, method, path, headers, self._policy)

    async def _call_endpoint(
        self,
        ref: Reference,
        endpoint: Endpoint,
        method: str,
        path: str,
        headers: Mapping[str, str],
        policy: RetryPolicy,
    ) -> _Response:
        url = f"{endpoint.url}/v2/{ref.path}/{path}"

        async def attempt() -> _Response:
            return await self._send(ref, endpoint, method, url, dict(headers))

        return await retry(
            attempt,
            is_transient=lambda exc: isinstance(exc, TransientRegistryError),
            server_hint=lambda exc: getattr(exc, "retry_after", None),
            policy=policy,
            what=f"{method} {endpoint.url} {ref.path} {path}",
        )

    def _ssl(self, endpoint: Endpoint) -> ssl.SSLContext | bool:
        """TLS verification for an endpoint: default, skipped, or against its own CAs."""
        if endpoint.skip_verify:
            return False
        if not endpoint.ca:
            return True
        context = self._ssl_contexts.get(endpoint.ca)
        if context is None:
            context = ssl.create_default_context()
            for ca in endpoint.ca:
                try:
                    context.load_verify_locations(cafile=ca)
                except (OSError, ssl.SSLError) as exc:
                    raise ConfigError(ca, None, f"cannot load CA certificates: {exc}") from None
            self._ssl_contexts[endpoint.ca] = context
        return context

    async def _send(
        self, ref: Reference, endpoint: Endpoint, method: str, url: str, headers: dict[str, str]
    ) -> _Response:
        scope = f"repository:{ref.path}:pull"
        cached = self._cached_auth(endpoint.netloc, scope)
        if cached:
            headers["Authorization"], sent = cached
        else:
            sent = False
        response = await self._request(ref, endpoint, method, url, headers)
        if response.status == 401:
            response, sent = await self._authenticate(
                ref, endpoint, method, url, headers, response, scope
            )
        if 300 <= response.status < 400 and "Location" in response.headers:
            # Blob storage redirects elsewhere: follow, never forwarding our credentials.
            location = urljoin(url, response.headers["Location"])
            if urlsplit(location).netloc != urlsplit(url).netloc:
                headers.pop("Authorization", None)
            response = await self._request(ref, endpoint, method, location, headers)
        self._check(ref, response, credentials_sent=sent)
        return response

    async def _authenticate(
        self,
        ref: Reference,
        endpoint: Endpoint,
        method: str,
        url: str,
        headers: dict[str, str],
        refused: _Response,
        scope: str,
    ) -> tuple[_Response, bool]:
        """Answer a 401 challenge with each matching credential in turn (kubelet's order), or
        anonymously when none match; returns the last response and whether credentials went."""
        challenge = refused.headers.get("WWW-Authenticate", "")
        scheme = challenge.split(" ", 1)[0].lower()
        candidates: list[Credential | None] = [*self._credentials_for(ref, endpoint)] or [None]
        response, sent = refused, False
        token_refusal: RegistryError | None = None
        for credential in candidates:
            if scheme == "bearer":
                try:
                    token, lifetime = await self._fetch_token(
                        ref, endpoint, challenge, scope, credential
                    )
                except RegistryError as exc:
                    if exc.status not in (401, 403):
                        raise
                    token_refusal = exc
                    continue
                value = f"Bearer {token}"
            elif scheme == "basic" and credential is not None and credential.username:
                value, lifetime = _basic(credential), BASIC_REUSE_SECONDS
            else:
                break
            headers["Authorization"] = value
            sent = credential is not None
            response = await self._request(ref, endpoint, method, url, headers)
            if response.status not in (401, 403):
                expires = time.monotonic() + lifetime * _TOKEN_EARLY_REFRESH
                self._auth[(endpoint.netloc, scope)] = (value, sent, expires)
                return response, sent
        if token_refusal is not None and response is refused:
            raise token_refusal
        return response, sent

    def _credentials_for(self, ref: Reference, endpoint: Endpoint) -> Sequence[Credential]:
        """Credentials go only to the registry they were issued for: a mirror is another host
        and gets the credentials written for it (its own `auths` key), or none."""
        if endpoint.mirror:
            return self._credentials(Reference(endpoint.netloc, ref.path, ref.tag, ref.digest))
        return self._credentials(ref)

    async def _request(
        self, ref: Reference, endpoint: Endpoint, method: str, url: str, headers: Mapping[str, str]
    ) -> _Response:
        async with self._registry_slot(ref.domain, endpoint.netloc):
            return await self._send_once(ref, endpoint, method, url, headers)

    @contextlib.asynccontextmanager
    async def _registry_slot(self, domain: str, netloc: str) -> AsyncIterator[None]:
        """Per-registry politeness: the registry's concurrency limit, and a pause of the host
        that answered 429 (every request to it waits, not just the one refused)."""
        limit = self._limits.get(domain)
        if limit is None:
            allowed = self._limit_for(domain) or DEFAULT_REGISTRY_CONCURRENCY
            limit = self._limits[domain] = asyncio.Semaphore(allowed)
        async with limit:
            pause = self._paused_until.get(netloc, 0.0) - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            yield

    async def _send_once(
        self, ref: Reference, endpoint: Endpoint, method: str, url: str, headers: Mapping[str, str]
    ) -> _Response:
        self.requests += 1
        started = time.monotonic()
        status = "error"
        try:
            async with self._session.request(
                method, url, headers=headers, allow_redirects=False, ssl=self._ssl(endpoint)
            ) as resp:
                body = await _read_bounded(resp, MAX_BODY_BYTES) if method != "HEAD" else b""
                status = str(resp.status)
                self._note_rate_limit(endpoint.netloc, resp.status, resp.headers)
                return _Response(resp.status, resp.headers, body)
        except BodyTooLarge as exc:
            raise RegistryError(
                ref.domain, ref.path, f"{endpoint.netloc} sent {exc}: refused"
            ) from None
        except aiohttp.ClientSSLError as exc:
            # A certificate problem does not heal by retrying: say how to fix it.
            reason = getattr(exc, "certificate_error", None) or exc
            raise RegistryError(
                ref.domain,
                ref.path,
                f"TLS with {endpoint.netloc} failed: {reason}; trust its CA with "
                f"registries.{ref.domain}.ca or a hosts.toml 'ca'",
            ) from None
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            detail = str(exc) or type(exc).__name__
            raise TransientRegistryError(
                ref.domain, ref.path, f"connection failed: {detail}"
            ) from None
        except aiohttp.ClientError as exc:
            raise RegistryError(ref.domain, ref.path, f"request failed: {exc}") from None
        finally:
            self._observer.registry_request(
                endpoint.netloc, method, status, time.monotonic() - started
            )

    def _note_rate_limit(self, netloc: str, status: int, headers: Mapping[str, str]) -> None:
        remaining = _leading_number(headers.get("RateLimit-Remaining"))
        if remaining is not None:
            self._observer.registry_rate_limit(netloc, remaining)
        if status == 429:
            wait = _retry_after(headers.get("Retry-After"))
            wait = DEFAULT_429_PAUSE if wait is None else wait
            self._paused_until[netloc] = time.monotonic() + min(wait, self._policy.max_server_delay)

    def _check(self, ref: Reference, response: _Response, *, credentials_sent: bool) -> None:
        status = response.status
        if 200 <= status < 300:
            return
        detail = _error_detail(response.body)
        if status == 429 or status >= 500:
            raise TransientRegistryError(
                ref.domain,
                ref.path,
                detail or "registry busy or failing",
                status=status,
                retry_after=_retry_after(response.headers.get("Retry-After")),
            )
        if status == 404:
            detail = "not found" + (f" ({detail})" if detail else "")
        elif status in (401, 403):
            sent = "credentials were sent" if credentials_sent else "no credentials were sent"
            detail = f"access denied ({detail + '; ' if detail else ''}{sent})"
        else:
            detail = detail or "unexpected response"
        raise RegistryError(
            ref.domain, ref.path, detail, status=status, credentials_sent=credentials_sent
        )

    # -- bearer tokens (distribution token auth) --------------------------------------------

    def _cached_auth(self, host: str, scope: str) -> tuple[str, bool] | None:
        """The Authorization value that last worked here, and whether it carries credentials."""
        value, sent, expires = self._auth.get((host, scope), ("", False, 0.0))
        return (value, sent) if value and time.monotonic() < expires else None

    async def _fetch_token(
        self,
        ref: Reference,
        endpoint: Endpoint,
        challenge: str,
        scope: str,
        credential: Credential | None,
    ) -> tuple[str, float]:
        """A bearer token and its lifetime from the challenge's realm (distribution token auth):
        anonymous, with Basic credentials, or an identity token as OAuth refresh token."""
        params = dict(_CHALLENGE_PARAM.findall(challenge))
        realm = params.get("realm")
        if not realm:
            raise RegistryError(ref.domain, ref.path, "bearer challenge without a realm")
        query = {"scope": params.get("scope", scope)}
        if "service" in params:
            query["service"] = params["service"]
        self.requests += 1
        # The realm may live on another host; the endpoint's TLS settings are for its own host.
        tls = self._ssl(endpoint) if urlsplit(realm).netloc == endpoint.netloc else True
        try:
            if credential is not None and credential.identity_token:
                form = {
                    **query,
                    "grant_type": "refresh_token",
                    "refresh_token": credential.identity_token,
                    "client_id": USER_AGENT,
                }
                request = self._session.post(realm, data=form, ssl=tls)
            else:
                headers = {"Authorization": _basic(credential)} if credential is not None else {}
                request = self._session.get(realm, params=query, headers=headers, ssl=tls)
            async with request as resp:
                body = await _read_bounded(resp, MAX_TOKEN_BYTES)
                status = resp.status
        except BodyTooLarge as exc:
            raise RegistryError(ref.domain, ref.path, f"token service {realm} sent {exc}") from None
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            raise TransientRegistryError(
                ref.domain, ref.path, f"token service {realm} unreachable: {exc}"
            ) from None
        if status != 200:
            sent = credential is not None
            refused = "refused the credentials" if sent else "refused an anonymous token"
            raise RegistryError(
                ref.domain,
                ref.path,
                f"token service {realm} {refused} (HTTP {status})",
                status=status,
                credentials_sent=sent,
            )
        try:
            document = json.loads(body)
            token = document.get("token") or document.get("access_token")
            lifetime = float(document.get("expires_in") or DEFAULT_TOKEN_SECONDS)
        except (ValueError, AttributeError, TypeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryError(ref.domain, ref.path, f"token service {realm} sent no token")
        return token, lifetime


class BodyTooLarge(Exception):
    pass


async def _read_bounded(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, or BodyTooLarge as soon as it passes `limit` (declared or streamed)."""
    if resp.content_length is not None and resp.content_length > limit:
        raise BodyTooLarge(f"a body of {resp.content_length} bytes (limit {limit})")
    chunks, size = [], 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"a body of more than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass(frozen=True)
class _Response:
    status: int
    headers: Mapping[str, str]
    body: bytes


def _basic(credential: Credential) -> str:
    """An Authorization header value: it holds the password, so it is never logged."""
    pair = f"{credential.username}:{credential.password}".encode()
    return "Basic " + base64.b64encode(pair).decode()


def _error_detail(body: bytes) -> str:
    """The registry's own error codes and messages (distribution-spec error body), cut short."""
    try:
        errors = json.loads(body).get("errors") or []
        text = "; ".join(f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors)
    except (ValueError, AttributeError, TypeError):
        text = body.decode("utf-8", "replace").strip()
    return text[:MAX_REMOTE_TEXT]


def _leading_number(value: str | None) -> float | None:
    """`76;w=21600` (Docker Hub's RateLimit-Remaining) → 76."""
    if not value:
        return None
    try:
        return float(value.split(";", 1)[0].strip())
    except ValueError:
        return None


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the HTTP-date form is rare for registries and ignored)."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
