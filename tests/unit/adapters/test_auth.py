"""The pure part of registry auth: challenges, token bodies and the cache of what worked."""

from __future__ import annotations

import pytest

from agent.adapters.registry import auth


def test_a_bearer_challenge_gives_the_token_query() -> None:
    challenge = auth.Challenge.parse(
        'Bearer realm="https://auth.r.io/token",service="r.io",scope="repository:a:pull"'
    )
    assert challenge.scheme == "bearer"
    assert challenge.params["realm"] == "https://auth.r.io/token"
    assert challenge.token_query("repository:b:pull") == {
        "scope": "repository:a:pull",
        "service": "r.io",
    }
    assert auth.Challenge.parse('Basic realm="r"').token_query("s") == {"scope": "s"}


def test_token_bodies() -> None:
    assert auth.token_from(b'{"token": "t", "expires_in": 300}') == ("t", 300.0)
    assert auth.token_from(b'{"access_token": "a"}') == ("a", auth.DEFAULT_TOKEN_SECONDS)
    for body in (
        b"",
        b"[]",
        b'{"token": 5}',
        b'{"token": ""}',
        b'{"token": "t", "expires_in": "x"}',
        b'{"token": "t\\r\\nX-Injected: 1"}',
        b'{"token": "a b"}',
        b'{"token": "t\\u0000"}',
    ):
        with pytest.raises(auth.ChallengeError):
            auth.token_from(body)


def test_a_token_lifetime_is_finite_positive_and_capped() -> None:
    for expires, lifetime in (
        ("NaN", auth.DEFAULT_TOKEN_SECONDS),
        ("-5", auth.DEFAULT_TOKEN_SECONDS),
        ("1e400", auth.DEFAULT_TOKEN_SECONDS),
        ("1e9", auth.MAX_TOKEN_SECONDS),
    ):
        body = f'{{"token": "t", "expires_in": {expires}}}'.encode()
        assert auth.token_from(body) == ("t", lifetime), expires


@pytest.mark.parametrize(
    "realm",
    [
        "ftp://auth.example.com/token",
        "auth.example.com/token",
        "//auth.example.com/token",
        "https://auth.example.com:99999/token",
        "https://auth.example.com:x/token",
        "https:///token",
        "https://auth.example.com/to ken",
        "https://auth.example.com/\x01",
        "http://auth.example.com/token",
    ],
)
def test_a_realm_that_is_not_an_https_url_with_a_host_is_refused(realm: str) -> None:
    challenge = auth.Challenge("bearer", {"realm": realm})
    with pytest.raises(auth.ChallengeError) as caught:
        challenge.realm(plain_http_allowed=False)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 300


def test_a_plain_http_realm_is_accepted_only_for_a_plain_http_registry() -> None:
    challenge = auth.Challenge("bearer", {"realm": "http://127.0.0.1:5000/token"})
    assert challenge.realm(plain_http_allowed=True) == "http://127.0.0.1:5000/token"
    https = auth.Challenge("bearer", {"realm": "https://[::1]:8443/token"})
    assert https.realm(plain_http_allowed=False) == "https://[::1]:8443/token"


def test_what_worked_is_reused_until_shortly_before_it_expires() -> None:
    now = [100.0]
    cache = auth.AuthCache(clock=lambda: now[0])
    cache.put("r.io", "repository:a:pull", "Bearer t", True, 60.0)
    assert cache.get("r.io", "repository:a:pull") == ("Bearer t", True)
    assert cache.get("r.io", "repository:b:pull") is None, "scopes are separate"
    now[0] += 60 * auth.EARLY_REFRESH - 0.1
    assert cache.get("r.io", "repository:a:pull") is not None
    now[0] += 0.2
    assert cache.get("r.io", "repository:a:pull") is None, "renewed before it expires"
