"""Watch the build: no tracked source may be written, renamed, deleted or re-created while it runs.

The tree proof compares bytes after the build, so a file swapped during the build and restored
afterwards (SUNSPOT: swap `main.c`, compile, put the original bytes and mtime back) passes it.
inotify sees the writes themselves, whatever the file looks like at the end.

Choices, stated plainly:
- The watch starts before the build is launched and every directory of the work tree (except
  `.git/`) is watched; directories created or moved in during the build are watched as they
  appear and scanned, so files made in them before their watch existed are still seen.
- `--outputs` (gitignore-style patterns) is the only allow-list for new untracked paths. Git's
  ignore rules are not consulted: ignored paths are exactly where an injected generated source
  or vendored dependency would hide, and `.git/info/exclude` or a global excludes file are not
  part of the signed commit. A tracked path is protected even when it matches `--outputs`.
- Every tracked regular file also gets a watch on its inode: a directory watch does not see a
  write made through a hard link that lives elsewhere (SUNSPOT through another path), the
  inode watch does, and it sees `link()`/`unlink()` of another name as IN_ATTRIB. A tracked
  file that already has more than one link is refused before the build runs (exit 1).
- Submodule files count as tracked (at the commit their gitlink records); the parent
  directories of the work tree are watched for being moved or removed.
- The watch lasts until the final tree proof is done, so a change while it hashes is seen.
- An overflowed event queue is a failure: events were lost, so nothing can be proven. Running
  out of watches (`fs.inotify.max_user_watches`) before the build is a usage error (exit 2).
- Out of reach of inotify: a path created and removed inside a new directory before its watch
  was added (the directory itself is still reported), a mount placed over a tracked directory
  and removed again (it needs CAP_SYS_ADMIN; the watched inodes are never touched), writes
  through a shared memory mapping, and processes the build leaves behind that act after the
  final tree proof.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from inotify_simple import INotify, flags  # type: ignore[import-untyped]

from integrity.artifacts import gitignore_spec
from integrity.errors import InputError
from integrity.gitobjects import git
from integrity.repository import open_repository, resolve_commit
from integrity.tree import TreeReport, display_path, prove_tree, tracked_paths

WATCH_MASK = (
    flags.MODIFY
    | flags.CLOSE_WRITE
    | flags.ATTRIB
    | flags.MOVED_FROM
    | flags.MOVED_TO
    | flags.CREATE
    | flags.DELETE
    | flags.DELETE_SELF
    | flags.MOVE_SELF
    | flags.ONLYDIR
    | flags.DONT_FOLLOW
)
#: On each tracked file's inode: writes and link-count changes through any name.
FILE_MASK = (
    flags.MODIFY
    | flags.CLOSE_WRITE
    | flags.ATTRIB
    | flags.DELETE_SELF
    | flags.MOVE_SELF
    | flags.DONT_FOLLOW
)
#: On each parent directory of the work tree: only its own move or removal.
ANCESTOR_MASK = flags.MOVE_SELF | flags.DELETE_SELF | flags.ONLYDIR | flags.DONT_FOLLOW

#: Event flag -> the kind a violation reports, in the order they are looked at.
_KINDS: tuple[tuple[int, str], ...] = (
    (flags.CREATE, "create"),
    (flags.MOVED_TO, "moved-to"),
    (flags.MOVED_FROM, "moved-from"),
    (flags.DELETE, "delete"),
    (flags.MODIFY, "modify"),
    (flags.CLOSE_WRITE, "close-write"),
    (flags.ATTRIB, "attrib"),
    (flags.DELETE_SELF, "delete-self"),
    (flags.MOVE_SELF, "move-self"),
)
#: What counts against a directory that holds tracked files: its content changes are seen on
#: the files themselves, but removing, replacing or re-creating the directory is tampering.
_DIRECTORY_KINDS = frozenset({"create", "moved-to", "moved-from", "delete"})
_NEW_PATH_KINDS = frozenset({"create", "moved-to"})
OVERFLOW_DETAIL = "event queue overflowed; cannot prove nothing was touched"
_POLL_MS = 100
_DRAIN_ROUNDS = 1000


#: Violation kinds with a reason code of their own; every other kind (a write, create,
#: rename, delete, attribute change) is TAMPERED_CODE.
VIOLATION_CODES = {
    "hard-link": "hard-link",
    "overflow": "watch-overflow",
    "unwatched": "watch-incomplete",
    "object-replaced": "object-replaced",
}
TAMPERED_CODE = "tampered"


@dataclass(frozen=True)
class Violation:
    """One forbidden change seen during the build, stamped when it was detected (UTC)."""

    path: str
    kind: str
    time: str
    detail: str

    @property
    def code(self) -> str:
        return VIOLATION_CODES.get(self.kind, TAMPERED_CODE)

    def as_json(self) -> dict[str, str]:
        return {
            "path": self.path,
            "kind": self.kind,
            "code": self.code,
            "time": self.time,
            "detail": self.detail,
        }

    def line(self) -> str:
        return f"TAMPERED {display_path(self.path)}: {self.kind} at {self.time} ({self.detail})"


@dataclass(frozen=True)
class WatchReport:
    """The build's exit status, what the watch saw, and the tree proof made after the build."""

    build_exit: int
    violations: list[Violation]
    tree: TreeReport
    #: False when the build was refused before it started (a tracked file with hard links)
    build_ran: bool = True

    @property
    def tampered(self) -> bool:
        return bool(self.violations) or not self.tree.ok

    @property
    def ok(self) -> bool:
        return self.build_exit == 0 and not self.tampered

    @property
    def code(self) -> str | None:
        """The first reason it is not ok: a refused or failed build, a violation, the tree."""
        code: str | None = None
        if self.violations:
            code = self.violations[0].code
        elif not self.build_ran:
            code = "build-refused"
        elif not self.tree.ok:
            code = self.tree.code
        elif self.build_exit != 0:
            code = "build-failed"
        return code


