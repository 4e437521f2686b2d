"""Streaming artifact digests: constant memory for any size, no Python work per byte.

The hot loop reads into one reusable buffer and hands it to OpenSSL's hash through
hashlib, which releases the GIL, so several artifacts hash in parallel on all cores.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from signer.errors import ConfigError
from signer.files import file_kind, path_error

CHUNK = 1 << 20  # 1 MiB: large enough that per-read overhead vanishes, small enough for caches

ProgressCallback = Callable[[int], None]


@dataclass(frozen=True)
class ArtifactDigest:
    path: Path
    hash_name: str
    digest: bytes
    size: int


def check_artifact(path: Path, *, action: str = "sign") -> int:
    """The artifact's size; a clear error (exit 2) for what cannot be signed or verified
    (missing, a directory, not a regular file, unreadable): no signature can fix those."""
    try:
        info = path.stat()
    except FileNotFoundError:
        dangling = os.path.islink(path)
        raise ConfigError(
            f"{path}: no such artifact"
            + (" (a symbolic link to a missing file)" if dangling else ""),
            code="artifact-missing",
            field="artifacts",
        ) from None
    except OSError as exc:
        raise path_error(path, exc, "use the artifact path", field="artifacts") from None
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError(
            f"{path}: is a directory, not a file ({action} the files inside it)",
            code="not-a-file",
            field="artifacts",
        )
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(
            f"{path}: is {file_kind(info.st_mode)}, not a regular file",
            code="not-a-file",
            field="artifacts",
        )
    if not os.access(path, os.R_OK):
        raise ConfigError(
            f"{path}: cannot read artifact (Permission denied)",
            code="path-error",
            field="artifacts",
        )
    return info.st_size


def digest_file(
    path: Path, hash_name: str, progress: ProgressCallback | None = None
) -> ArtifactDigest:
    """Hash a file in fixed-size chunks; `progress` is told how many bytes each chunk added.

    The one way signer hashes a file: artifacts, and anything else whose digest is signed."""
    check_artifact(path)
    hasher = hashlib.new(hash_name)
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    total = 0
    try:
        # O_NONBLOCK: a FIFO swapped in after check_artifact must not block the open
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ConfigError(
                f"{path}: is not a regular file", code="not-a-file", field="artifacts"
            )
        with open(fd, "rb", buffering=0) as stream:
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(stream.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
            while n := stream.readinto(buffer):
                hasher.update(view[:n])
                total += n
                if progress is not None:
                    progress(n)
    except OSError as exc:
        raise path_error(path, exc, "read artifact", field="artifacts") from None
    return ArtifactDigest(path, hash_name, hasher.digest(), total)
