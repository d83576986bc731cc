"""The OCI distribution API: resolve tags, fetch and verify manifests and configs, through
mirrors and with retries, answering auth challenges with the credentials issued for each host.
HTTP itself is transport's; challenges, headers and tokens are auth's (both beside it)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from urllib.parse import urljoin, urlsplit

from agent.adapters.registry import auth
from agent.adapters.registry.hosts import Endpoint
from agent.adapters.registry.transport import (
    MAX_CONFIG_BYTES,
    REPOSITORY_MISSING,
    USER_AGENT,
    RegistryObserver,
    Response,
    Session,
    Transport,
    missing,
    open_session,
    raise_for_status,
)
from agent.core.errors import RegistryError, TransientRegistryError
from agent.core.images import manifest as manifests
from agent.core.images.manifest import Manifest, ManifestError, Resolution
from agent.core.images.platform import Platform
from agent.core.images.reference import Reference
from agent.core.lists.credentials import Credential
from agent.core.retry import RetryPolicy, retry

__all__ = ["RegistryClient", "RegistryObserver", "open_session"]

# A mirror gets one try: on any failure the registry itself is asked.
MIRROR_POLICY = RetryPolicy(attempts=1)
log = logging.getLogger(__name__)


class RegistryClient:
    def __init__(
        self,
        session: Session,
        endpoints: Callable[[Reference], Sequence[Endpoint]] = lambda ref: (
            Endpoint(f"https://{ref.api_host}"),
        ),
        *,
        policy: RetryPolicy = RetryPolicy(),
        observer: RegistryObserver | None = None,
        credentials: Callable[[Reference], Sequence[Credential]] = lambda ref: (),
        concurrency: Callable[[str], int | None] = lambda domain: None,
    ) -> None:
        self._transport = Transport(
            session, observer=observer, concurrency=concurrency, max_pause=policy.max_server_delay
        )
        self._endpoints = endpoints
        self._policy = policy
        self._auth = auth.AuthCache()
        self._credentials = credentials

    @property
    def requests(self) -> int:
        """Requests sent to registries (token requests included): for tests and benchmarks."""
        return self._transport.requests

    async def head_digest(self, ref: Reference) -> tuple[str, str]:
        """The digest and media type a tag (or digest) names now; HEAD, GET only if needed."""
        target = ref.digest or ref.tag or "latest"
        try:
            response = await self._call(
                ref, "HEAD", f"manifests/{target}", {"Accept": manifests.ACCEPT}
            )
        except RegistryError as exc:
            if exc.status != 404:
                raise
            raise await self._what_is_missing(
                ref, exc
            ) from None  # the 404 is the question this error answers

        digest = response.headers.get("Docker-Content-Digest")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        if digest:
            return digest, media_type
        fetched = await self.fetch_manifest(ref, target)
        return fetched.digest, fetched.media_type

    async def _what_is_missing(self, ref: Reference, headed: RegistryError) -> RegistryError:
        """After a 404 to HEAD: whether the repository or the tag is missing. A HEAD answer has
        no body; the tag list of the repository says (distribution answers NAME_UNKNOWN for a
        repository it does not hold). One request more, on failure only; a registry that will
        not say (401 to anonymous listing, as Docker Hub) leaves the first answer."""
        try:
            await self._call(ref, "GET", "tags/list?n=1", {})
        except RegistryError as exc:
            if exc.status == 404:
                return RegistryError(ref.domain, ref.path, REPOSITORY_MISSING, status=404)
            return headed
        return RegistryError(
            ref.domain, ref.path, f"not found: {missing(ref)} (the repository exists)", status=404
        )

    async def fetch_manifest(self, ref: Reference, target: str | None = None) -> Manifest:
        """GET a manifest by tag or digest and verify its content against the digest."""
        target = target or ref.digest or ref.tag or "latest"
        try:
            response = await self._call(
                ref, "GET", f"manifests/{target}", {"Accept": manifests.ACCEPT}
            )
        except RegistryError as exc:
            # distribution answers MANIFEST_UNKNOWN for a repository it does not hold, too.
            if exc.status != 404 or REPOSITORY_MISSING in str(exc):
                raise
            raise await self._what_is_missing(
                ref, exc
            ) from None  # the 404 is the question this error answers
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
            raise RegistryError(ref.domain, ref.path, f"manifest {target}: {exc}") from exc

    async def fetch_blob(
        self, ref: Reference, digest: str, max_bytes: int = MAX_CONFIG_BYTES
    ) -> bytes:
        response = await self._call(ref, "GET", f"blobs/{digest}", {})
        if len(response.body) > max_bytes:
            raise RegistryError(ref.domain, ref.path, f"blob {digest} larger than expected")
        try:
            manifests.verify(response.body, digest)
        except ManifestError as exc:
            raise RegistryError(ref.domain, ref.path, f"blob {digest}: {exc}") from exc
        return response.body

    async def blob_range(self, ref: Reference, digest: str, byte_range: str) -> bytes | None:
        """Some bytes of a blob by HTTP Range (`-4`: the last four, `0-17`: the first 18), or
        None if the registry will not serve them (no 206, or any failure): the caller then
        estimates. Not verified against the digest: it is a size hint, never content."""
        response = await self._ranged(ref, digest, byte_range)
        return response.body if response is not None and response.status == 206 else None

    async def serves_range(self, ref: Reference, digest: str) -> bool | None:
        """Whether what serves `ref`'s blobs (a mirror, else the registry) answers a Range
        request for blob `digest` with that range (206) rather than the whole blob (200); None
        when it cannot tell. Ask for a small blob: a registry that ignores Range sends it all."""
        response = await self._ranged(ref, digest, "0-0")
        if response is None or response.status not in (200, 206):
            return None
        return response.status == 206

    async def _ranged(self, ref: Reference, digest: str, byte_range: str) -> Response | None:
        """GET `byte_range` of a blob; None on any failure (logged)."""
        try:
            return await self._call(ref, "GET", f"blobs/{digest}", {"Range": f"bytes={byte_range}"})
        except RegistryError as exc:
            log.debug("%s: range %s of %s refused: %s", ref, byte_range, digest, exc)
            return None

    async def resolve(self, ref: Reference, platform: Platform) -> Resolution:
        """Resolve `ref` and find the manifest `platform` would run (tags alone: head_digest)."""
        document = await self.fetch_manifest(ref)
        declared = None
        documents = [(document.digest, document.body)]
        if not document.is_index:
            # A single-platform manifest says its platform only in the image config.
            assert document.config is not None
            config = await self.fetch_blob(ref, document.config.digest)
            documents.append((document.config.digest, config))
            try:
                declared = manifests.config_platform(config)
            except ManifestError as exc:
                raise RegistryError(ref.domain, ref.path, f"config: {exc}") from exc
        found = manifests.choose(ref, document, platform, declared)
        return dataclasses.replace(found, documents=tuple(documents))

    # -- requests: mirrors, retries, auth ---------------------------------------------------

    async def _call(
        self, ref: Reference, method: str, path: str, headers: Mapping[str, str]
    ) -> Response:
        """Mirrors first, each tried once and skipped on any failure; then the registry itself,
        with retries. The registry's answer is the one that counts."""
        *mirrors, upstream = self._endpoints(ref)
        for endpoint in mirrors:
            try:
                return await self._call_endpoint(
                    ref, endpoint, method, path, headers, MIRROR_POLICY
                )
            except RegistryError as exc:
                # hosts.toml may list the registry itself among its hosts: not a mirror.
                what = "registry" if endpoint.netloc == ref.domain else "mirror"
                log.warning(
                    "%s %s failed for %s (%s); trying the next", what, endpoint.url, ref, exc
                )
        return await self._call_endpoint(ref, upstream, method, path, headers, self._policy)

    async def _call_endpoint(
        self,
        ref: Reference,
        endpoint: Endpoint,
        method: str,
        path: str,
        headers: Mapping[str, str],
        policy: RetryPolicy,
    ) -> Response:
        url = f"{endpoint.url}/v2/{ref.path}/{path}"

        async def attempt() -> Response:
            return await self._send(ref, endpoint, method, url, dict(headers))

        return await retry(
            attempt,
            is_transient=lambda exc: isinstance(exc, TransientRegistryError),
            server_hint=lambda exc: getattr(exc, "retry_after", None),
            policy=policy,
            what=f"{method} {endpoint.url} {ref.path} {path}",
        )

    async def _send(
        self, ref: Reference, endpoint: Endpoint, method: str, url: str, headers: dict[str, str]
    ) -> Response:
        scope = f"repository:{ref.path}:pull"
        cached = self._auth.get(endpoint.netloc, scope)
        if cached:
            headers["Authorization"], sent = cached
        else:
            sent = False
        response = await self._transport.request(ref, endpoint, method, url, headers)
        if response.status == 401:
            response, sent = await self._authenticate(
                ref, endpoint, method, url, headers, response, scope
            )
        if 300 <= response.status < 400 and "Location" in response.headers:
            # Blob storage redirects elsewhere: follow, never forwarding our credentials.
            location = urljoin(url, response.headers["Location"])
            if urlsplit(location).netloc != urlsplit(url).netloc:
                headers.pop("Authorization", None)
            response = await self._transport.request(ref, endpoint, method, location, headers)
        raise_for_status(ref, response, credentials_sent=sent)
        return response

    async def _authenticate(
        self,
        ref: Reference,
        endpoint: Endpoint,
        method: str,
        url: str,
        headers: dict[str, str],
        refused: Response,
        scope: str,
    ) -> tuple[Response, bool]:
        """Answer a 401 challenge with each matching credential in turn (kubelet's order), or
        anonymously when none match; returns the last response and whether credentials went."""
        challenge = auth.Challenge.parse(refused.headers.get("WWW-Authenticate", ""))
        candidates: list[Credential | None] = [*self._credentials_for(ref, endpoint)] or [None]
        response, sent = refused, False
        token_refusal: RegistryError | None = None
        for credential in candidates:
            if challenge.scheme == "bearer":
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
            elif challenge.scheme == "basic" and credential is not None and credential.username:
                value, lifetime = auth.basic(credential), auth.BASIC_REUSE_SECONDS
            else:
                break
            headers["Authorization"] = value
            sent = credential is not None
            response = await self._transport.request(ref, endpoint, method, url, headers)
            if response.status not in (401, 403):
                self._auth.put(endpoint.netloc, scope, value, sent, lifetime)
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

    async def _fetch_token(
        self,
        ref: Reference,
        endpoint: Endpoint,
        challenge: auth.Challenge,
        scope: str,
        credential: Credential | None,
    ) -> tuple[str, float]:
        """A bearer token and its lifetime from the challenge's realm (distribution token auth):
        anonymous, with Basic credentials, or an identity token as OAuth refresh token."""
        try:
            realm = challenge.realm(plain_http_allowed=endpoint.url.startswith("http://"))
        except auth.ChallengeError as exc:
            raise RegistryError(
                ref.domain, ref.path, f"{exc}", status=401
            ) from None  # the message carries the cause's own words
        query = challenge.token_query(scope)
        form = None
        headers = {}
        if credential is not None and credential.identity_token:
            form = {
                **query,
                "grant_type": "refresh_token",
                "refresh_token": credential.identity_token,
                "client_id": USER_AGENT,
            }
        elif credential is not None:
            headers["Authorization"] = auth.basic(credential)
        response = await self._transport.token_request(
            ref, endpoint, realm, query=query, headers=headers, form=form
        )
        sent = credential is not None
        if response.status != 200:
            if 300 <= response.status < 400:
                # Not followed: the request may carry credentials, and a token service has no
                # reason to redirect (distribution's token.md).
                refused = "answered a redirect"
            else:
                refused = "refused the credentials" if sent else "refused an anonymous token"
            raise RegistryError(
                ref.domain,
                ref.path,
                f"token service {realm} {refused} (HTTP {response.status})",
                status=response.status,
                credentials_sent=sent,
            )
        try:
            return auth.token_from(response.body)
        except auth.ChallengeError as exc:
            raise RegistryError(
                ref.domain, ref.path, f"token service {realm}: {exc}"
            ) from None  # the message carries the cause's own words
