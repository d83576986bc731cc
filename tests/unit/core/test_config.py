from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.core.errors import ConfigError
from agent.core.images.platform import Platform
from agent.core.lists.config import load, parse, parse_duration
from agent.preload.lock import render_lock

DIGEST = "sha256:" + "b" * 64
OTHER = "sha256:" + "c" * 64

EXAMPLE = f"""\
images:
  - nginx:1.25.3                                  # follows the tag
  - ghcr.io/acme/api:2.4.1@{DIGEST}
  - quay.io/acme/worker@{DIGEST}
  - image: registry.example.com/tools/debug:3
    platforms: [linux/amd64]
registries:
  registry.example.com:
    insecure: true
concurrency: 3
resync: 5m
"""


def test_the_documented_example_parses() -> None:
    config = parse(EXAMPLE, "preload.yaml")
    assert [e.kind for e in config.images] == ["tag", "pinned", "digest", "tag"]
    assert [e.line for e in config.images] == [2, 3, 4, 5]
    assert str(config.images[0].reference) == "docker.io/library/nginx:1.25.3"
    assert config.images[3].platforms == (Platform("linux", "amd64"),)
    assert config.registry("registry.example.com").insecure
    assert not config.registry("ghcr.io").insecure
    assert config.concurrency == 3 and config.resync_seconds == 300


def test_defaults() -> None:
    config = parse("images: [nginx]\n")
    assert config.concurrency == 8 and config.resync_seconds == 300
    assert config.images[0].kind == "tag" and config.images[0].has_tag


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("images:\n  - nginx\n\t- redis\n", 3, "invalid YAML"),
        ("images:\n  - nginx\n  - redis\n  x: 1\n", 4, "invalid YAML"),
        ("images: [nginx\n", 2, "invalid YAML"),
        (
            "images:\n  - nginx\nconcurency: 3\n",
            3,
            "unknown key 'concurency' in the preload list (did you mean 'concurrency'?)",
        ),
        (
            "images:\n  - image: nginx\n    platfroms: [linux/amd64]\n",
            3,
            "did you mean 'platforms'?",
        ),
        ("images:\n  - nginx\n  - NGINX/Foo\n", 3, "invalid image reference 'NGINX/Foo'"),
        (f"images:\n  - nginx@{DIGEST[:-1]}\n", 2, "64"),
        ("images:\n  - image: nginx\n    platforms: [linux]\n", 3, "invalid platform 'linux'"),
        ("images:\n  - image: nginx\n    platforms: []\n", 3, "non-empty list"),
        (
            "images:\n  - nginx\n  - docker.io/library/nginx:latest\n",
            3,
            "listed twice (first at line 2)",
        ),
        (f"images:\n  - nginx:1\n  - nginx:1@{DIGEST}\n", 3, "binds tag docker.io/library/nginx:1"),
        ("images:\n  - nginx\nconcurrency: 0\n", 3, "from 1 to 64"),
        ("images:\n  - nginx\nconcurrency: yes\n", 3, "from 1 to 64"),
        ("images:\n  - nginx\nresync: soon\n", 3, "'resync' must be a duration"),
        ("images:\n  - image: nginx\n    extra: 1\n", 3, "unknown key 'extra'"),
        ("images:\n  - platforms: [linux/amd64]\n", 2, "needs 'image: <reference>'"),
        ("images:\n  - [nginx]\n", 2, "an image must be a single value"),
        ("images: nginx\n", 1, "'images' must be a list"),
        ("concurrency: 2\n", 1, "missing 'images:'"),
        ("- nginx\n", 1, "must be a mapping"),
        ("images: []\nregistries:\n  r.io:\n    insecure: maybe\n", 4, "true or false"),
        ("images: []\nimages: []\n", 2, "duplicate key 'images'"),
    ],
)
def test_errors_name_file_line_and_what_is_wrong(text: str, line: int, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(text, "preload.yaml")
    assert str(info.value).startswith(f"preload.yaml:{line}: "), str(info.value)
    assert message in str(info.value)


def test_empty_file_is_rejected() -> None:
    with pytest.raises(ConfigError, match="empty"):
        parse("", "preload.yaml")


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("5m", 300), ("90s", 90), ("1h30m", 5400), ("1.5h", 5400), (30, 30), ("500ms", 0.5)],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "5", "5 m", "m", "1d", True, None])
def test_bad_durations(value: object) -> None:
    assert parse_duration(value) is None


def test_lock_pins_tags_keeps_pins_and_parses_back() -> None:
    config = parse(EXAMPLE, "preload.yaml")
    tags = [e for e in config.images if e.reference.digest is None]
    digests = {tags[0]: OTHER, tags[1]: DIGEST}

    locked = parse(render_lock(config, digests), "preload.lock.yaml")

    assert [e.written for e in locked.images] == [
        f"nginx:1.25.3@{OTHER}",
        f"ghcr.io/acme/api:2.4.1@{DIGEST}",
        f"quay.io/acme/worker@{DIGEST}",
        f"registry.example.com/tools/debug:3@{DIGEST}",
    ]
    assert locked.images[3].platforms == config.images[3].platforms
    assert locked.registries == config.registries
    assert (locked.concurrency, locked.resync_seconds) == (3, 300)


def test_lock_of_a_bare_name_keeps_the_latest_tag() -> None:
    config = parse("images: [nginx]\n")
    locked = parse(render_lock(config, {config.images[0]: OTHER}))
    assert locked.images[0].written == f"nginx:latest@{OTHER}"
    assert locked.images[0].kind == "pinned"


_name = st.from_regex(
    r"(?:ghcr\.io/|127\.0\.0\.1:5000/)?[a-z0-9]{1,6}(?:/[a-z0-9]{1,6})?", fullmatch=True
)
_tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}", fullmatch=True)
_digest = st.from_regex(r"[0-9a-f]{64}", fullmatch=True).map(lambda h: f"sha256:{h}")


@given(
    st.lists(st.tuples(_name, st.none() | _tag, st.none() | _digest), min_size=1, max_size=6),
    _digest,
)
def test_any_valid_list_locks_into_a_valid_fully_pinned_list(
    items: list[tuple[str, str | None, str | None]], resolved: str
) -> None:
    names: dict[str, tuple[str | None, str | None]] = {}
    for name, tag, digest in items:
        names.setdefault(name, (tag, digest))  # one entry per repository avoids tag conflicts
    lines = [
        f"  - {name}{f':{tag}' if tag else ''}{f'@{digest}' if digest else ''}"
        for name, (tag, digest) in names.items()
    ]
    config = parse("images:\n" + "\n".join(lines) + "\n")
    digests = {e: resolved for e in config.images if e.reference.digest is None}

    locked = parse(render_lock(config, digests))

    assert len(locked.images) == len(config.images)
    for before, after in zip(config.images, locked.images, strict=True):
        assert after.reference.digest == (before.reference.digest or resolved)
        assert after.reference.name == before.reference.name
        assert after.reference.tag == before.reference.tag, "a tag was lost or invented"


def test_images_are_read_as_written_not_as_yaml_numbers() -> None:
    config = parse("images:\n  - 0\n  - image: 1.25\n")
    assert [str(e.reference) for e in config.images] == [
        "docker.io/library/0:latest",
        "docker.io/library/1.25:latest",
    ]
