"""Open the repository, resolve a commit, parse a range: one set of rules for every check.

`commits`, `tree`, `watch`, `rebuild` and the pipeline all start here, so a path the OS
refuses, a repository that redirects its work tree or rewrites history with grafts, a
revision that looks like an option and a malformed range are refused the same way everywhere.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from integrity.errors import InputError
from integrity.gitobjects import SHALLOW_MESSAGE, refuse_grafts, run_git, work_tree

#: Longer than any ref name or revision expression a gate needs; more would only reach git's
#: argument limit (an OS error) or fill the report.
MAX_REVISION = 1024
_SHALLOW_HINT = "fetch the full history: git fetch --unshallow (actions/checkout: fetch-depth: 0)"


def open_repository(path: Path, *, need_work_tree: bool = True, field: str = "repo") -> Path:
    """The top of the work tree of the repository at `path` (with `need_work_tree=False`, a
    bare repository is accepted and `path` itself returned); grafts and a redirected work
    tree are refused. InputError: `path-error` (with the OS's reason), `not-a-repository`."""

    def path_error(reason: str) -> InputError:
        return InputError(f"the repository {path}: {reason}", code="path-error", field=field)

    try:
        info = os.stat(path)
        if not stat.S_ISDIR(info.st_mode):
            raise path_error("not a directory")
        with os.scandir(path):
            pass  # EACCES on listing shows here, not as a git message
    except OSError as exc:
        raise path_error(exc.strerror or str(exc)) from None
    except ValueError:  # an embedded NUL byte
        raise path_error("not a valid path (NUL byte)") from None
    probe = run_git(path, "rev-parse", "--is-bare-repository", "--is-inside-git-dir")
    answers = probe.stdout.decode(errors="replace").split()
    if probe.returncode != 0 or len(answers) != 2:
        raise InputError(
            f"the repository {path}: not a git repository", code="not-a-repository", field=field
        )
    bare, in_git_dir = (answer == "true" for answer in answers)
    if need_work_tree and (bare or in_git_dir):
        where = "a bare repository" if bare else "inside the .git directory"
        raise InputError(
            f"the repository {path}: {where}, with no work tree to prove",
            code="not-a-repository",
            field=field,
        )
    bare = bare or in_git_dir
    root = path if bare else (work_tree(path) if need_work_tree else _top(path))
    refuse_grafts(root)
    return root


def _top(path: Path) -> Path:
    """The work tree top for reading objects only; core.worktree cannot change which objects."""
    result = run_git(path, "rev-parse", "--show-toplevel")
    top = result.stdout.decode(errors="surrogateescape").strip()
    return Path(top) if result.returncode == 0 and top else path


def resolve_commit(
    root: Path, rev: str, *, field: str = "commit", code: str = "commit-unresolved"
) -> str:
    """The full id of the commit `rev` names. InputError: `bad-revision` (empty, an option,
    control characters), `shallow-clone` (a shallow clone may lack it), else `code`."""
    if not rev or rev.startswith("-") or not rev.isprintable() or len(rev) > MAX_REVISION:
        shown = rev if len(rev) <= MAX_REVISION else rev[:60] + f"... ({len(rev)} characters)"
        raise InputError(f"{shown!r} is not a revision", code="bad-revision", field=field)
    result = run_git(
        root, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}"
    )
    if result.returncode == 0:
        return result.stdout.decode().strip()
    shallow = run_git(root, "rev-parse", "--is-shallow-repository").stdout.strip() == b"true"
    if shallow:
        raise InputError(
            f"{rev!r} does not resolve in {root}, a shallow clone that may lack it: "
            f"{SHALLOW_MESSAGE}",
            hint=_SHALLOW_HINT,
            code="shallow-clone",
            field=field,
        )
    raise InputError(f"{rev!r} does not resolve to a commit in {root}", code=code, field=field)


def parse_range(text: str, *, field: str = "range") -> tuple[str, str]:
    """(BASE, HEAD) of `BASE..HEAD`: two non-empty revisions, not `...` (a symmetric
    difference would verify the base's side too), neither an option. InputError `bad-range`."""
    base, sep, head = text.partition("..")
    if (
        not sep
        or not base
        or not head
        or head.startswith(".")
        or base.startswith("-")
        or head.startswith("-")
        or not text.isprintable()
        or any(char.isspace() for char in text)
    ):
        raise InputError(f"range {text!r}: use BASE..HEAD", code="bad-range", field=field)
    return base, head
