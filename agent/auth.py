"""Registry authentication, the pure part: challenges, Basic headers, token responses and the
cache of what worked (distribution/distribution docs/spec/auth/token.md). Pure: the HTTP
requests are the registry client's."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from agent.credentials import Credential

# A token without expires_in lives 60 s (token.md).
DEFAULT_TOKEN_SECONDS = 60.0
# A Basic header that worked is sent up front for this long, saving a 401 round trip per request.
BASIC_REUSE_SECONDS = 300.0
# Tokens are renewed a little before they expire.
EARLY_REFRESH = 0.9
_PARAM = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class Challenge:
    """A `WWW-Authenticate` header: `Bearer realm="…",service="…",scope="…"` or `Basic …`."""

    scheme: str
    params: dict[str, str]

    @classmethod
    def parse(cls, header: str) -> Challenge:
        scheme = header.split(" ", 1)[0].lower()
        return cls(scheme, dict(_PARAM.findall(header)))

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


def token_from(body: bytes) -> tuple[str, float] | None:
    """The token (`token` or `access_token`) and its lifetime, or None if there is none."""
    try:
        document = json.loads(body)
        token = document.get("token") or document.get("access_token")
        lifetime = float(document.get("expires_in") or DEFAULT_TOKEN_SECONDS)
    except (ValueError, AttributeError, TypeError):
        return None
    if not isinstance(token, str) or not token:
        return None
    return token, lifetime


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
