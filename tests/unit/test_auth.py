"""The pure part of registry auth: challenges, token bodies and the cache of what worked."""

from __future__ import annotations

from agent import auth


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
    ):
        assert auth.token_from(body) is None, body


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
