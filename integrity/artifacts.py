"""The one artifact glob matcher: `run --artifacts` and `rebuild --artifacts` select the same files.

Globs are gitignore-style (pathspec), relative to the root; only regular files count (a symlink
could point anywhere, a FIFO would block), nothing under a `.git` directory or file is ever an
artifact, and the walk never follows a symlinked directory out of the root.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import pathspec

from integrity.errors import InputError

FIELD = "artifacts"


def match_artifacts(
    root: Path, globs: Sequence[str], *, exclude_suffixes: Sequence[str] = ()
) -> list[Path]:
    """The files under `root` each glob selects, sorted per glob, de-duplicated in glob order.

    InputError (`bad-glob`) for a glob that is empty, absolute, climbs out with `..` or can
    select nothing by construction; (`artifact-glob-empty`) for a glob that matches no file.
    """
    if not globs:
        raise InputError(
            "at least one artifact glob is required", code="artifact-glob-empty", field=FIELD
        )
    selected = select_artifacts(root, globs, exclude_suffixes=exclude_suffixes)
    found: dict[Path, None] = {}
    for glob, hits in zip(globs, selected, strict=True):
        if not hits:
            raise InputError(
                f"artifact glob {glob!r} matches no file in {root}",
                code="artifact-glob-empty",
                field=FIELD,
            )
        found.update(dict.fromkeys(hits))
    return list(found)


def select_artifacts(
    root: Path, globs: Sequence[str], *, exclude_suffixes: Sequence[str] = ()
) -> list[list[Path]]:
    """Per glob, the sorted files it selects under `root` (possibly none): the rebuild side."""
    specs = [_spec(glob) for glob in globs]
    files = _regular_files(root, tuple(exclude_suffixes))
    return [[root / rel for rel in files if spec.match_file(rel)] for spec in specs]


def _spec(glob: str) -> pathspec.PathSpec[pathspec.Pattern]:
    def bad(reason: str) -> InputError:
        return InputError(f"artifact glob {glob!r}: {reason}", code="bad-glob", field=FIELD)

    if not glob.strip():
        raise bad("empty")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in glob):
        raise bad("contains a control character")
    pure = PurePosixPath(glob)
    if pure.is_absolute():
        raise bad("must be relative to the repository root, not absolute")
    if ".." in pure.parts:
        raise bad("must not leave the repository ('..')")
    if glob.startswith(("!", "#")):
        raise bad("a negation or comment selects no file")
    return gitignore_spec([glob], field=FIELD)


def gitignore_spec(patterns: Sequence[str], *, field: str) -> pathspec.PathSpec[pathspec.Pattern]:
    """The gitignore-style spec of `patterns`; one pathspec cannot compile (a trailing
    backslash) is InputError `bad-glob` naming it, never a library exception."""
    for pattern in patterns:
        try:
            pathspec.PathSpec.from_lines("gitignore", [pattern])
        except (ValueError, re.error) as exc:  # GitIgnorePatternError, a regex it cannot build
            raise InputError(
                f"glob {pattern!r}: not a valid gitignore-style pattern ({exc})",
                code="bad-glob",
                field=field,
            ) from None
    return pathspec.PathSpec.from_lines("gitignore", patterns)


def _regular_files(root: Path, exclude_suffixes: tuple[str, ...]) -> list[str]:
    """Sorted POSIX paths, relative to `root`, of its regular files (no symlinks, no `.git`)."""
    try:
        if not stat.S_ISDIR(os.stat(root).st_mode):
            raise InputError(f"{root}: not a directory", code="path-error", field="repo")
    except OSError as exc:
        raise InputError(f"{root}: {exc.strerror}", code="path-error", field="repo") from None

    def refuse(exc: OSError) -> None:
        raise InputError(
            f"{exc.filename}: cannot list ({exc.strerror})", code="path-error", field=FIELD
        )

    found: list[str] = []
    for top, dirs, names in os.walk(root, onerror=refuse, followlinks=False):
        dirs[:] = [d for d in dirs if d != ".git"]
        base = Path(top)
        for name in names:
            if name == ".git" or (exclude_suffixes and name.endswith(exclude_suffixes)):
                continue
            path = base / name
            try:
                mode = os.lstat(path).st_mode
            except OSError as exc:
                raise InputError(
                    f"{path}: cannot stat ({exc.strerror})", code="path-error", field=FIELD
                ) from None
            if stat.S_ISREG(mode):
                found.append(path.relative_to(root).as_posix())
    return sorted(found)
