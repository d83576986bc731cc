"""Image references: parse, normalize like containerd (docker.io/library/…), format. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from agent.core.errors import InvalidReference

DOCKER_HUB = "docker.io"
# The Docker Hub registry API is not served on the name people write (containerd
# remotes/docker/config/hosts.go maps docker.io to registry-1.docker.io).
DOCKER_HUB_API_HOST = "registry-1.docker.io"
_DOCKER_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}

# Grammar facts from distribution/reference: lower-case path components joined by
# "/", each made of alphanumerics separated by ".", "_", "__" or runs of "-".
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN = re.compile(
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"(?::[0-9]+)?"
)
# ASCII only, as the grammar says: Python's \w would also take "vü١".
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_HEX = re.compile(r"[0-9a-f]+")
_DIGEST_HEX = {"sha256": 64, "sha512": 128}
_MAX_NAME = 255
# The form a lock writes, `host[:port]/path:tag@sha256:hex` (tag and digest optional), in one
# match: a list of thousands of entries is parsed on every start and reload. The host must
# hold a '.' or ':' to be one (Docker's rule); anything else takes the step-by-step path.
_COMPONENT = _PATH_COMPONENT.pattern
_WELL_FORMED = re.compile(
    rf"(?P<domain>(?=[^/]*[.:]){_DOMAIN.pattern})"
    rf"/(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG.pattern}))?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?"
)


@dataclass(frozen=True, order=True, init=False)
class Reference:
    """A normalized image reference: `domain/path[:tag][@digest]`."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None
    name: str = field(init=False, repr=False, compare=False)
    """The repository with its registry, as containerd records it. It, the other names below
    and the hash are computed once: a pass over thousands of images asks for them many times."""
    _tagged: str | None = field(init=False, repr=False, compare=False)
    _by_digest: str | None = field(init=False, repr=False, compare=False)
    _hash: int = field(init=False, repr=False, compare=False)

    def __init__(
        self, domain: str, path: str, tag: str | None = None, digest: str | None = None
    ) -> None:
        # Written straight into the instance: a frozen dataclass's own __init__ sets each
        # field through object.__setattr__, 5x slower, and lists parse thousands of these.
        name = f"{domain}/{path}"
        vars(self).update(
            domain=domain,
            path=path,
            tag=tag,
            digest=digest,
            name=name,
            _tagged=None if tag is None else f"{name}:{tag}",
            _by_digest=None if digest is None else f"{name}@{digest}",
            _hash=hash((domain, path, tag, digest)),
        )

    def __hash__(self) -> int:
        return self._hash

    @property
    def api_host(self) -> str:
        """The host that serves the registry API for this reference."""
        return DOCKER_HUB_API_HOST if self.domain == DOCKER_HUB else self.domain

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text

    @property
    def tagged(self) -> str:
        """`name:tag`, the string an IfNotPresent pod asks the runtime about."""
        if self._tagged is None:
            raise ValueError(f"{self} has no tag")
        return self._tagged

    def by_digest(self, digest: str | None = None) -> str:
        """`name@digest`, the form containerd records for a pull."""
        if digest:
            return f"{self.name}@{digest}"
        if self._by_digest is None:
            raise ValueError(f"{self} has no digest")
        return self._by_digest

    def pinned(self, digest: str) -> Reference:
        return Reference(self.domain, self.path, self.tag, digest)


def validate_digest(digest: str) -> str:
    """Return `digest` if it is `algorithm:hex` of a known algorithm, else raise ValueError."""
    algorithm, sep, hex_part = digest.partition(":")
    if not sep or algorithm not in _DIGEST_HEX:
        raise ValueError(f"digest {digest!r} must be sha256:<64 hex> (or sha512:<128 hex>)")
    if len(hex_part) != _DIGEST_HEX[algorithm] or not _HEX.fullmatch(hex_part):
        raise ValueError(
            f"digest {digest!r} must have {_DIGEST_HEX[algorithm]} lower-case hex characters"
        )
    return digest


def parse(text: str) -> Reference:
    """Parse and normalize `text`; raise InvalidReference naming what is wrong."""
    match = _WELL_FORMED.fullmatch(text)
    if match is not None:
        domain, path, tag, digest = match.groups()
        if domain not in _DOCKER_HUB_ALIASES and len(domain) + 1 + len(path) <= _MAX_NAME:
            return Reference(domain, path, tag if tag or digest else "latest", digest)
    return _parse_step_by_step(text)


def _parse_step_by_step(text: str) -> Reference:
    if not text or text != text.strip():
        raise InvalidReference(text, "empty or surrounded by whitespace")
    remainder, _, digest = text.partition("@")
    if "@" in text and not digest:
        raise InvalidReference(text, "'@' must be followed by a digest")
    if digest:
        try:
            validate_digest(digest)
        except ValueError as exc:
            raise InvalidReference(text, str(exc)) from exc

    tag = None
    last_slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > last_slash:
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise InvalidReference(
                text, f"tag {tag!r} must be 1-128 ASCII letters, digits, '_', '.', '-'"
            )

    domain, path = _split_domain(text, remainder)
    for component in path.split("/"):
        if not _PATH_COMPONENT.fullmatch(component):
            hint = " (repository names are lower-case)" if component.lower() != component else ""
            raise InvalidReference(text, f"invalid repository component {component!r}{hint}")
    if len(f"{domain}/{path}") > _MAX_NAME:
        raise InvalidReference(text, f"repository name longer than {_MAX_NAME} characters")
    if tag is None and not digest:
        # What kubelet and containerd do with a bare name.
        tag = "latest"
    return Reference(domain, path, tag, digest or None)


def _split_domain(text: str, name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    # Docker's rule: the first component is a registry host only if it looks like one.
    if sep and (any(c in first for c in ".:") or first == "localhost" or first != first.lower()):
        if not _DOMAIN.fullmatch(first):
            raise InvalidReference(text, f"invalid registry host {first!r}")
        domain, path = first, rest
    else:
        domain, path = DOCKER_HUB, name
    if domain in _DOCKER_HUB_ALIASES:
        domain = DOCKER_HUB
    if not path:
        raise InvalidReference(text, "missing repository name")
    if domain == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    return domain, path
