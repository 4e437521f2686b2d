"""The tree proof: the working tree's bytes, modes and symlinks must equal the signed commit's tree.

Everything is recomputed from the files themselves; git's index and stat cache are never
consulted (an index can be told to ignore a change: `update-index --assume-unchanged`).
Everything in the work tree counts: untracked files, files the commit's `.gitignore` ignores
(present before the build, a build can read or run them: a stale `__pycache__/*.pyc`) and
FIFOs, sockets and devices are all differences unless declared with `allow_untracked`.
Submodules are proven by their contents against the commit their gitlink records, read (and
re-hashed) from the submodule's object store, never by asking the submodule what it is.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pathspec

from integrity.artifacts import gitignore_spec
from integrity.errors import InputError
from integrity.gitobjects import git
from integrity.repository import open_repository, resolve_commit

CHUNK = 1 << 20
_FILE, _EXEC, _LINK, _DIR, _GITLINK = "100644", "100755", "120000", "40000", "160000"
SUBMODULE_MODES = ("prove", "refuse")
#: Deeper than this, submodules inside submodules are refused rather than followed.
MAX_SUBMODULE_DEPTH = 16
_INVALID_PARTS = frozenset({"", ".", ".."})
_HEX = frozenset("0123456789abcdef")
_SPECIAL = (
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
)


def display_path(path: str) -> str:
    """A path as one safe line: control characters, quotes and undecodable bytes are escaped
    and the whole is quoted (as git quotes), so a file name cannot forge or hide a report line."""
    if path.isprintable() and '"' not in path and "\\" not in path:
        return path
    out: list[str] = []
    for char in path:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, kept by surrogateescape
            out.append(f"\\x{code - 0xDC00:02x}")
        elif char in '"\\':
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif not char.isprintable():
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


#: The reason code of each kind of difference (docs/reason-codes.md); a report that differs
#: at all is `tree-mismatch`.
DIFFERENCE_CODES = {
    "modified": "tree-modified",
    "added": "tree-added",
    "deleted": "tree-deleted",
    "mode": "tree-mode",
    "type": "tree-type",
    "submodule": "tree-submodule",
    "invalid": "tree-invalid-path",
}


@dataclass(frozen=True)
class TreeDifference:
    path: str
    kind: str  # "modified" | "added" | "deleted" | "mode" | "type" | "submodule" | "invalid"
    detail: str

    @property
    def code(self) -> str:
        return DIFFERENCE_CODES[self.kind]

    def line(self) -> str:
        return f"{self.kind} {display_path(self.path)}: {self.detail}"

    def as_json(self) -> dict[str, str]:
        return {"path": self.path, "kind": self.kind, "code": self.code, "detail": self.detail}


@dataclass(frozen=True)
class TreeReport:
    commit: str
    expected_tree: str
    actual_tree: str
    differences: tuple[TreeDifference, ...]
    files: int = 0
    bytes_hashed: int = 0

    @property
    def ok(self) -> bool:
        return not self.differences and self.expected_tree == self.actual_tree

    @property
    def code(self) -> str | None:
        code = "tree-mismatch"
        return None if self.ok else code


@dataclass(frozen=True)
class _Entry:
    mode: str
    oid: str


@dataclass
class _Found:
    mode: str
    oid: str
    size: int = 0


@dataclass
class _Dir:
    children: dict[str, _Dir | tuple[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Store:
    """Where git objects are read: the work tree's own repository, or a submodule's `.git`."""

    cwd: Path
    git_dir: Path | None = None

    def git(self, *args: str, input_bytes: bytes | None = None) -> bytes:
        prefix = (f"--git-dir={self.git_dir}",) if self.git_dir is not None else ()
        return git(self.cwd, *prefix, *args, input_bytes=input_bytes)


@dataclass
class _Result:
    expected_tree: str
    actual_tree: str
    differences: list[TreeDifference]
    files: int
    bytes_hashed: int

    @property
    def ok(self) -> bool:
        return not self.differences and self.expected_tree == self.actual_tree


_SMALL = 1 << 20


def _blob_id(
    hash_name: str, header_size: int, chunks: Sequence[bytes] | None, path: Path | None
) -> tuple[str, int]:
    """Git's blob id of `chunks`, or of the file at `path`, streamed in 1 MiB pieces."""
    hasher = hashlib.new(hash_name, b"blob %d\0" % header_size)
    if chunks is not None:
        for chunk in chunks:
            hasher.update(chunk)
        return hasher.hexdigest(), header_size
    assert path is not None  # noqa: S101 - one of the two is always given
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped for a FIFO or device since lstat
            raise OSError(f"{path} is no longer a regular file")
        if header_size < _SMALL:  # most sources: one read, no buffer juggling
            data = os.read(fd, header_size + 1)
            total = len(data)
            hasher.update(data)
        else:
            total = 0
            buffer = bytearray(CHUNK)
            view = memoryview(buffer)
            with open(fd, "rb", buffering=0, closefd=False) as stream:
                while n := stream.readinto(buffer):
                    hasher.update(view[:n])
                    total += n
    finally:
        os.close(fd)
    if total != header_size:
        raise OSError(f"{path} changed size while it was hashed")
    return hasher.hexdigest(), total


