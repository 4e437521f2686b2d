"""Outputs that appear all together or not at all: no partial signature files, ever.

Each file gets the mode a plain `open()` would give it (as `cp` or `openssl` do): a new file
0o666 less the caller's umask, a rewritten file its old mode; never the temp file's 0600.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from signer.errors import ConfigError
from signer.files import path_error


def current_umask() -> int:
    """The process umask, read without changing it (os.umask(0) would leave every other
    thread creating world-writable files for an instant)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)  # the fallback errs towards private for its instant
    os.umask(mask)
    return mask


def ensure_directory(directory: Path, *, create: bool = True, field: str | None = None) -> None:
    """Create `directory` if it is missing, but only its last level: a missing parent is a
    mistyped path far more often than a wish for a new tree. `create=False` only checks."""
    try:
        info = directory.stat()
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise path_error(directory, exc, "use it as the output directory", field=field) from None
    if info is not None:
        if not stat.S_ISDIR(info.st_mode):
            raise ConfigError(
                f"{directory}: not a directory, so no output can be written into it",
                code="path-error",
                field=field,
            )
        return
    parent = directory.parent
    if not parent.is_dir():
        raise ConfigError(
            f"{directory}: cannot create the output directory: its parent {parent} "
            + ("is not a directory" if parent.exists() else "does not exist"),
            hint="create the parent first; only the last level is created",
            code="path-error",
            field=field,
        )
    if not create:
        return
    try:
        directory.mkdir(exist_ok=True)
    except OSError as exc:
        raise path_error(directory, exc, "create the output directory", field=field) from None


@dataclass
class StagedFiles:
    """Temporary files beside their final names; renamed only when the whole batch succeeded."""

    staged: list[tuple[Path, Path]] = field(default_factory=list)
    umask: int = field(default_factory=current_umask)
    #: Targets that existed before: a failed batch must not delete what was there.
    existing: set[Path] = field(default_factory=set)

    def _mode_for(self, target: Path) -> int:
        """A regular file keeps its permission bits (not setuid/setgid/sticky); anything else,
        a symlink included (its target's mode is not ours to copy), is new: 0o666 & ~umask."""
        try:
            info = target.lstat()
        except OSError:
            return 0o666 & ~self.umask
        if stat.S_ISREG(info.st_mode):
            return stat.S_IMODE(info.st_mode) & 0o777
        return 0o666 & ~self.umask

    def write(self, target: Path, data: bytes) -> None:
        try:
            parent_ready = target.parent.is_dir()
        except OSError:
            parent_ready = False  # ensure_directory names the path and the OS's reason
        if not parent_ready:
            ensure_directory(target.parent)  # the last level only, as for the output directory
        try:
            # a short prefix: the temp name must fit where the final name (barely) fits
            fd, temp_name = tempfile.mkstemp(
                prefix=f".{target.name[:32]}.", suffix=".tmp", dir=target.parent
            )
        except OSError as exc:
            raise path_error(target, exc, "write it") from None
        temp = Path(temp_name)
        self.staged.append((temp, target))
        if target.exists():
            self.existing.add(target)
        try:
            with os.fdopen(fd, "wb") as stream:
                os.fchmod(stream.fileno(), self._mode_for(target))
                stream.write(data)
                stream.flush()
                os.fsync(stream.fileno())
        except OSError as exc:
            raise path_error(target, exc, "write it") from None

    def commit(self) -> None:
        done: list[Path] = []
        for temp, target in self.staged:
            try:
                os.replace(temp, target)
            except OSError as exc:
                for written in done:  # all or nothing, even when a rename fails half way
                    if written not in self.existing:  # a rewritten file keeps its new bytes
                        written.unlink(missing_ok=True)
                raise path_error(target, exc, "write it") from None
            done.append(target)
        self.staged.clear()

    def discard(self) -> None:
        for temp, _ in self.staged:
            temp.unlink(missing_ok=True)
        self.staged.clear()


def write_all(outputs: Iterable[tuple[Path, bytes]]) -> None:
    """Write every (path, data) so that all appear together, or none does."""
    staged = StagedFiles()
    try:
        for target, data in outputs:
            staged.write(target, data)
        staged.commit()
    except ConfigError as exc:
        raise ConfigError(
            f"{exc.message}; nothing was written", code=exc.code, field=exc.field
        ) from None
    except OSError as exc:  # a safety net: every OS error above is already a path error
        raise path_error(exc.filename or "output", exc, "write it; nothing was written") from None
    finally:
        staged.discard()
