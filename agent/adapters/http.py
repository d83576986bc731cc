"""HTTP as every adapter here speaks it to a peer it does not trust (registries, the Kubernetes
API): bodies read within a bound, redirects never followed where credentials ride along, and
header values checked before they are sent."""

from __future__ import annotations

import re

import aiohttp

from agent.core.text import fit

# What a token may hold: visible ASCII, no spaces (RFC 6750 b64token is narrower; registries'
# tokens are JWTs or OAuth tokens within it). A CR or LF would forge header lines.
_TOKEN = re.compile(r"[\x21-\x7e]+")


class BodyTooLarge(Exception):
    """A peer sent (or declared) more than the caller's bound."""


async def read_bounded(resp: aiohttp.ClientResponse, limit: int) -> bytes:
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


def redirect_of(response: aiohttp.ClientResponse, peer: str = "the API server") -> str | None:
    """What to say of a redirect `peer` answered (never followed: the credentials would go
    where it points), or None if it is none."""
    if not 300 <= response.status < 400:
        return None
    where = fit(response.headers.get("Location", "nowhere"), 200)
    return f"{peer} answered a redirect (HTTP {response.status}) to {where}; not followed"


def fits_header(token: str) -> bool:
    """Whether `token` can follow `Bearer ` in a header as it is: visible ASCII, no spaces."""
    return _TOKEN.fullmatch(token) is not None