def _entries(store: _Store, tree: str) -> dict[str, _Entry]:
    """Every path below `tree`, from one NUL-separated `git ls-tree -r -z`."""
    out = store.git("ls-tree", "-r", "-z", "--full-tree", tree)
    entries: dict[str, _Entry] = {}
    for record in out.split(b"\0"):
        if not record:
            continue
        meta, _, name = record.partition(b"\t")
        mode, _kind, oid = meta.decode().split()
        entries[name.decode("utf-8", "surrogateescape")] = _Entry(mode, oid)
    return entries


def tracked_entries(repo: Path, commit: str) -> dict[str, _Entry]:
    """Every path of the commit's tree, from one `git ls-tree -r -z`."""
    return _entries(_Store(repo), commit)


def tracked_paths(repo: Path, commit: str = "HEAD", *, submodules: bool = False) -> list[str]:
    """The commit's paths; with `submodules`, also the paths of every checked-out submodule at
    the commit its gitlink records (`sub/inner/file`), read from the submodule's object store."""
    entries = tracked_entries(repo, commit)
    paths = set(entries)
    if submodules and entries:
        hash_name = "sha256" if len(next(iter(entries.values())).oid) == 64 else "sha1"
        paths |= _submodule_paths(repo, _Store(repo), entries, hash_name, "", 0)
    return sorted(paths)


def _submodule_paths(
    root: Path, store: _Store, entries: dict[str, _Entry], hash_name: str, prefix: str, depth: int
) -> set[str]:
    paths: set[str] = set()
    for path, entry in entries.items():
        if entry.mode != _GITLINK or depth >= MAX_SUBMODULE_DEPTH or not _valid(path):
            continue
        located = _submodule_tree(root, store, path, entry.oid, hash_name)
        if isinstance(located, str):
            continue  # not proven: the tree proof reports it
        sub_store, tree = located
        try:
            inner = _entries(sub_store, tree)
        except InputError:
            continue  # its tree is missing: the tree proof reports it
        paths |= {f"{prefix}{path}/{p}" for p in inner}
        paths |= _submodule_paths(
            root / path, sub_store, inner, hash_name, f"{prefix}{path}/", depth + 1
        )
    return paths


def _valid(path: str) -> bool:
    """A path git could check out: no empty, `.` or `..` part and no `.git` part anywhere."""
    return not any(part in _INVALID_PARTS or part.lower() == ".git" for part in path.split("/"))


def _read_blobs(store: _Store, oids: Iterable[str]) -> dict[str, bytes]:
    """Several blobs through one `git cat-file --batch`."""
    wanted = sorted(set(oids))
    if not wanted:
        return {}
    out = store.git("cat-file", "--batch", input_bytes="".join(o + "\n" for o in wanted).encode())
    blobs: dict[str, bytes] = {}
    position = 0
    while position < len(out):
        end = out.index(b"\n", position)
        header = out[position:end].split()
        position = end + 1
        if len(header) != 3:
            continue  # "<oid> missing"
        size = int(header[2])
        blobs[header[0].decode()] = out[position : position + size]
        position += size + 1
    return blobs


def _walk(
    root: Path, skip_dir: Callable[[str], bool], gitlinks: frozenset[str]
) -> dict[str, os.stat_result]:
    """Every entry of the work tree but directories (lstat, symlinks never followed), the top
    `.git` excluded. Submodule directories and any other `.git` are listed, not entered; a
    directory `skip_dir` names (declared, holding nothing tracked) is not entered."""
    found: dict[str, os.stat_result] = {}
    stack = [("", root)]
    while stack:
        prefix, directory = stack.pop()
        try:
            listing = list(os.scandir(directory))
        except OSError as exc:  # unreadable, or too deep a path: nothing below can be proven
            raise InputError(
                f"{display_path(prefix or '.')}: cannot list ({exc.strerror})", code="path-error"
            ) from None
        for entry in listing:
            if entry.name == ".git" and prefix == "":
                continue
            relative = f"{prefix}{entry.name}"
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # gone since the listing: a tracked path is then reported missing
            if stat.S_ISDIR(info.st_mode):
                if relative in gitlinks or entry.name == ".git":
                    found[relative] = info
                elif not skip_dir(relative + "/"):
                    stack.append((relative + "/", Path(entry.path)))
            else:
                found[relative] = info
    return found


