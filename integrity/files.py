"""Data files (policies, key files, envelopes) read as hostile: a regular file under a size cap.

The integrity checks may not import `signer`, so they keep this small reader of their own; it
raises InputError (exit 2) naming the file, and never blocks on a FIFO.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import IO

from integrity.errors import InputError

MIB = 1 << 20
POLICY_LIMIT = 1 * MIB
KEY_FILE_LIMIT = 1 * MIB
_CHUNK = 1 << 20


def read_regular(path: Path, *, what: str, limit: int) -> bytes:
    """The bytes of `path` if it is a regular file of at most `limit` bytes, else InputError."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise InputError(
            f"{what} {path}: cannot open ({exc.strerror})", code="path-error"
        ) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise InputError(
                f"{what} {path}: not a regular file (mode {stat.filemode(mode)})",
                code="not-a-file",
            )
        with os.fdopen(os.dup(fd), "rb") as stream:
            data = stream.read(limit + 1)
    except OSError as exc:
        raise InputError(
            f"{what} {path}: cannot read ({exc.strerror})", code="path-error"
        ) from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise InputError(
            f"{what} {path}: larger than the {limit} bytes allowed", code="file-too-large"
        )
    return data


def sha256_stream(stream: IO[bytes]) -> str:
    """Hex sha256 of a stream read to its end in chunks (a file, an archive member)."""
    digest = hashlib.sha256()
    while chunk := stream.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes: the one file hash of the integrity checks (git blob ids
    are hashed by the tree proof, with git's header)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise InputError(
            f"{path}: cannot open ({exc.strerror})", code="path-error", field="artifacts"
        ) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):  # swapped for a FIFO or device since it was listed
            raise InputError(
                f"{path}: not a regular file (mode {stat.filemode(mode)})",
                code="not-a-file",
                field="artifacts",
            )
        with os.fdopen(os.dup(fd), "rb") as stream:
            return sha256_stream(stream)
    except OSError as exc:
        raise InputError(
            f"{path}: cannot read ({exc.strerror})", code="path-error", field="artifacts"
        ) from None
    finally:
        os.close(fd)
