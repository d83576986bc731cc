from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from agent.core.errors import ConfigError
from agent.core.images.reference import parse as ref
from agent.core.lists.credentials import CredentialFiles, Keyring, matches, normalize_key, parse

SECRET = "s3cr3t-Pa55"


def config(**auths: dict[str, str]) -> str:
    return json.dumps({"auths": auths})


def basic(user: str, password: str = SECRET) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.mark.parametrize(
    ("key", "normalized"),
    [
        ("https://index.docker.io/v1/", "index.docker.io"),
        ("docker.io", "docker.io"),
        ("http://r.example.com:5000/v2/", "r.example.com:5000"),
        ("r.example.com/v2/team", "r.example.com/team"),
        ("r.example.com/team/", "r.example.com/team"),
        ("*.example.com", "*.example.com"),
    ],
)
def test_keys_are_normalized_like_kubelet(key: str, normalized: str) -> None:
    assert normalize_key(key) == normalized


@pytest.mark.parametrize(
    ("key", "repository", "applies"),
    [
        ("r.example.com", "r.example.com/team/app", True),
        ("r.example.com", "r.example.com:5000/team/app", False),
        ("r.example.com:5000", "r.example.com:5000/team/app", True),
        ("r.example.com:5000", "r.example.com/team/app", False),
        ("*.example.com", "a.example.com/app", True),
        ("*.example.com", "example.com/app", False),
        ("*.example.com", "a.b.example.com/app", False),
        ("*.*.example.com", "a.b.example.com/app", True),
        ("r.example.com/team", "r.example.com/team/app", True),
        ("r.example.com/team", "r.example.com/other/app", False),
        ("r.example.com/team/app", "r.example.com/team/app", True),
        ("other.com", "r.example.com/app", False),
        ("docker.io", "docker.io/library/nginx", True),
    ],
)
def test_matching_follows_kubelet(key: str, repository: str, applies: bool) -> None:
    assert matches(key, repository) is applies


def test_more_specific_keys_come_first_and_all_matches_are_tried() -> None:
    keyring = Keyring(
        parse(
            config(**{"r.io": basic("host"), "r.io/team": basic("team"), "*.io": basic("glob")}),
            "f",
        )
    )
    assert [c.username for c in keyring.lookup(ref("r.io/team/app:1"))] == ["team", "host", "glob"]
    assert [c.username for c in keyring.lookup(ref("r.io/other/app:1"))] == ["host", "glob"]


@pytest.mark.parametrize("key", ["https://index.docker.io/v1/", "index.docker.io", "docker.io"])
def test_docker_hub_keys_apply_to_short_names(key: str) -> None:
    keyring = Keyring(parse(config(**{key: basic("hub")}), "f"))
    assert [c.username for c in keyring.lookup(ref("nginx:1.25"))] == ["hub"]
    assert keyring.lookup(ref("ghcr.io/a/b:1")) == []


def test_username_password_and_identity_token_entries() -> None:
    (plain, token) = parse(
        config(
            **{"a.io": {"username": "u", "password": SECRET}, "b.io": {"identitytoken": SECRET}}
        ),
        "f",
    )
    assert (plain[1].username, plain[1].password) == ("u", SECRET)
    assert token[1].identity_token == SECRET and token[1].username == ""


def test_auth_splits_on_the_first_colon() -> None:
    ((_, credential),) = parse(config(**{"a.io": basic("user", "pa:ss")}), "f")
    assert (credential.username, credential.password) == ("user", "pa:ss")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not JSON"),
        ("[]", "auths"),
        (config(**{"a.io": {"auth": "%%%"}}), "not base64"),
        (config(**{"a.io": {"auth": base64.b64encode(b"nocolon").decode()}}), "no ':'"),
        (config(**{"a.io": {}}), "neither"),
    ],
)
def test_bad_files_are_named_without_their_secrets(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(text, "pull-secret.json")
    assert message in str(info.value) and "pull-secret.json" in str(info.value)
    assert SECRET not in str(info.value)


def test_secrets_never_show_in_a_repr() -> None:
    ((_, credential),) = parse(
        config(**{"a.io": {"username": "u", "password": SECRET, "identitytoken": SECRET}}), "f"
    )
    assert SECRET not in repr(credential) and SECRET not in str(credential)


def test_a_rotated_file_is_read_again(tmp_path: Path) -> None:
    secret = tmp_path / ".dockerconfigjson"
    secret.write_text(config(**{"a.io": basic("old")}))
    files = CredentialFiles([secret])
    assert [c.username for c in files.lookup(ref("a.io/x:1"))] == ["old"]

    secret.write_text(config(**{"a.io": basic("new-user")}))
    os.utime(secret, ns=(1, 1))  # a new mtime even within the same clock tick

    assert [c.username for c in files.lookup(ref("a.io/x:1"))] == ["new-user"]


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read credentials"):
        CredentialFiles([tmp_path / "absent.json"]).lookup(ref("a.io/x:1"))


def test_a_number_too_long_to_read_is_said_so_not_a_crash() -> None:
    from agent.core.lists import credentials, yamlsafe

    with pytest.raises(ConfigError, match=r"not JSON \(a number too long to read\)"):
        credentials.parse('{"auths": {"r.io": {"x": ' + "1" * 200000 + "}}}", "secret.json")
    with pytest.raises(ConfigError, match="a number too long to read"):
        yamlsafe.documents('{"a": 1}\n{"b": ' + "9" * 200000 + "}\n", "stream.json")