class _IgnoreRules:
    """`.gitignore` files of the commit itself, applied directory by directory; they only
    explain a difference ("ignored by .gitignore"), they never hide one."""

    def __init__(self, store: _Store, entries: dict[str, _Entry]) -> None:
        self.specs: list[tuple[str, pathspec.GitIgnoreSpec]] = []
        files = {
            path: entry.oid
            for path, entry in entries.items()
            if path == ".gitignore" or path.endswith("/.gitignore")
        }
        blobs = _read_blobs(store, files.values())
        for path, oid in files.items():
            text = blobs.get(oid, b"").decode("utf-8", "replace")
            base = path[: -len(".gitignore")]
            self.specs.append((base, _ignore_spec(text.splitlines())))
        self.specs.sort(key=lambda item: item[0].count("/"))

    def ignored(self, path: str) -> bool:
        verdict = False
        for base, spec in self.specs:
            if path.startswith(base):
                result = spec.check_file(path[len(base) :])
                if result.include is not None:
                    verdict = bool(result.include)
        return verdict


def _ignore_spec(lines: list[str]) -> pathspec.GitIgnoreSpec:
    """A committed `.gitignore` as git reads it: a line that is no valid pattern (a trailing
    backslash) matches nothing, it does not stop the proof (the rules only explain)."""
    try:
        return pathspec.GitIgnoreSpec.from_lines(lines)
    except ValueError:
        valid: list[str] = []
        for line in lines:
            try:
                pathspec.GitIgnoreSpec.from_lines([line])
            except ValueError:
                continue
            valid.append(line)
        return pathspec.GitIgnoreSpec.from_lines(valid)


def _submodule_tree(
    root: Path, store: _Store, path: str, oid: str, hash_name: str
) -> tuple[_Store, str] | str:
    """The object store of the submodule at `path` and the tree of commit `oid` in it, or why
    it cannot be proven. The commit is re-hashed: a store holding another object under that id
    (or replacing it) proves nothing."""
    directory = root / path
    try:
        empty = not any(os.scandir(directory))
    except OSError:
        empty = True
    if empty:
        return "not checked out"
    gitfile = directory / ".git"
    if os.path.lexists(gitfile):
        sub_store = _Store(root, gitfile)
    else:
        parent_dir = Path(store.git("rev-parse", "--absolute-git-dir").decode().strip())
        candidate = parent_dir / "modules" / path
        if not candidate.is_dir():
            return "not checked out (no repository for it)"
        sub_store = _Store(root, candidate)
    try:
        raw = sub_store.git("cat-file", "commit", oid)
    except InputError:
        return f"not proven (commit {oid} not in its repository)"
    if hashlib.new(hash_name, b"commit %d\0" % len(raw) + raw).hexdigest() != oid:
        return f"not proven (the object stored as commit {oid} does not hash to that id)"
    first = raw.split(b"\n", 1)[0]
    if not first.startswith(b"tree "):
        return f"not proven (commit {oid} has no tree)"
    return sub_store, first[5:].decode("ascii", "replace").strip()


