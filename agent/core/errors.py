"""The exception tree; the CLI maps each branch to an exit code in one place.

AgentError                      anything the agent reports to a user
├── InputError                  exit 2: the user must fix what they gave us
│   ├── ConfigError             a preload list: file, line, message
│   ├── InvalidReference        an image reference that does not parse
│   └── InvalidPlatform         a platform string that does not parse
├── RegistryError               a registry refused or failed: registry, repository, status
│   └── TransientRegistryError  5xx, 429, connection faults: retried before it surfaces
├── RegistryTimeout             a registry lookup abandoned at its deadline
├── RuntimeUnavailable          the CRI endpoint does not answer: the endpoint
├── ImageError                  one image cannot be preloaded (platform, pull): the reference
│   └── TagBindingUnsupported   the runtime cannot point a tag at pinned content (not containerd)
├── KubeApiError                the Kubernetes API could not be asked, or refused: its status
│   ├── Conflict                a guarded write lost a race (409, a failed JSON patch test)
│   └── MalformedNode           the API server sent a Node of the wrong shape
├── Malformed                   a list from the API server or an agent's /status, misshapen
├── CredentialPluginFailed      a kubeconfig's exec plugin gave no credential
└── DaemonUnreachable           `status` could not read a daemon's /status
"""

from __future__ import annotations

from collections.abc import Sequence


class AgentError(Exception):
    """Base of every error the agent reports to a user without a traceback."""


class InputError(AgentError):
    """Bad input: exit code 2, nothing was changed on the node."""


class ConfigError(InputError):
    """A problem of a preload list at `file`:`line`; `problems` is every one found in the file
    (this one first), each said on its own line."""

    def __init__(
        self, file: str, line: int | None, message: str, *, more: Sequence[ConfigError] = ()
    ) -> None:
        self.file = file
        self.line = line
        self.message = message
        self.problems: tuple[ConfigError, ...] = (self, *more)
        where = f"{file}:{line}" if line is not None else file
        self.said = f"{where}: {message}"
        """This problem alone, where it is and what it is."""
        super().__init__("\n".join(p.said for p in self.problems))

    @classmethod
    def of(cls, problems: Sequence[ConfigError]) -> ConfigError:
        """One error for all of `problems`, in line order."""
        first, *more = sorted(problems, key=lambda p: p.line or 0)
        return cls(first.file, first.line, first.message, more=more)


class InvalidReference(InputError):
    def __init__(self, reference: str, reason: str) -> None:
        self.reference = reference
        self.reason = reason
        super().__init__(f"invalid image reference {reference!r}: {reason}")


class InvalidPlatform(InputError):
    def __init__(self, platform: str, reason: str) -> None:
        self.platform = platform
        super().__init__(f"invalid platform {platform!r}: {reason}")


class RegistryError(AgentError):
    def __init__(
        self,
        registry: str,
        repository: str,
        message: str,
        *,
        status: int | None = None,
        credentials_sent: bool = False,
    ) -> None:
        self.registry = registry
        self.repository = repository
        self.status = status
        self.credentials_sent = credentials_sent
        code = f"HTTP {status}: " if status is not None else ""
        super().__init__(f"registry {registry}, repository {repository}: {code}{message}")


class TransientRegistryError(RegistryError):
    """Worth retrying; `retry_after` is the registry's own hint in seconds, if it gave one."""

    def __init__(
        self,
        registry: str,
        repository: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(registry, repository, message, status=status)
        self.retry_after = retry_after


class RegistryTimeout(AgentError):
    """A registry lookup for one image did not finish by its deadline and was abandoned."""


class RuntimeUnavailable(AgentError):
    def __init__(self, endpoint: str, detail: str) -> None:
        self.endpoint = endpoint
        super().__init__(f"container runtime at {endpoint} is unavailable: {detail}")


class ImageError(AgentError):
    """One image cannot be preloaded on this node; the others go on."""

    def __init__(self, reference: str, message: str, *, permanent: bool = False) -> None:
        self.reference = reference
        self.reason = message
        self.permanent = permanent
        """Retrying will not help (not found, access denied, unsupported): an operator must."""
        super().__init__(f"{reference}: {message}")


class TagBindingUnsupported(ImageError):
    """The runtime has no containerd Images API (CRI-O, for one): tags cannot be bound."""

    def __init__(self, reference: str, message: str) -> None:
        super().__init__(reference, message, permanent=True)


class KubeApiError(AgentError):
    """The Kubernetes API could not be asked, or refused; `status` is its HTTP status, if any."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Conflict(KubeApiError):
    """The node changed under a guarded write (409, or a JSON patch `test` that failed: 422):
    the gate reads it again."""


class MalformedNode(KubeApiError):
    """The API server sent a Node the gate cannot read (a wrong shape where it looks)."""


class Malformed(AgentError):
    """An answer not shaped as it must be: a list from the API server, an agent's /status
    (the fleet view reads both)."""


class CredentialPluginFailed(AgentError):
    """A kubeconfig's exec plugin ran and gave no credential (exit code, timeout, output)."""


class DaemonUnreachable(AgentError):
    """`status` could not read the daemon's /status (nothing listening, not JSON)."""
