"""Registry authentication, the pure part: challenges, Basic headers, token responses and the
cache of what worked (distribution/distribution docs/spec/auth/token.md). Pure: the HTTP
requests are the registry client's."""

from __future__ import annotations

import base64
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from agent.adapters.http import fits_header
from agent.core.lists.credentials import Credential

# A token without expires_in lives 60 s (token.md).
DEFAULT_TOKEN_SECONDS = 60.0
# A Basic header that worked is sent up front for this long, saving a 401 round trip per request.
BASIC_REUSE_SECONDS = 300.0
# Tokens are renewed a little before they expire.
EARLY_REFRESH = 0.9
# A token is cached at most this long, whatever expires_in says.
MAX_TOKEN_SECONDS = 24 * 3600.0
_PARAM = re.compile(r'(\w+)="([^"]*)"')
MAX_REMOTE_TEXT = 120


class ChallengeError(ValueError):
    """A challenge or token answer the agent will not act on; the message says why."""


def shown(text: str) -> str:
    """Remote text fit for a message: quoted, control characters escaped, cut short."""
    quoted = repr(text)
    return quoted if len(quoted) <= MAX_REMOTE_TEXT else quoted[: MAX_REMOTE_TEXT - 1] + "…"


@dataclass(frozen=True)
class Challenge:
    """A `WWW-Authenticate` header: `Bearer realm="…",service="…",scope="…"` or `Basic …`."""

    scheme: str
    params: dict[str, str]

    @classmethod
    def parse(cls, header: str) -> Challenge:
        scheme = header.split(" ", 1)[0].lower()
        return cls(scheme, dict(_PARAM.findall(header)))

    def realm(self, *, plain_http_allowed: bool) -> str:
        """The token service's URL, checked: an absolute http(s) URL with a host and a valid
        port, no control characters. Plain http only where the registry itself is plain http
        (credentials would otherwise leave TLS). ChallengeError says what is wrong."""
        realm = self.params.get("realm", "")
        if not realm:
            raise ChallengeError("bearer challenge without a realm")
        if not realm.isprintable() or any(c.isspace() for c in realm):
            raise ChallengeError(f"token realm {shown(realm)} holds spaces or control characters")
        try:
            parts = urlsplit(realm)
            parts.port  # noqa: B018 - raises ValueError for a port out of range
        except ValueError as exc:
            raise ChallengeError(
                f"token realm {shown(realm)} is not a URL: {exc}"
            ) from None  # the message carries the cause's own words
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ChallengeError(f"token realm {shown(realm)} is not an http(s) URL with a host")
        if parts.scheme == "http" and not plain_http_allowed:
            raise ChallengeError(
                f"token realm {shown(realm)} is plain http while the registry is https: refused"
            )
        return realm

    def token_query(self, scope: str) -> dict[str, str]:
        """The token request's query: the challenge's scope (else ours) and its service."""
        query = {"scope": self.params.get("scope", scope)}
        if "service" in self.params:
            query["service"] = self.params["service"]
        return query


def basic(credential: Credential) -> str:
    """An Authorization header value: it holds the password, so it is never logged."""
    pair = f"{credential.username}:{credential.password}".encode()
    return "Basic " + base64.b64encode(pair).decode()


def token_from(body: bytes) -> tuple[str, float]:
    """The token (`token` or `access_token`) and its lifetime; ChallengeError if the answer
    holds none fit to send (a token with CR/LF would forge header lines)."""
    try:
        document = json.loads(body)
        token = document.get("token") or document.get("access_token")
        lifetime = float(document.get("expires_in") or DEFAULT_TOKEN_SECONDS)
    except (ValueError, AttributeError, TypeError, OverflowError):
        raise ChallengeError(
            "the token service sent no token"
        ) from None  # the message carries the cause's own words
    if not isinstance(token, str) or not token:
        raise ChallengeError("the token service sent no token")
    if not fits_header(token):
        # Never quote it: it is a credential.
        raise ChallengeError("the token service sent a token with spaces or control characters")
    if not math.isfinite(lifetime) or lifetime <= 0:
        lifetime = DEFAULT_TOKEN_SECONDS
    return token, min(lifetime, MAX_TOKEN_SECONDS)


class AuthCache:
    """(host, scope) → the Authorization value that last worked there, until it expires."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: dict[tuple[str, str], tuple[str, bool, float]] = {}

    def get(self, host: str, scope: str) -> tuple[str, bool] | None:
        """The value and whether it carries credentials, if still fresh."""
        value, sent, expires = self._entries.get((host, scope), ("", False, 0.0))
        return (value, sent) if value and self._clock() < expires else None

    def put(self, host: str, scope: str, value: str, sent: bool, lifetime: float) -> None:
        expires = self._clock() + lifetime * EARLY_REFRESH
        self._entries[(host, scope)] = (value, sent, expires)