class _Proof:
    """One tree proof; submodules are proven with the same code, recursively."""

    def __init__(self, hash_name: str, allow_untracked: Sequence[str], submodules: str) -> None:
        if submodules not in SUBMODULE_MODES:
            raise InputError(
                f"submodule mode {submodules!r}: use prove or refuse", field="submodules"
            )
        self.hash_name = hash_name
        self.allowed = gitignore_spec(allow_untracked, field="allow_untracked")
        self.submodules = submodules

    def _is_allowed(self, path: str, *, is_dir: bool = False) -> bool:
        return bool(
            self.allowed.match_file(path) or (is_dir and self.allowed.match_file(path + "/"))
        )

    def prove(self, root: Path, store: _Store, tree: str, prefix: str, depth: int) -> _Result:
        entries = _entries(store, tree)
        differences: list[TreeDifference] = []
        for path in [p for p in entries if not _valid(p)]:
            del entries[path]
            differences.append(
                TreeDifference(
                    prefix + path,
                    "invalid",
                    "path in the commit cannot be checked out ('.', "
                    "'..', '.git' or an empty part): not compared",
                )
            )
        ignore = _IgnoreRules(store, entries)
        gitlinks = frozenset(p for p, e in entries.items() if e.mode == _GITLINK)
        tracked_dirs = {path[: i + 1] for path in entries for i, c in enumerate(path) if c == "/"}

        def skip_dir(directory: str) -> bool:
            return directory not in tracked_dirs and self._is_allowed(prefix + directory)

        present = {
            path: info
            for path, info in _walk(root, skip_dir, gitlinks).items()
            if path in entries
            or not self._is_allowed(prefix + path, is_dir=stat.S_ISDIR(info.st_mode))
        }

        found: dict[str, _Found] = {}
        to_hash: list[tuple[str, os.stat_result]] = []
        for path, info in present.items():
            entry = entries.get(path)
            mode = info.st_mode
            if stat.S_ISLNK(mode):
                try:
                    target = os.readlink(root / path).encode("utf-8", "surrogateescape")
                except OSError as exc:
                    raise InputError(
                        f"{display_path(prefix + path)}: cannot read ({exc.strerror})",
                        code="path-error",
                    ) from None
                oid, _ = _blob_id(self.hash_name, len(target), [target], None)
                found[path] = _Found(_LINK, oid)
            elif stat.S_ISREG(mode):
                to_hash.append((path, info))
            elif stat.S_ISDIR(mode):
                if entry is None:  # a `.git` below the top: another repository
                    differences.append(
                        TreeDifference(prefix + path, "added", "untracked nested repository")
                    )
            else:
                kind = next((name for test, name in _SPECIAL if test(mode)), "special file")
                if entry is None:
                    why = self._untracked_why(ignore, path, prefix)
                    differences.append(TreeDifference(prefix + path, "added", f"{kind}, {why}"))
                else:
                    differences.append(
                        TreeDifference(prefix + path, "type", f"a {kind} here, not in the commit")
                    )
        hashed = _hash_files(root, self.hash_name, to_hash)
        found.update(hashed)
        files = len(found)
        bytes_hashed = sum(f.size for f in hashed.values())

        for path, entry in entries.items():
            actual = found.get(path)
            if entry.mode == _GITLINK:
                here = present.get(path)
                if here is None:
                    differences.append(
                        TreeDifference(prefix + path, "submodule", "not checked out")
                    )
                elif not stat.S_ISDIR(here.st_mode):
                    differences.append(
                        TreeDifference(prefix + path, "type", "submodule in the commit, not here")
                    )
                else:
                    inner = self._submodule(root, store, path, entry.oid, prefix, depth)
                    differences += inner.differences
                    files += inner.files
                    bytes_hashed += inner.bytes_hashed
                    proven = inner.ok
                    found[path] = _Found(_GITLINK, entry.oid if proven else "0" * len(entry.oid))
                continue
            if actual is None:
                if path not in present:
                    differences.append(
                        TreeDifference(prefix + path, "deleted", "tracked path is missing")
                    )
                continue
            if (entry.mode == _LINK) != (actual.mode == _LINK):
                expected_kind = "symlink" if entry.mode == _LINK else "file"
                actual_kind = "symlink" if actual.mode == _LINK else "file"
                differences.append(
                    TreeDifference(
                        prefix + path, "type", f"{expected_kind} in the commit, {actual_kind} here"
                    )
                )
            elif actual.oid != entry.oid:
                what = "symlink target differs" if entry.mode == _LINK else "content differs"
                differences.append(TreeDifference(prefix + path, "modified", what))
            elif actual.mode != entry.mode:
                differences.append(
                    TreeDifference(
                        prefix + path,
                        "mode",
                        f"mode {entry.mode} in the commit, {actual.mode} here",
                    )
                )
        extra = sorted(set(found) - set(entries))
        for path in extra:
            differences.append(
                TreeDifference(prefix + path, "added", self._untracked_why(ignore, path, prefix))
            )
        actual_tree = _tree_id(
            self.hash_name,
            {p: (f.mode, f.oid) for p, f in found.items() if p in entries or p in extra},
        )
        if actual_tree != tree and not differences:
            differences.append(
                TreeDifference(
                    prefix or ".",
                    "modified",
                    f"recomputed tree {actual_tree[:12]} is not {tree[:12]} although no path "
                    "differs: the repository's tree objects do not match their ids",
                )
            )
        return _Result(tree, actual_tree, differences, files, bytes_hashed)

    def _untracked_why(self, ignore: _IgnoreRules, path: str, prefix: str) -> str:
        if ignore.ignored(path):
            return "ignored by .gitignore, present before the build (declare it to allow it)"
        return "untracked and not ignored"

    def _submodule(
        self, root: Path, store: _Store, path: str, oid: str, prefix: str, depth: int
    ) -> _Result:
        name = prefix + path

        def refused(detail: str) -> _Result:
            return _Result("", "", [TreeDifference(name, "submodule", detail)], 0, 0)

        if self.submodules == "refuse":
            return refused("not proven (submodules are refused)")
        if depth >= MAX_SUBMODULE_DEPTH:
            return refused(f"not proven (submodules nested deeper than {MAX_SUBMODULE_DEPTH})")
        if len(oid) != (64 if self.hash_name == "sha256" else 40) or not _HEX.issuperset(oid):
            return refused(f"not proven (gitlink {oid} is not a {self.hash_name} id)")
        located = _submodule_tree(root, store, path, oid, self.hash_name)
        if isinstance(located, str):
            return refused(located)
        sub_store, tree = located
        try:
            return self.prove(root / path, sub_store, tree, name + "/", depth + 1)
        except InputError as exc:
            return refused(f"not proven ({exc.message})")


