"""Reading files that come from outside: regular files only, bounded, never blocking."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.adapters.runtime.rpc import is_transient_pull
from agent.core import files


def test_a_regular_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("images: [nginx]\n")
    assert files.read_text(path) == "images: [nginx]\n"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: os.mkfifo(p), "not a regular file"),  # would block forever on open
        (lambda p: p.mkdir(), "not a regular file"),
        (lambda p: p.write_bytes(b"\xff\xfe"), "not UTF-8"),
        (lambda p: p.write_bytes(b"x" * 2049), "larger than"),
        (lambda p: None, "No such file"),
    ],
)
def test_what_cannot_be_a_list_is_refused_with_a_reason(tmp_path: Path, make, reason: str) -> None:
    path = tmp_path / "thing"
    make(path)
    with pytest.raises(files.UnreadableFile, match=reason):
        files.read_text(path, limit=2048)


def test_a_device_that_never_ends_is_refused() -> None:
    with pytest.raises(files.UnreadableFile, match="not a regular file"):
        files.read_text("/dev/zero")


@pytest.mark.parametrize(
    ("message", "transient"),
    [
        (
            "failed to copy: httpReadSeeker: failed open: unexpected status code "
            "http://r:5000/v2/a/blobs/sha256:1: 500 Internal Server Error",
            True,
        ),
        (
            "unexpected status from HEAD request to https://r/v2/a/manifests/1: "
            "503 Service Unavailable",
            True,
        ),
        (
            "unexpected status from GET request to https://r/v2/a/manifests/1: "
            "429 Too Many Requests",
            True,
        ),
        (
            # containerd 1.6 resolving a tag (remotes/docker/resolver.go): its own wording.
            'failed to resolve reference "r:5000/a:1": pulling from host r:5000 failed with '
            "status code [manifests 1]: 500 Internal Server Error",
            True,
        ),
        (
            'failed to resolve reference "r:5000/a:1": pulling from host r:5000 failed with '
            "status code [manifests 1]: 403 Forbidden",
            False,
        ),
        ("content at http://r:5000/v2/a/manifests/sha256:1 not found: not found", False),
        (
            "unexpected status from GET request to http://r:5000/v2/a/manifests/1: "
            "401 Unauthorized",
            False,
        ),
        ('failed to resolve reference "r:5000/a:1": r:5000/a:1: not found', False),
    ],
)
def test_registry_answers_in_containerds_pull_errors(message: str, transient: bool) -> None:
    import grpc

    error = grpc.aio.AioRpcError(
        grpc.StatusCode.UNKNOWN, grpc.aio.Metadata(), grpc.aio.Metadata(), message
    )
    assert is_transient_pull(error) is transient


def test_a_limit_is_said_as_a_person_reads_it(tmp_path: Path) -> None:
    from agent.core.files import size_text

    assert [size_text(n) for n in (64 * 1024, 8 << 20, 1536, 100)] == [
        "64 KiB", "8 MiB", "1.5 KiB", "100 bytes"
    ]  # fmt: skip
    big = tmp_path / "token"
    big.write_bytes(b"x" * (64 * 1024 + 1))
    with pytest.raises(files.UnreadableFile, match="larger than 64 KiB"):
        files.read_text(big, 64 * 1024)


def test_a_path_with_a_nul_byte_is_unreadable_not_a_crash() -> None:
    with pytest.raises(files.UnreadableFile, match="NUL"):
        files.read_text("/etc/\x00passwd")
