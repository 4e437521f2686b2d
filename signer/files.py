"""Data files read as a hostile attacker might shape them: a regular file, and no more than a cap.

A FIFO, a device or `/dev/zero` passed as a signature, certificate or key must fail at once,
not hang or fill memory; `O_NONBLOCK` makes opening a FIFO return instead of waiting.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from signer.errors import ConfigError

MIB = 1 << 20
#: A `.p7s` holds a signature, a few certificates and tokens: a few hundred KB at most.
SIGNATURE_LIMIT = 4 * MIB
CERTIFICATE_LIMIT = 4 * MIB  # a CA bundle
CRL_LIMIT = 64 * MIB
ENVELOPE_LIMIT = 16 * MIB
KEY_LIMIT = 1 * MIB

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def path_error(
    path: Path | str, exc: OSError, doing: str, *, field: str | None = None
) -> ConfigError:
    """An OS error on a path as users need it: the path, what we were doing, the OS's reason
    (ENAMETOOLONG, ENOTDIR, EACCES, ELOOP ...), never a traceback."""
    reason = exc.strerror or type(exc).__name__
    return ConfigError(f"{path}: cannot {doing} ({reason})", code="path-error", field=field)


def read_capped(path: Path, *, what: str, limit: int, field: str | None = None) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; anything else is a ConfigError
    that names `what` and the path."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(
            f"{what} {path}: no such file", code="file-missing", field=field
        ) from None
    except OSError as exc:
        raise path_error(f"{what} {path}", exc, "open it", field=field) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(
                f"{what} {path}: {file_kind(info.st_mode)}, not a regular file",
                code="not-a-file",
                field=field,
            )
        if info.st_size > limit:
            raise ConfigError(
                f"{what} {path}: {info.st_size} bytes, more than the {limit} allowed",
                code="file-too-large",
                field=field,
            )
        with os.fdopen(os.dup(fd), "rb") as stream:
            data = stream.read(limit + 1)
    except OSError as exc:
        raise path_error(f"{what} {path}", exc, "read it", field=field) from None
    finally:
        os.close(fd)
    if len(data) > limit:  # it grew while we read
        raise ConfigError(
            f"{what} {path}: more than the {limit} bytes allowed",
            code="file-too-large",
            field=field,
        )
    return data