def _watch_error(absolute: Path, exc: OSError) -> InputError:
    """A watch that cannot be added before the build: the limit (named, with the fix) or why."""
    if exc.errno == errno.ENOSPC:
        return InputError(
            f"cannot watch {absolute}: inotify watch limit reached",
            hint="raise fs.inotify.max_user_watches",
            code="inotify-limit",
        )
    return InputError(f"cannot watch {absolute}: {exc.strerror}", code="watch-failed")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Watcher:
    """Recursive inotify watches on a work tree and the judgement of each event."""

    def __init__(self, root: Path, tracked: Iterable[str], outputs: Sequence[str]) -> None:
        self.root = root
        self.tracked = frozenset(tracked)
        self.tracked_dirs = frozenset(
            path[:i] for path in self.tracked for i, c in enumerate(path) if c == "/"
        )
        self.outputs = gitignore_spec(outputs, field="outputs")
        self.inotify: Any = INotify()
        self.paths: dict[int, str] = {}  # watch descriptor -> directory, "" is the root
        self.files: dict[int, str] = {}  # watch descriptor -> tracked file (its inode)
        self.ancestors: dict[int, Path] = {}  # watch descriptor -> a parent of the work tree
        self.root_wd = -1
        self.found: dict[tuple[str, str], Violation] = {}

    # -- watches -------------------------------------------------------------------------

    def watch_tree(self, relative: str, *, scan: bool) -> None:
        """Watch `relative` and every directory below it; the watch is added before a
        directory is listed, so nothing created in it can slip between the two. With `scan`,
        every entry found is judged as created (it appeared during the build)."""
        stack = [relative]
        while stack:
            directory = stack.pop()
            absolute = self.root / directory if directory else self.root
            try:
                wd = self.inotify.add_watch(absolute, WATCH_MASK)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                    continue  # already gone again; its creation was judged
                if scan:  # during the build: what happens in there can no longer be proven
                    self._record(directory, "unwatched", f"cannot watch: {exc.strerror}")
                    continue
                raise _watch_error(absolute, exc) from None
            self.paths[wd] = directory
            if directory == "":
                self.root_wd = wd
            try:
                entries = list(os.scandir(absolute))
            except OSError:
                continue
            for entry in entries:
                path = f"{directory}/{entry.name}" if directory else entry.name
                if entry.name == ".git":
                    continue
                is_dir = entry.is_dir(follow_symlinks=False)
                if scan:
                    self.judge(path, "create", is_dir=is_dir)
                if is_dir:
                    stack.append(path)

    def _add(self, absolute: Path, mask: int) -> int:
        """One watch before the build; running out of watches is a usage error naming the fix."""
        try:
            return int(self.inotify.add_watch(absolute, mask))
        except OSError as exc:
            raise _watch_error(absolute, exc) from None

    def watch_files(self) -> None:
        """An inode watch on every tracked regular file, so writes through any link are seen."""
        for path in sorted(self.tracked):
            absolute = self.root / path
            try:
                info = absolute.lstat()
            except OSError:
                continue  # missing: the tree proof names it
            if stat.S_ISREG(info.st_mode):
                self.files[self._add(absolute, FILE_MASK)] = path

    def watch_ancestors(self) -> None:
        """The work tree's parents: moving one away and back swaps the tree a build sees by path."""
        for parent in self.root.parents:
            self.ancestors[self._add(parent, ANCESTOR_MASK)] = parent

    def hard_links(self) -> list[Violation]:
        """Tracked files with more than one name: a write through the other one is invisible to
        the directory watches, so they are refused before the build."""
        found: list[Violation] = []
        for path in sorted(self.files.values()):
            try:
                links = (self.root / path).lstat().st_nlink
            except OSError:
                continue
            if links > 1:
                found.append(
                    Violation(
                        path,
                        "hard-link",
                        _now(),
                        f"has {links} hard links; a write through another link would not be seen",
                    )
                )
        return found

    def _detach(self, relative: str) -> None:
        """A directory moved away: its watches stay on the inode, not on the old path, so
        forget their paths until (and unless) it is moved back in under a new name."""
        prefix = relative + "/"
        for wd, path in list(self.paths.items()):
            if path == relative or path.startswith(prefix):
                del self.paths[wd]

    # -- events --------------------------------------------------------------------------

    def handle(self, events: Iterable[Any]) -> None:
        for event in events:
            mask = int(event.mask)
            if mask & flags.Q_OVERFLOW:
                self._record(".", "overflow", OVERFLOW_DETAIL)
                continue
            if mask & flags.IGNORED:
                self.paths.pop(event.wd, None)
                self.files.pop(event.wd, None)
                continue
            if event.wd in self.files:
                self._file_event(self.files[event.wd], mask)
                continue
            if event.wd in self.ancestors:
                if mask & (flags.MOVE_SELF | flags.DELETE_SELF):
                    kind = "delete-self" if mask & flags.DELETE_SELF else "move-self"
                    self._record(
                        str(self.ancestors[event.wd]),
                        kind,
                        "a parent directory of the work tree was moved or removed during build",
                    )
                continue
            directory = self.paths.get(event.wd)
            if directory is None:
                continue  # a directory moved out of the work tree
            is_dir = bool(mask & flags.ISDIR)
            if not event.name:  # the watched directory itself
                if event.wd == self.root_wd and mask & (flags.DELETE_SELF | flags.MOVE_SELF):
                    kind = "delete-self" if mask & flags.DELETE_SELF else "move-self"
                    self._record(".", kind, "the work tree itself was removed or moved")
                continue  # other directories are judged through their parent's watch
            if event.name == ".git" and directory == "":
                continue
            path = f"{directory}/{event.name}" if directory else event.name
            for flag, kind in _KINDS:
                if mask & flag:
                    self.judge(path, kind, is_dir=is_dir)
            if is_dir and mask & flags.MOVED_FROM:
                self._detach(path)
            if is_dir and mask & (flags.CREATE | flags.MOVED_TO):
                self.watch_tree(path, scan=True)

    def _file_event(self, path: str, mask: int) -> None:
        """An event on a tracked file's inode, whichever name it came through."""
        for flag, kind in _KINDS:
            if mask & flag:
                self._record(path, kind, "tracked source changed during build (seen on its inode)")
        if mask & flags.ATTRIB:
            try:
                links = (self.root / path).lstat().st_nlink
            except OSError:
                return
            if links != 1:
                self._record(
                    path,
                    "hard-link",
                    f"link count became {links} during build; a write through another link "
                    "would not be seen by the directory watches",
                )

    def judge(self, path: str, kind: str, *, is_dir: bool) -> None:
        """Record the event if it touches a tracked path or makes an unexpected new one."""
        if path in self.tracked:
            self._record(path, kind, "tracked source path changed during build")
        elif path in self.tracked_dirs:
            if kind in _DIRECTORY_KINDS:
                self._record(path, kind, "directory of tracked sources changed during build")
        elif kind in _NEW_PATH_KINDS and not self._is_output(path, is_dir=is_dir):
            self._record(path, kind, "created untracked path during build")

    def _is_output(self, path: str, *, is_dir: bool) -> bool:
        if self.outputs.match_file(path):
            return True
        return is_dir and self.outputs.match_file(path + "/")

    def _record(self, path: str, kind: str, detail: str) -> None:
        """The first detection of each (path, kind) is kept: a rewrite is many MODIFYs."""
        self.found.setdefault((path, kind), Violation(path, kind, _now(), detail))

    # -- the loop ------------------------------------------------------------------------

    def run(self, stop: threading.Event, failure: list[BaseException]) -> None:
        """Read events until told the build is over, then drain what is still queued."""
        try:
            while not stop.is_set():
                self.handle(self.inotify.read(timeout=_POLL_MS))
            for _ in range(_DRAIN_ROUNDS):
                events = self.inotify.read(timeout=0)
                if not events:
                    break
                self.handle(events)
        except BaseException as exc:  # re-raised by the caller's thread
            failure.append(exc)

    def close(self) -> None:
        self.inotify.close()


