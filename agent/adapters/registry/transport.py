"""HTTP to registries over aiohttp: one keep-alive session, TLS per endpoint, per-registry
concurrency slots, the pause a 429 imposes on its host, bounded reads and timeouts, and the
observer that metrics hang on. It knows nothing of manifests or auth flows (client.py, beside
it)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from agent.adapters.http import BodyTooLarge, read_bounded
from agent.adapters.registry.hosts import Endpoint
from agent.core.errors import ConfigError, RegistryError, TransientRegistryError
from agent.core.images import manifest as manifests
from agent.core.images.reference import Reference
from agent.core.text import fit

# Image configs are small JSON documents; anything bigger is not one.
MAX_CONFIG_BYTES = 4 * 1024 * 1024
# Every body is read with a bound (manifests and configs: 4 MiB), stopping as soon as it is
# crossed: a hostile or broken registry cannot make the agent hold gigabytes.
MAX_BODY_BYTES = max(MAX_CONFIG_BYTES, manifests.MAX_MANIFEST_BYTES)
# A Range request asks for a few bytes (a gzip trailer, a zstd header): a registry that answers
# it with the whole blob is cut off at once (the caller then estimates).
MAX_RANGE_BYTES = 64 * 1024
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
# A 429 without Retry-After still pauses that registry this long (seconds).
DEFAULT_429_PAUSE = 5.0
USER_AGENT = "prepull-agent"
Session = aiohttp.ClientSession


def open_session() -> aiohttp.ClientSession:
    """One keep-alive session per process, owned and closed by the caller. The connection pool
    has no limit of its own: each registry's slots (Transport) are the one limit, so the
    concurrency a list or a command states is what a registry sees."""
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    timeout = aiohttp.ClientTimeout(
        total=REQUEST_TIMEOUT, sock_connect=CONNECT_TIMEOUT, sock_read=READ_TIMEOUT
    )
    return aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers={"User-Agent": USER_AGENT}
    )


class RegistryObserver(Protocol):
    """What the registry client reports as it works (agent.daemon.metrics.Metrics implements it)."""

    def registry_request(self, host: str, method: str, status: str, seconds: float) -> None:
        """One request: its host, method, status (or "error") and duration."""

    def registry_rate_limit(self, host: str, remaining: float) -> None:
        """The host's RateLimit-Remaining, whenever it sends one."""


class _Unobserved:
    def registry_request(self, host: str, method: str, status: str, seconds: float) -> None:
        pass

    def registry_rate_limit(self, host: str, remaining: float) -> None:
        pass


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes


class Transport:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        observer: RegistryObserver | None = None,
        concurrency: Callable[[str], int | None] = lambda domain: None,
        max_pause: float = 120.0,
    ) -> None:
        self._session = session
        self._observer = observer or _Unobserved()
        self._limit_for = concurrency
        self._max_pause = max_pause
        self._limits: dict[str, asyncio.Semaphore] = {}
        self._paused_until: dict[str, float] = {}
        """Registry host → monotonic time before which it gets no request (after a 429)."""
        self._ssl_contexts: dict[tuple[str, ...], ssl.SSLContext] = {}
        self.requests = 0
        """Requests sent (token requests included): for tests and benchmarks."""

    async def request(
        self, ref: Reference, endpoint: Endpoint, method: str, url: str, headers: Mapping[str, str]
    ) -> Response:
        """One registry API request in the registry's slot; connection faults are transient."""
        async with self._registry_slot(ref.domain, endpoint.netloc):
            return await self._send_once(ref, endpoint, method, url, headers)

    async def token_request(
        self,
        ref: Reference,
        endpoint: Endpoint,
        realm: str,
        *,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        form: Mapping[str, str] | None,
    ) -> Response:
        """A GET (or, with `form`, a POST) to a token service, its answer bounded."""
        self.requests += 1
        # The realm may live on another host; the endpoint's TLS settings are for its own host.
        tls = self.ssl(endpoint) if _netloc(realm) == endpoint.netloc else True
        try:
            if form is not None:
                request = self._session.post(realm, data=dict(form), ssl=tls, allow_redirects=False)
            else:
                request = self._session.get(
                    realm,
                    params=dict(query),
                    headers=dict(headers),
                    ssl=tls,
                    allow_redirects=False,
                )
            async with request as resp:
                return Response(
                    resp.status, resp.headers, await read_bounded(resp, MAX_TOKEN_BYTES)
                )
        except (BodyTooLarge, TimeoutError, aiohttp.ClientError, ValueError) as exc:
            # The request carried credentials: its error stays out of tracebacks.
            raise failure(ref, endpoint, exc, f"token service {realm}") from None

    def ssl(self, endpoint: Endpoint) -> ssl.SSLContext | bool:
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
                    raise ConfigError(ca, None, f"cannot load CA certificates: {exc}") from exc
            self._ssl_contexts[endpoint.ca] = context
        return context

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
    ) -> Response:
        self.requests += 1
        started = time.monotonic()
        status = "error"
        try:
            async with self._session.request(
                method, url, headers=headers, allow_redirects=False, ssl=self.ssl(endpoint)
            ) as resp:
                limit = MAX_RANGE_BYTES if "Range" in headers else MAX_BODY_BYTES
                body = await read_bounded(resp, limit) if method != "HEAD" else b""
                status = str(resp.status)
                self._note_rate_limit(endpoint.netloc, resp.status, resp.headers)
                return Response(resp.status, resp.headers, body)
        except (BodyTooLarge, TimeoutError, aiohttp.ClientError, ValueError) as exc:
            # The request carried credentials: its error stays out of tracebacks.
            raise failure(ref, endpoint, exc, endpoint.netloc) from None
        finally:
            self._observer.registry_request(
                endpoint.netloc, method, status, time.monotonic() - started
            )

    def _note_rate_limit(self, netloc: str, status: int, headers: Mapping[str, str]) -> None:
        remaining = _leading_number(headers.get("RateLimit-Remaining"))
        if remaining is not None:
            self._observer.registry_rate_limit(netloc, remaining)
        if status == 429:
            wait = retry_after(headers.get("Retry-After"))
            wait = DEFAULT_429_PAUSE if wait is None else wait
            self._paused_until[netloc] = time.monotonic() + min(wait, self._max_pause)


