"""Reading files that come from outside (ConfigMaps, Secrets, hosts.toml) without trusting them:
regular files only, never blocking on a FIFO, never reading more than a limit."""

from __future__ import annotations

import os
import stat
from pathlib import Path

Signature = tuple[str, int, int, int]
"""What says a file changed: where its path resolves, its inode, mtime and size."""

# A 3000-entry preload list is ~300 kB; a pull secret a few kB.
MAX_FILE_BYTES = 8 * 1024 * 1024


class UnreadableFile(OSError):
    """The file cannot be used; the message says why without its content."""


def size_text(count: int) -> str:
    """`8 MiB`, `64 KiB`, `100 bytes`: a limit as a person reads it."""
    for unit, shift in (("MiB", 20), ("KiB", 10)):
        if count >= 1 << shift:
            value = count / (1 << shift)
            return f"{value:g} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{count} bytes"


def read_text(path: str | Path, limit: int = MAX_FILE_BYTES) -> str:
    """The UTF-8 text of the regular file `path`, at most `limit` bytes, else UnreadableFile."""
    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise UnreadableFile(exc.strerror or str(exc)) from exc
    except ValueError:  # a NUL byte in the path: no file has that name
        raise UnreadableFile("the path holds a NUL byte") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnreadableFile("not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(limit + 1)
    except UnreadableFile:
        raise
    except OSError as exc:
        raise UnreadableFile(exc.strerror or str(exc)) from exc
    finally:
        os.close(fd)
    if len(data) > limit:
        raise UnreadableFile(f"larger than {size_text(limit)}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UnreadableFile("not UTF-8 text") from None  # the cause would quote the file's bytes


def signature(path: str | Path) -> Signature | None:
    """The one "has this file changed?" check (the config, pull secrets, hosts.toml): None if it
    is absent. The resolved path and inode catch kubelet's ConfigMap and Secret updates, which
    swap a `..data` symlink to a new directory and may keep the file's mtime."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (os.path.realpath(path), st.st_ino, st.st_mtime_ns, st.st_size)
