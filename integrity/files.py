"""Data files (policies, key files, envelopes) read as hostile: a regular file under a size cap.

The integrity checks may not import `signer`, so they keep this small reader of their own; it
raises InputError (exit 2) naming the file, and never blocks on a FIFO.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

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
        raise InputError(f"{what} {path}: cannot open ({exc.strerror})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise InputError(f"{what} {path}: not a regular file (mode {stat.filemode(mode)})")
        with os.fdopen(os.dup(fd), "rb") as stream:
            data = stream.read(limit + 1)
    except OSError as exc:
        raise InputError(f"{what} {path}: cannot read ({exc.strerror})") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise InputError(f"{what} {path}: larger than the {limit} bytes allowed")
    return data


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks: the one file hash of the integrity checks."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as stream:
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise InputError(
            f"{path}: cannot read ({exc.strerror})", code="path-error", field="artifacts"
        ) from None
    return digest.hexdigest()