def _work_tree(repo: Path, commit: str) -> tuple[Path, str, str]:
    """The top of the work tree, the commit id and its tree id, or a usage error."""
    root = open_repository(repo)
    oid = resolve_commit(root, commit)
    tree = git(root, "rev-parse", f"{oid}^{{tree}}").decode().strip()
    return root, oid, tree


def _exit_status(returncode: int) -> int:
    """A build killed by signal N exits 128+N, as a shell reports it."""
    return 128 - returncode if returncode < 0 else returncode


def watch_build(
    repo: Path,
    command: Sequence[str],
    *,
    outputs: Sequence[str] = (),
    commit: str = "HEAD",
    stdout: IO[Any] | int | None = None,
    submodules: str = "prove",
) -> WatchReport:
    """Run `command` in `repo` under an inotify watch of the work tree, then prove the tree.

    `commit` is resolved to its id once, before the build, so a build that moves HEAD or a
    branch cannot change what the tree is compared with. `stdout` redirects the build's
    standard output (the CLI sends it to stderr when stdout carries JSON). A tracked file with
    more than one hard link is refused before the build: it is not run, the report says why.
    """
    if not command:
        raise InputError("no build command given", code="no-build-command", field="build")
    root, oid, expected_tree = _work_tree(repo, commit)
    watcher = _Watcher(root, tracked_paths(root, oid, submodules=submodules == "prove"), outputs)
    returncode = 0
    ran = False
    try:
        watcher.watch_tree("", scan=False)
        watcher.watch_files()
        watcher.watch_ancestors()
        refused = watcher.hard_links()  # after the inode watches: a later link() is an event
        stop = threading.Event()
        failure: list[BaseException] = []
        reader = threading.Thread(
            target=watcher.run, args=(stop, failure), name="sealgate-watch", daemon=True
        )
        reader.start()
        try:
            if not refused:
                returncode = _run_build(repo, command, stdout)
                ran = True
            # still watched: a change while the tree is hashed is seen
            tree = prove_tree(root, oid, allow_untracked=outputs, submodules=submodules)
        finally:
            stop.set()
            reader.join()
        if failure:
            raise failure[0]
    finally:
        watcher.close()
    violations = refused + [v for v in watcher.found.values()]
    if tree.expected_tree != expected_tree:
        violations.append(
            Violation(
                ".git",
                "object-replaced",
                _now(),
                f"commit {oid[:12]} resolved to tree {tree.expected_tree[:12]} after the build, "
                f"{expected_tree[:12]} before",
            )
        )
    return WatchReport(_exit_status(returncode), violations, tree, build_ran=ran)


def _run_build(repo: Path, command: Sequence[str], stdout: IO[Any] | int | None) -> int:
    try:
        build = subprocess.Popen(list(command), cwd=repo, stdout=stdout)  # noqa: S603 - the user's build
    except FileNotFoundError:
        raise InputError(
            f"build command not found: {command[0]}", code="build-command-not-found", field="build"
        ) from None
    except PermissionError:
        raise InputError(
            f"build command not executable: {command[0]}",
            code="build-command-not-executable",
            field="build",
        ) from None
    try:
        return build.wait()
    finally:
        if build.poll() is None:
            build.terminate()
            build.wait()