def prove_tree(
    repo: Path,
    commit: str = "HEAD",
    *,
    allow_untracked: Sequence[str] = (),
    submodules: str = "prove",
) -> TreeReport:
    """Compare the work tree with `commit`'s tree; every difference is named. `submodules`:
    `prove` (each submodule's files against the commit its gitlink records) or `refuse`."""
    root = open_repository(repo)
    commit_oid = resolve_commit(root, commit)
    expected_tree = git(root, "rev-parse", f"{commit_oid}^{{tree}}").decode().strip()
    hash_name = "sha256" if len(commit_oid) == 64 else "sha1"
    proof = _Proof(hash_name, allow_untracked, submodules)
    result = proof.prove(root, _Store(root), expected_tree, "", 0)
    return TreeReport(
        commit=commit_oid,
        expected_tree=expected_tree,
        actual_tree=result.actual_tree,
        differences=tuple(sorted(result.differences, key=lambda d: (d.path, d.kind))),
        files=result.files,
        bytes_hashed=result.bytes_hashed,
    )


def _hash_files(
    root: Path, hash_name: str, files: list[tuple[str, os.stat_result]]
) -> dict[str, _Found]:
    """Blob ids of regular files, streaming, on all cores (hashlib releases the GIL)."""

    def one(item: tuple[str, os.stat_result]) -> tuple[str, _Found]:
        path, info = item
        try:
            oid, size = _blob_id(hash_name, info.st_size, None, root / path)
        except OSError as exc:
            raise InputError(
                f"{display_path(path)}: cannot read ({exc.strerror or exc})", code="path-error"
            ) from None
        mode = _EXEC if info.st_mode & stat.S_IXUSR else _FILE
        return path, _Found(mode, oid, size)

    workers = min(8, (os.cpu_count() or 1) + 1)  # one more than the cores: reads overlap
    if len(files) < 64:
        return dict(map(one, files))
    # A future per file costs more than hashing a small one: hand each worker a batch,
    # largest files first so the batches finish together.
    batches: list[list[tuple[str, os.stat_result]]] = [[] for _ in range(workers * 4)]
    loads = [0] * len(batches)
    for item in sorted(files, key=lambda f: f[1].st_size, reverse=True):
        lightest = loads.index(min(loads))
        batches[lightest].append(item)
        loads[lightest] += item[1].st_size + 4096
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda batch: [one(item) for item in batch], batches)
        return {path: found for batch in results for path, found in batch}


def _tree_id(hash_name: str, files: dict[str, tuple[str, str]]) -> str:
    """The id git would give a tree holding exactly these entries."""
    top = _Dir()
    for path, (mode, oid) in files.items():
        node = top
        *dirs, name = path.split("/")
        for part in dirs:
            child = node.children.setdefault(part, _Dir())
            assert isinstance(child, _Dir)  # noqa: S101 - a path cannot be a file and a folder
            node = child
        node.children[name] = (mode, oid)
    return _write(hash_name, top)


def _write(hash_name: str, node: _Dir) -> str:
    def sort_key(item: tuple[str, _Dir | tuple[str, str]]) -> bytes:
        name, value = item
        raw = name.encode("utf-8", "surrogateescape")
        return raw + b"/" if isinstance(value, _Dir) else raw

    body = bytearray()
    for name, value in sorted(node.children.items(), key=sort_key):
        if isinstance(value, _Dir):
            mode, oid = _DIR, _write(hash_name, value)
        else:
            mode, oid = value
        body += mode.encode() + b" " + name.encode("utf-8", "surrogateescape") + b"\0"
        body += bytes.fromhex(oid)
    hasher = hashlib.new(hash_name)
    hasher.update(b"tree %d\0" % len(body))
    hasher.update(body)
    return hasher.hexdigest()
