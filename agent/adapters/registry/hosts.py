"""Where and how to reach a registry: containerd's hosts directory (certs.d/<host>/hosts.toml)
merged with the preload list's `registries:` overrides, so the agent resolves through the same
mirrors, plain-HTTP settings, CAs and skip_verify that containerd pulls through (docs/hosts.md)."""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from agent.core import files
from agent.core.defaults import HOSTS_DIR
from agent.core.errors import ConfigError
from agent.core.images.reference import DOCKER_HUB, DOCKER_HUB_API_HOST, Reference
from agent.core.lists.config import RegistrySettings

DEFAULT_HOSTS_DIR = HOSTS_DIR


@dataclass(frozen=True)
class Endpoint:
    url: str
    """scheme://host[:port], to which /v2/<repository>/… is appended."""
    ca: tuple[str, ...] = ()
    skip_verify: bool = False
    mirror: bool = False
    """A mirror is tried first and skipped on failure; the upstream's answer is final."""

    @property
    def netloc(self) -> str:
        return self.url.split("://", 1)[1].split("/", 1)[0]


def _url(text: str) -> str:
    text = text.rstrip("/")
    url = text if "://" in text else f"https://{text}"
    # containerd appends /v2 itself when the host URL has no path; so do we.
    return url.removesuffix("/v2")


def parse_hosts_toml(text: str, source: str, upstream: str) -> tuple[Endpoint, ...]:
    """Endpoints in the order containerd tries them: each [host] able to resolve, then server."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, None, f"invalid TOML: {exc}") from exc
    except RecursionError:
        raise ConfigError(
            source, None, "invalid TOML: nested too deeply"
        ) from None  # a nesting bomb's traceback says nothing more
    base = Path(source).parent
    endpoints = []
    hosts = document.get("host") or {}
    if not isinstance(hosts, dict):
        raise ConfigError(source, None, "[host] must be a table of host URLs")
    for url, options in hosts.items():
        where = f'[host."{url}"]'
        if not isinstance(options, dict):
            raise ConfigError(source, None, f"{where} must be a table")
        capabilities = options.get("capabilities", ["pull", "resolve", "push"])
        if not isinstance(capabilities, list) or not all(isinstance(c, str) for c in capabilities):
            raise ConfigError(source, None, f"{where} capabilities must be a list of strings")
        if "resolve" not in capabilities:
            continue  # pull-only mirrors serve blobs by digest, never tags
        endpoints.append(_endpoint(url, options, base, source, where, mirror=True))
    server = document.get("server", upstream)
    if not isinstance(server, str):
        raise ConfigError(source, None, "server must be a URL string")
    endpoints.append(_endpoint(server, document, base, source, "server", mirror=False))
    return tuple(endpoints)


def _endpoint(
    url: str, options: dict[str, object], base: Path, source: str, where: str, *, mirror: bool
) -> Endpoint:
    """One endpoint, its values checked: they come from a file anyone with node access edits."""
    normalized = _url(url)
    try:
        parsed = urlsplit(normalized)
        valid = parsed.scheme in ("http", "https") and bool(parsed.netloc) and not parsed.query
        _ = parsed.port  # raises on a port that is not a number
    except ValueError:
        valid = False
    if not valid:
        raise ConfigError(source, None, f"{where}: {url!r} is not an http(s) URL")
    skip_verify = options.get("skip_verify", False)
    if not isinstance(skip_verify, bool):
        raise ConfigError(source, None, f"{where} skip_verify must be true or false")
    ca = options.get("ca", [])
    cas = [ca] if isinstance(ca, str) else ca
    if not isinstance(cas, list) or not all(isinstance(c, str) for c in cas):
        raise ConfigError(source, None, f"{where} ca must be a path or a list of paths")
    return Endpoint(normalized, tuple(str(base / c) for c in cas), skip_verify, mirror)


class HostsDirectory:
    """containerd's `config_path`: `<dir>/<host>/hosts.toml`, re-read when a file changes."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._cache: dict[Path, tuple[files.Signature, tuple[Endpoint, ...]]] = {}

    def _candidates(self, domain: str) -> list[Path]:
        assert self.path is not None
        names = [domain]
        host, sep, port = domain.partition(":")
        if sep:
            names.insert(0, f"{host}_{port}_")
        return [self.path / n / "hosts.toml" for n in (*names, "_default")]

    def endpoints(self, domain: str, upstream: str) -> tuple[Endpoint, ...] | None:
        if self.path is None:
            return None
        for file in self._candidates(domain):
            signature = files.signature(file)
            if signature is None:
                continue
            cached = self._cache.get(file)
            if cached is None or cached[0] != signature:
                try:
                    text = files.read_text(file)
                except files.UnreadableFile as exc:
                    raise ConfigError(str(file), None, f"cannot read: {exc}") from exc
                cached = (signature, parse_hosts_toml(text, str(file), upstream))
                self._cache[file] = cached
            return cached[1]
        return None


def upstream_url(domain: str, settings: RegistrySettings) -> str:
    host = DOCKER_HUB_API_HOST if domain == DOCKER_HUB else domain
    return f"{'http' if settings.insecure else 'https'}://{host}"


def endpoints_for(
    domain: str, settings: RegistrySettings, hosts: HostsDirectory
) -> tuple[Endpoint, ...]:
    """The config's `registries.<domain>` wins over hosts.toml where it says something."""
    upstream = upstream_url(domain, settings)
    endpoints = hosts.endpoints(domain, upstream) or (Endpoint(upstream),)
    mirrors: Sequence[Endpoint] = [e for e in endpoints if e.mirror]
    server = endpoints[-1]
    if settings.mirrors:
        mirrors = [Endpoint(_url(m), mirror=True) for m in settings.mirrors]
    if settings.insecure:
        server = Endpoint(upstream.replace("https://", "http://"), server.ca, server.skip_verify)
    if settings.ca:
        server = Endpoint(server.url, (settings.ca,), server.skip_verify)
    return (*mirrors, server)


def resolver(
    settings: Callable[[str], RegistrySettings], hosts: HostsDirectory
) -> Callable[[Reference], tuple[Endpoint, ...]]:
    """What the registry client asks for each reference: its endpoints, in order."""
    return lambda ref: endpoints_for(ref.domain, settings(ref.domain), hosts)
