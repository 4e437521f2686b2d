"""The tree proof: the working tree's bytes, modes and symlinks must equal the signed commit's tree.

Everything is recomputed from the files themselves; git's index and stat cache are never
consulted (an index can be told to ignore a change: `update-index --assume-unchanged`).
Ignore rules come only from the `.gitignore` files of the commit, never from the workspace's
`.git/info/exclude` or a global excludes file, which an intruder could edit to hide a file.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pathspec

from integrity.errors import InputError
from integrity.gitobjects import ObjectReader, git

CHUNK = 1 << 20
_FILE, _EXEC, _LINK, _DIR, _GITLINK = "100644", "100755", "120000", "40000", "160000"


@dataclass(frozen=True)
class TreeDifference:
    path: str
    kind: str  # "modified" | "added" | "deleted" | "mode" | "type"
    detail: str

    def line(self) -> str:
        return f"{self.kind} {self.path}: {self.detail}"


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
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
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


def tracked_entries(repo: Path, commit: str) -> dict[str, _Entry]:
    """Every path of the commit's tree, from one `git ls-tree -r -z`."""
    out = git(repo, "ls-tree", "-r", "-z", "--full-tree", commit)
    entries: dict[str, _Entry] = {}
    for record in out.split(b"\0"):
        if not record:
            continue
        meta, _, name = record.partition(b"\t")
        mode, _kind, oid = meta.decode().split()
        entries[name.decode("utf-8", "surrogateescape")] = _Entry(mode, oid)
    return entries


def tracked_paths(repo: Path, commit: str = "HEAD") -> list[str]:
    return sorted(tracked_entries(repo, commit))


def _walk(root: Path, skip_dir: Callable[[str], bool]) -> dict[str, os.stat_result]:
    """Every file, symlink and submodule directory of the work tree (lstat), .git excluded;
    directories `skip_dir` names (ignored, holding nothing tracked) are not entered."""
    found: dict[str, os.stat_result] = {}
    stack = [("", root)]
    while stack:
        prefix, directory = stack.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name == ".git" and (prefix == "" or entry.is_file(follow_symlinks=False)):
                    continue
                relative = f"{prefix}{entry.name}"
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(info.st_mode):
                    if (Path(entry.path) / ".git").exists():
                        found[relative] = info  # a submodule checkout
                    elif not skip_dir(relative + "/"):
                        stack.append((relative + "/", Path(entry.path)))
                else:
                    found[relative] = info
    return found


class _IgnoreRules:
    """`.gitignore` files of the commit itself, applied directory by directory."""

    def __init__(self, reader: ObjectReader, entries: dict[str, _Entry]) -> None:
        self.specs: list[tuple[str, pathspec.GitIgnoreSpec]] = []
        for path, entry in entries.items():
            if path == ".gitignore" or path.endswith("/.gitignore"):
                base = path[: -len(".gitignore")]
                text = reader.read(entry.oid)[1].decode("utf-8", "replace")
                self.specs.append((base, pathspec.GitIgnoreSpec.from_lines(text.splitlines())))
        self.specs.sort(key=lambda item: item[0].count("/"))

    def ignored(self, path: str) -> bool:
        verdict = False
        for base, spec in self.specs:
            if path.startswith(base):
                result = spec.check_file(path[len(base) :])
                if result.include is not None:
                    verdict = bool(result.include)
        return verdict


def prove_tree(
    repo: Path, commit: str = "HEAD", *, allow_untracked: Sequence[str] = ()
) -> TreeReport:
    """Compare the work tree with `commit`'s tree; every difference is named."""
    if not (repo / ".git").exists():
        try:
            git(repo, "rev-parse", "--git-dir")
        except InputError:
            raise InputError(f"{repo}: not a git repository") from None
    root = Path(git(repo, "rev-parse", "--show-toplevel").decode().strip())
    try:
        commit_oid = (
            git(root, "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}").decode().strip()
        )
    except InputError:
        raise InputError(f"{commit!r} does not resolve to a commit in {root}") from None
    expected_tree = git(root, "rev-parse", f"{commit_oid}^{{tree}}").decode().strip()
    hash_name = "sha256" if len(commit_oid) == 64 else "sha1"
    entries = tracked_entries(root, commit_oid)
    reader = ObjectReader(root)
    try:
        ignore = _IgnoreRules(reader, entries)
    finally:
        reader.close()
    tracked_dirs = {path[: i + 1] for path in entries for i, c in enumerate(path) if c == "/"}
    allowed = pathspec.PathSpec.from_lines("gitignore", allow_untracked)

    def skip_dir(directory: str) -> bool:
        return directory not in tracked_dirs and (
            ignore.ignored(directory) or allowed.match_file(directory)
        )

    present = {
        path: info
        for path, info in _walk(root, skip_dir).items()
        if path in entries or not (allowed.match_file(path) or ignore.ignored(path))
    }

    differences: list[TreeDifference] = []
    found: dict[str, _Found] = {}
    to_hash: list[tuple[str, os.stat_result]] = []
    for path, info in present.items():
        entry = entries.get(path)
        if stat.S_ISLNK(info.st_mode):
            target = os.readlink(root / path).encode("utf-8", "surrogateescape")
            oid, _ = _blob_id(hash_name, len(target), [target], None)
            found[path] = _Found(_LINK, oid)
        elif stat.S_ISDIR(info.st_mode):  # submodule: its checked-out commit
            head = git(root / path, "rev-parse", "HEAD").decode().strip()
            found[path] = _Found(_GITLINK, head)
        elif stat.S_ISREG(info.st_mode):
            to_hash.append((path, info))
        elif entry is not None:
            differences.append(TreeDifference(path, "type", "not a regular file or symlink"))
    hashed = _hash_files(root, hash_name, to_hash)
    found.update(hashed)

    for path, entry in entries.items():
        actual = found.get(path)
        if actual is None:
            if path not in present:
                differences.append(TreeDifference(path, "deleted", "tracked path is missing"))
            continue
        if (entry.mode == _LINK) != (actual.mode == _LINK):
            expected_kind = "symlink" if entry.mode == _LINK else "file"
            actual_kind = "symlink" if actual.mode == _LINK else "file"
            differences.append(
                TreeDifference(path, "type", f"{expected_kind} in the commit, {actual_kind} here")
            )
        elif actual.oid != entry.oid:
            what = "symlink target differs" if entry.mode == _LINK else "content differs"
            differences.append(TreeDifference(path, "modified", what))
        elif actual.mode != entry.mode:
            differences.append(
                TreeDifference(path, "mode", f"mode {entry.mode} in the commit, {actual.mode} here")
            )
    extra: list[str] = []
    for path in sorted(set(found) - set(entries)):
        extra.append(path)
        differences.append(TreeDifference(path, "added", "untracked and not ignored"))

    actual_tree = _tree_id(
        hash_name, {p: (f.mode, f.oid) for p, f in found.items() if p in entries or p in extra}
    )
    differences.sort(key=lambda d: (d.path, d.kind))
    return TreeReport(
        commit=commit_oid,
        expected_tree=expected_tree,
        actual_tree=actual_tree,
        differences=tuple(differences),
        files=len(found),
        bytes_hashed=sum(f.size for f in hashed.values()),
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
            raise InputError(f"{path}: cannot read ({exc})") from None
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
