"""Registry credentials: dockerconfigjson files and kubelet's rules for which apply to an image.

Matching follows kubelet (pkg/credentialprovider/keyring.go): a key may carry a scheme and a
/v1/ or /v2/ path, which are stripped; host labels match one by one with globs (`*.example.com`
matches `a.example.com`, not `example.com`); ports must be equal; a key's path is a prefix of the
repository; more specific keys come first; Docker Hub images also get the `index.docker.io` key.
Passwords and tokens never appear in a repr, a message or a log."""

from __future__ import annotations

import base64
import fnmatch
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agent.core import files
from agent.core.errors import ConfigError
from agent.core.images.reference import DOCKER_HUB, Reference
from agent.core.lists.yamlsafe import json_problem

_DEFAULT_REGISTRY_KEY = "index.docker.io"


@dataclass(frozen=True)
class Credential:
    username: str
    password: str = field(repr=False)
    identity_token: str = field(default="", repr=False)
    """An OAuth refresh token for the registry's token endpoint (`identitytoken`)."""
    source: str = ""
    """Where it came from (file and key), to name in messages: never the secret itself."""


def parse(text: str, source: str) -> list[tuple[str, Credential]]:
    """The (key, credential) pairs of a dockerconfigjson document (or a docker config.json)."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        # Position only: the text around the error may be a secret.
        raise ConfigError(source, exc.lineno, f"not JSON ({exc.msg})") from None
    except (ValueError, RecursionError) as exc:
        raise ConfigError(
            source, None, f"not JSON ({json_problem(exc)})"
        ) from None  # the cause may quote the secret's text
    auths = document.get("auths") if isinstance(document, dict) else None
    if not isinstance(auths, dict):
        raise ConfigError(
            source, None, 'expected {"auths": {...}} (kubernetes.io/dockerconfigjson)'
        )
    pairs = []
    for key, entry in auths.items():
        if not isinstance(entry, dict):
            raise ConfigError(source, None, f"auths[{key!r}] is not an object")
        for name in ("auth", "username", "password", "identitytoken"):
            if entry.get(name) is not None and not isinstance(entry[name], str):
                # Name the field and its type, never its value.
                kind = type(entry[name]).__name__
                raise ConfigError(
                    source, None, f"auths[{key!r}].{name} must be a string, not {kind}"
                )
        username, password = entry.get("username") or "", entry.get("password") or ""
        if entry.get("auth"):
            try:
                decoded = base64.b64decode(entry["auth"], validate=True).decode()
            except (ValueError, TypeError):  # binascii.Error, non-ASCII, bad UTF-8 (fuzzing)
                # Say which entry, never what it held.
                raise ConfigError(
                    source, None, f"auths[{key!r}].auth is not base64 of user:password"
                ) from None  # the cause may quote the secret's text
            username, sep, password = decoded.partition(":")
            if not sep:
                raise ConfigError(
                    source, None, f"auths[{key!r}].auth has no ':' between user and password"
                )
        token = entry.get("identitytoken") or ""
        if not (username or token):
            raise ConfigError(
                source, None, f"auths[{key!r}] has neither auth, username nor identitytoken"
            )
        pairs.append((key, Credential(username, password, token, f"{source} ({key})")))
    return pairs


def normalize_key(key: str) -> str:
    """`https://index.docker.io/v1/` → `index.docker.io`; `r.io/v2/team` → `r.io/team`."""
    rest = key.split("://", 1)[1] if "://" in key else key
    host, slash, path = rest.partition("/")
    path = slash + path
    if path.startswith(("/v1/", "/v2/")):
        path = path[3:]
    path = path.rstrip("/") if path != "/" else ""
    return host + path


def _split_host(host: str) -> tuple[list[str], str]:
    name, _, port = host.partition(":")
    return name.split("."), port


def matches(key: str, repository: str) -> bool:
    """Does normalized `key` apply to `repository` (host/path, as a pull names it)?"""
    key_host, _, key_path = key.partition("/")
    repo_host, _, repo_path = repository.partition("/")
    key_labels, key_port = _split_host(key_host)
    repo_labels, repo_port = _split_host(repo_host)
    if key_port != repo_port or len(key_labels) != len(repo_labels):
        return False
    if not all(fnmatch.fnmatchcase(r, k) for k, r in zip(key_labels, repo_labels, strict=True)):
        return False
    return ("/" + repo_path).startswith("/" + key_path) if key_path else True


class Keyring:
    def __init__(self, pairs: Iterable[tuple[str, Credential]]) -> None:
        self._by_key: dict[str, list[Credential]] = {}
        for key, credential in pairs:
            self._by_key.setdefault(normalize_key(key), []).append(credential)
        # Reverse lexical order puts longer, more specific keys first, as kubelet does.
        self._keys = sorted(self._by_key, reverse=True)

    def lookup(self, ref: Reference) -> list[Credential]:
        """Every credential for `ref`, most specific first: try them in this order."""
        repository = ref.name
        found = [c for k in self._keys if matches(k, repository) for c in self._by_key[k]]
        if not found and ref.domain == DOCKER_HUB:
            found = list(self._by_key.get(_DEFAULT_REGISTRY_KEY, []))
        return found


class CredentialFiles:
    """The credential files of a config, re-read when one changes (a rotated Secret)."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = tuple(paths)
        self._seen: tuple[files.Signature | None, ...] | None = None
        self._keyring = Keyring([])

    def keyring(self) -> Keyring:
        """The current keyring; a file that cannot be read or parsed is a ConfigError."""
        signature = tuple(files.signature(path) for path in self.paths)
        if signature != self._seen:
            pairs = []
            for path in self.paths:
                try:
                    text = files.read_text(path)
                except files.UnreadableFile as exc:
                    raise ConfigError(
                        str(path), None, f"cannot read credentials: {exc}"
                    ) from None  # the cause may quote the secret's text
                pairs += parse(text, str(path))
            self._keyring = Keyring(pairs)
            self._seen = signature
        return self._keyring

    def lookup(self, ref: Reference) -> list[Credential]:
        return self.keyring().lookup(ref)