# Remote bodies are cut before they reach a message or a log.
MAX_REMOTE_TEXT = 256
REPOSITORY_MISSING = "not found: the repository does not exist"


def failure(ref: Reference, endpoint: Endpoint, exc: Exception, asked: str) -> RegistryError:
    """The one table from what went wrong sending a request to a registry (`asked`: its host,
    or its token service) to the project's errors, beside the table of its answers
    (errors_for_status): a connection fault is transient; an answer too large, a certificate
    problem, a URL or header aiohttp will not send (a hostile Location) do not heal by
    retrying."""
    if isinstance(exc, BodyTooLarge):
        return RegistryError(ref.domain, ref.path, f"{asked} sent {exc}: refused")
    if isinstance(exc, aiohttp.ClientSSLError):
        return RegistryError(ref.domain, ref.path, _tls_advice(ref, endpoint, exc))
    if isinstance(exc, TimeoutError | aiohttp.ClientConnectionError):
        detail = str(exc) or type(exc).__name__
        return TransientRegistryError(ref.domain, ref.path, f"{asked}: connection failed: {detail}")
    return RegistryError(ref.domain, ref.path, f"{asked}: request refused: {exc}")


def _tls_advice(ref: Reference, endpoint: Endpoint, exc: aiohttp.ClientSSLError) -> str:
    """What failed in TLS with a registry, and the setting that fixes it."""
    reason = getattr(exc, "certificate_error", None) or exc
    if "WRONG_VERSION_NUMBER" in str(reason):
        # OpenSSL's words for an answer that is not TLS at all: a plain-HTTP registry.
        return (
            f"TLS with {endpoint.netloc} failed: it answers in plain HTTP, not HTTPS; if that "
            f"is intended, set registries.{ref.domain}.insecure: true in the list (or "
            f'server = "http://{endpoint.netloc}" in its hosts.toml; `resolve --insecure` for '
            "one look)"
        )
    return (
        f"TLS with {endpoint.netloc} failed: {reason}; trust its CA with "
        f"registries.{ref.domain}.ca or a hosts.toml 'ca' (`resolve --insecure` for one look)"
    )


def _netloc(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0]


def _leading_number(value: str | None) -> float | None:
    """`76;w=21600` (Docker Hub's RateLimit-Remaining) → 76."""
    if not value:
        return None
    try:
        return float(value.split(";", 1)[0].strip())
    except ValueError:
        return None


def retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the HTTP-date form is rare for registries and ignored)."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def raise_for_status(ref: Reference, response: Response, *, credentials_sent: bool) -> None:
    """The one table from a registry's HTTP answer to the project's errors (beside `failure`,
    the table of requests that got no answer): 429 and 5xx are
    transient (retried), 404 and 401/403 permanent and say whether credentials were sent."""
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
            retry_after=retry_after(response.headers.get("Retry-After")),
        )
    if status == 404:
        detail = _not_found(ref, _error_codes(response.body), detail)
    elif status in (401, 403):
        sent = "credentials were sent" if credentials_sent else "no credentials were sent"
        detail = f"access denied ({detail + '; ' if detail else ''}{sent})"
        if not credentials_sent:
            detail += f"; if {ref.domain} needs a login, name a pull secret under `credentials:`"
    else:
        detail = detail or "unexpected response"
    raise RegistryError(
        ref.domain, ref.path, detail, status=status, credentials_sent=credentials_sent
    )


def _not_found(ref: Reference, codes: list[str], detail: str) -> str:
    """Which part is missing, by the registry's error code (distribution-spec): the
    repository, or the tag or manifest within it. A HEAD answer has no body to say."""
    if "NAME_UNKNOWN" in codes:
        return f"{REPOSITORY_MISSING} ({detail})"
    if "MANIFEST_UNKNOWN" in codes:
        return f"not found: {missing(ref)} ({detail})"
    return "not found" + (f" ({detail})" if detail else "")


def missing(ref: Reference) -> str:
    """What a manifest lookup of `ref` asked for: its digest, else its tag."""
    return f"manifest {ref.digest}" if ref.digest else f"tag {ref.tag or 'latest'!r}"


def _error_codes(body: bytes) -> list[str]:
    try:
        return [str(e.get("code")) for e in json.loads(body).get("errors") or []]
    except (ValueError, AttributeError, TypeError):
        return []


def _error_detail(body: bytes) -> str:
    """The registry's own error codes and messages (distribution-spec error body), cut short."""
    try:
        errors = json.loads(body).get("errors") or []
        text = "; ".join(f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors)
    except (ValueError, AttributeError, TypeError):
        text = body.decode("utf-8", "replace").strip()
    return fit(text, MAX_REMOTE_TEXT)
