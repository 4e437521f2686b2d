"""Outputs that appear all together or not at all: no partial signature files, ever."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from signer.errors import ConfigError


@dataclass
class StagedFiles:
    """Temporary files beside their final names; renamed only when the whole batch succeeded."""

    staged: list[tuple[Path, Path]] = field(default_factory=list)

    def write(self, target: Path, data: bytes) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".tmp", dir=target.parent
        )
        temp = Path(temp_name)
        self.staged.append((temp, target))
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())

    def commit(self) -> None:
        done: list[Path] = []
        try:
            for temp, target in self.staged:
                os.replace(temp, target)
                done.append(target)
        except OSError:
            for target in done:  # all or nothing, even when a rename fails half way
                target.unlink(missing_ok=True)
            raise
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
    except OSError as exc:
        raise ConfigError(
            f"{exc.filename or 'output'}: cannot write ({exc.strerror}); nothing was written"
        ) from None
    finally:
        staged.discard()
