"""Node platforms: uname detection and containerd-compatible matching. Pure but for detect()."""

from __future__ import annotations

import difflib
import platform as _host
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from agent.core.errors import InvalidPlatform

T = TypeVar("T")

# uname machine → (GOARCH, variant), as containerd's platforms package normalizes them.
_MACHINES: dict[str, tuple[str, str]] = {
    "x86_64": ("amd64", ""),
    "x86-64": ("amd64", ""),
    "amd64": ("amd64", ""),
    "aarch64": ("arm64", ""),
    "arm64": ("arm64", ""),
    "armv8l": ("arm", "v8"),
    "armv7l": ("arm", "v7"),
    "armhf": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "armel": ("arm", "v6"),
    "armv5tel": ("arm", "v5"),
    "i386": ("386", ""),
    "i686": ("386", ""),
    "386": ("386", ""),
    "ppc64le": ("ppc64le", ""),
    "s390x": ("s390x", ""),
    "riscv64": ("riscv64", ""),
}
_WORD = re.compile(r"[a-z0-9_]+")


@dataclass(frozen=True, order=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        parts = [self.os, self.architecture] + ([self.variant] if self.variant else [])
        return "/".join(parts)


def normalize(os: str, architecture: str, variant: str = "") -> Platform:
    """Normalize spellings the way containerd does (aarch64 → arm64, arm64/v8 ≡ arm64, …)."""
    os = os.lower()
    architecture, variant = architecture.lower(), variant.lower()
    if architecture in _MACHINES:
        arch, implied = _MACHINES[architecture]
        # An explicit variant wins over one implied by the machine name.
        architecture, variant = arch, variant or implied
    arm64_v8 = architecture == "arm64" and variant in ("v8", "8")
    if arm64_v8 or (architecture == "amd64" and variant == "v1"):
        variant = ""
    elif architecture == "arm" and variant in ("", "7"):
        variant = "v7"
    elif architecture == "arm" and variant in ("5", "6", "8"):
        variant = f"v{variant}"
    return Platform(os, architecture, variant)


# GOOS and GOARCH values images are built for (go tool dist list; the OCI image-index spec
# defers to them), and the variants containerd knows. Anything else is a typo that would
# otherwise skip the image everywhere in silence.
KNOWN_OS = (
    "linux",
    "windows",
    "darwin",
    "freebsd",
    "netbsd",
    "openbsd",
    "dragonfly",
    "solaris",
    "illumos",
    "aix",
    "plan9",
    "android",
    "ios",
    "js",
    "wasip1",
)
KNOWN_ARCHITECTURES = (
    "amd64",
    "arm64",
    "arm",
    "386",
    "ppc64le",
    "ppc64",
    "s390x",
    "riscv64",
    "mips64le",
    "mips64",
    "mipsle",
    "mips",
    "loong64",
    "wasm",
)
KNOWN_VARIANTS = {
    "arm": ("v5", "v6", "v7", "v8"),
    "arm64": ("", "v8", "v8.0", "v8.1", "v8.2", "v8.3", "v8.4", "v8.5", "v9", "v9.0"),
    "amd64": ("", "v2", "v3", "v4"),
}


def parse(text: str) -> Platform:
    """Parse `os/arch[/variant]`, e.g. `linux/arm64` or `linux/arm/v7`; unknown values are
    errors with a suggestion."""
    parts = text.strip().split("/")
    if not 2 <= len(parts) <= 3 or not all(_WORD.fullmatch(p.lower()) for p in parts):
        raise InvalidPlatform(text, "expected os/architecture[/variant], e.g. linux/arm64")
    platform = normalize(*parts)
    _known(text, platform.os, KNOWN_OS, "operating system")
    _known(text, platform.architecture, KNOWN_ARCHITECTURES, "architecture")
    if platform.architecture in KNOWN_VARIANTS:
        variants = KNOWN_VARIANTS[platform.architecture]
        _known(text, platform.variant, variants, f"{platform.architecture} variant")
    return platform


def _known(text: str, value: str, known: Sequence[str], what: str) -> None:
    if value in known:
        return
    close = difflib.get_close_matches(value, known, n=1)
    listed = ", ".join(k for k in known if k)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known: {listed}"
    raise InvalidPlatform(text, f"unknown {what} {value!r}{hint}")


def detect() -> Platform:
    """This machine's platform, from uname, like containerd's DefaultSpec."""
    machine = _host.machine()
    if machine not in _MACHINES:
        raise InvalidPlatform(machine, "unknown machine type; pass --platform os/arch[/variant]")
    return normalize(_host.system(), machine)


def _preference(node: Platform) -> list[Platform]:
    """What `node` can run, best first (containerd's platforms.Only)."""
    order = [node]
    if node.architecture == "arm64":
        # An arm64 node runs 32-bit arm images, best variant first.
        order += [Platform(node.os, "arm", f"v{v}") for v in (8, 7, 6, 5)]
    elif node.architecture == "arm" and node.variant[1:].isdigit():
        order += [
            Platform(node.os, "arm", f"v{v}") for v in range(int(node.variant[1:]) - 1, 4, -1)
        ]
    elif node.architecture == "amd64" and node.variant[1:].isdigit():
        # v1 is normalized to no variant.
        order += [
            Platform(node.os, "amd64", f"v{v}") for v in range(int(node.variant[1:]) - 1, 1, -1)
        ]
        order.append(Platform(node.os, "amd64", ""))
    return order


def can_run(node: Platform, image: Platform) -> bool:
    return normalize(image.os, image.architecture, image.variant) in _preference(node)


def best_match(node: Platform, candidates: Iterable[tuple[Platform, T]]) -> T | None:
    """The candidate `node` prefers; ties go to the first listed, as in an index."""
    ranking = {p: rank for rank, p in enumerate(_preference(node))}
    best: tuple[int, int, T] | None = None
    for position, (platform, item) in enumerate(candidates):
        rank = ranking.get(normalize(platform.os, platform.architecture, platform.variant))
        if rank is not None and (best is None or (rank, position) < best[:2]):
            best = (rank, position, item)
    return None if best is None else best[2]


def describe(platforms: Sequence[Platform]) -> str:
    return ", ".join(str(p) for p in platforms) or "none"
