from __future__ import annotations

import re

import pytest

from agent.core.errors import InvalidPlatform
from agent.core.images.platform import Platform, best_match, can_run, normalize, parse


@pytest.mark.parametrize(
    ("arch", "variant", "expected"),
    [
        ("x86_64", "", "linux/amd64"),
        ("amd64", "v1", "linux/amd64"),
        ("amd64", "v3", "linux/amd64/v3"),
        ("aarch64", "", "linux/arm64"),
        ("arm64", "v8", "linux/arm64"),
        ("armv7l", "", "linux/arm/v7"),
        ("armhf", "", "linux/arm/v7"),
        ("arm", "", "linux/arm/v7"),
        ("arm", "6", "linux/arm/v6"),
        ("armv6l", "", "linux/arm/v6"),
        ("armel", "", "linux/arm/v6"),
        ("i686", "", "linux/386"),
        ("ppc64le", "", "linux/ppc64le"),
        ("s390x", "", "linux/s390x"),
        ("riscv64", "", "linux/riscv64"),
    ],
)
def test_normalize_like_containerd(arch: str, variant: str, expected: str) -> None:
    assert str(normalize("linux", arch, variant)) == expected


def test_parse_accepts_os_arch_variant() -> None:
    assert parse("linux/arm64/v8") == Platform("linux", "arm64")
    assert parse("Linux/ARM/v7") == Platform("linux", "arm", "v7")


@pytest.mark.parametrize("text", ["linux", "linux/", "linux/arm/v7/x", "linux/a b", ""])
def test_parse_rejects_malformed_platforms(text: str) -> None:
    with pytest.raises(InvalidPlatform, match="os/architecture"):
        parse(text)


def test_arm64_node_prefers_arm64_then_falls_back_to_32_bit_arm() -> None:
    node = parse("linux/arm64")
    index = [
        (parse("linux/arm/v6"), "v6"),
        (parse("linux/arm/v7"), "v7"),
        (parse("linux/amd64"), "x"),
    ]
    assert best_match(node, index) == "v7"
    assert best_match(node, [*index, (parse("linux/arm64/v8"), "arm64")]) == "arm64"


def test_first_listed_wins_among_equal_matches() -> None:
    node = parse("linux/amd64")
    index = [(parse("linux/amd64"), "first"), (parse("linux/amd64"), "second")]
    assert best_match(node, index) == "first"


@pytest.mark.parametrize(
    ("node", "image", "runs"),
    [
        ("linux/amd64", "linux/amd64", True),
        ("linux/amd64", "linux/arm64", False),
        ("linux/amd64", "linux/386", False),
        ("linux/amd64", "windows/amd64", False),
        ("linux/amd64", "linux/amd64/v3", False),
        ("linux/amd64/v3", "linux/amd64/v2", True),
        ("linux/amd64/v3", "linux/amd64", True),
        ("linux/arm64", "linux/arm/v5", True),
        ("linux/arm/v7", "linux/arm/v6", True),
        ("linux/arm/v6", "linux/arm/v7", False),
        ("linux/arm/v7", "linux/arm64", False),
    ],
)
def test_can_run(node: str, image: str, runs: bool) -> None:
    assert can_run(parse(node), parse(image)) is runs


def test_no_match_is_none() -> None:
    assert best_match(parse("linux/s390x"), [(parse("linux/amd64"), 1)]) is None


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("linux/amd65", "did you mean 'amd64'"),
        ("linx/arm64", "did you mean 'linux'"),
        ("linux/arm/v9", "unknown arm variant 'v9'"),
        ("linux/amd64/v9", "known: v2, v3, v4"),
    ],
)
def test_a_platform_nobody_builds_for_is_an_error_not_a_silent_skip(text: str, hint: str) -> None:
    with pytest.raises(InvalidPlatform, match=re.escape(hint)):
        parse(text)
