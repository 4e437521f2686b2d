"""Git objects in bulk: one `git cat-file --batch` process for a whole range, and the split of
a signed commit or tag into signature and payload exactly as git does it."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from integrity.errors import InputError, IntegrityError, SignatureError

SIGNATURE_HEADERS = {"sha1": b"gpgsig", "sha256": b"gpgsig-sha256"}
_TAG_SIGNATURE_STARTS = (
    b"-----BEGIN PGP SIGNATURE-----",
    b"-----BEGIN SSH SIGNATURE-----",
    b"-----BEGIN SIGNED MESSAGE-----",
)


#: Environment variables that point git at other objects, refs, parents or config than the
#: repository named by --repo: dropped from every git process Sealgate starts.
_DROPPED_ENV = frozenset({
    "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_NAMESPACE",
    "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_REPLACE_REF_BASE",
    "GIT_GRAFT_FILE", "GIT_SHALLOW_FILE", "GIT_CONFIG", "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT", "GIT_EXTERNAL_DIFF", "GIT_DIFF_OPTS", "GIT_PAGER", "GIT_EDITOR",
    "GIT_SSH", "GIT_SSH_COMMAND", "GIT_ASKPASS", "GIT_QUARANTINE_PATH",
})  # fmt: skip
_DROPPED_PREFIXES = ("GIT_CONFIG_KEY_", "GIT_CONFIG_VALUE_", "GIT_TRACE")
#: `-c` settings that beat the repository's own config: nothing it says may run a program,
#: read other parents than the commits' own, or change the format of what we parse.
SAFE_CONFIG = (
    "core.fsmonitor=false",
    "core.hooksPath=/dev/null",
    "core.commitGraph=false",
    "core.pager=cat",
    "core.quotePath=true",
    "core.untrackedCache=false",
    "diff.external=",
    "log.showSignature=false",
    "gpg.program=false",
    "gpg.ssh.program=false",
    "gpg.x509.program=false",
    "color.ui=false",
    "advice.graftFileDeprecated=false",
)
SHALLOW_MESSAGE = "shallow clone: fetch the full range (fetch-depth: 0)"


def git_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every git process: the caller's, minus what redirects git, with
    replace refs switched off (GIT_NO_REPLACE_OBJECTS)."""
    env = {
        name: value
        for name, value in (os.environ if base is None else base).items()
        if name not in _DROPPED_ENV and not name.startswith(_DROPPED_PREFIXES)
    }
    env.update(GIT_NO_REPLACE_OBJECTS="1", GIT_TERMINAL_PROMPT="0", GIT_OPTIONAL_LOCKS="0")
    return env


def git_argv(repo: Path | None, *args: str) -> list[str]:
    """`git [-C repo] --no-replace-objects -c SAFE... args`: the one way Sealgate runs git."""
    argv = ["git", *(["-C", str(repo)] if repo is not None else []), "--no-replace-objects"]
    for setting in SAFE_CONFIG:
        argv += ["-c", setting]
    return [*argv, *args]


class GitUnavailableError(IntegrityError):
    """git itself cannot be started: an infrastructure failure (exit 3), not a verdict."""

    exit_code = 3
    code = "git-unavailable"


def run_git(
    repo: Path | None, *args: str, input_bytes: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run one git command through the one door (git_argv, git_env); the caller judges it."""
    try:
        return subprocess.run(  # noqa: S603 - git with our own arguments
            git_argv(repo, *args),
            input=input_bytes,
            capture_output=True,
            check=False,
            env=git_env(),
            stdin=None if input_bytes is not None else subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise GitUnavailableError("git is not installed (or not on PATH)") from None


def git(repo: Path, *args: str, input_bytes: bytes | None = None) -> bytes:
    """Run one git command; a failure is a usage error naming the command."""
    result = run_git(repo, *args, input_bytes=input_bytes)
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip().splitlines()
        raise InputError(
            f"git {' '.join(args)}: {message[-1] if message else 'failed'}", code="git-failed"
        )
    return result.stdout


def git_path(repo: Path, name: str) -> Path:
    """Where git keeps `name` (info/grafts, shallow) for this repository, worktrees included."""
    return repo / git(repo, "rev-parse", "--git-path", name).decode().rstrip("\n")


def refuse_grafts(repo: Path) -> None:
    """A graft file rewrites parents for every git command (replace refs we switch off)."""
    if git_path(repo, "info/grafts").exists():
        raise InputError(
            f"{repo}: .git/info/grafts rewrites history; remove it", code="grafts", field="repo"
        )


def work_tree(repo: Path) -> Path:
    """The top of `repo`'s work tree, refused when the repository's config points it elsewhere.

    `core.worktree` (which `-c` cannot unset) would let a build aim the proofs at a clean copy
    of the sources while it compiles others; the top must hold the `.git` git itself uses.
    """
    lines = git(repo, "rev-parse", "--show-toplevel", "--absolute-git-dir").decode().splitlines()
    if len(lines) != 2 or not lines[0]:
        raise InputError(
            f"{repo}: not a git repository with a work tree", code="not-a-repository", field="repo"
        )
    root, git_dir = Path(lines[0]), Path(lines[1]).resolve()
    marker = root / ".git"
    try:
        if marker.is_symlink():
            found = None
        elif marker.is_dir():
            found = marker.resolve()
        else:
            text = marker.read_bytes()[:4096].decode("utf-8", "surrogateescape").strip()
            found = (
                (root / text[len("gitdir:") :].strip()).resolve()
                if text.startswith("gitdir:")
                else None
            )
    except OSError:
        found = None
    if found != git_dir:
        raise InputError(
            f"{repo}: git says the work tree is {root}, but its .git is not there "
            "(core.worktree or a .git file moves it)",
            hint="remove core.worktree from the repository's config",
            code="worktree-redirected",
            field="repo",
        )
    inside = repo.resolve()
    if inside != root.resolve() and root.resolve() not in inside.parents:
        raise InputError(
            f"{repo}: outside the work tree {root} that git reports",
            code="worktree-redirected",
            field="repo",
        )
    return root


def shallow_commits(repo: Path) -> frozenset[str]:
    """The commits whose parents this (shallow) clone lacks; empty for a full clone."""
    path = git_path(repo, "shallow")
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return frozenset()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})", code="path-error") from None
    return frozenset(text.decode(errors="replace").split())


class MalformedObjectError(SignatureError):
    """A commit, tree or tag that git would parse differently (or fsck refuses): never judged."""

    code = "malformed-object"

    def __init__(self, oid: str, detail: str) -> None:
        super().__init__(f"malformed {detail}")
        self.oid = oid


@dataclass(frozen=True)
class SignedObject:
    """What a signature covers (`payload`) and the signature itself, split as git splits them."""

    payload: bytes
    signature: bytes | None


def split_commit(raw: bytes, object_format: str = "sha1") -> SignedObject:
    """Git's parse_buffer_signed_by_header: take the signature header of this object format,
    drop every other `gpgsig*` header from the payload, keep the message whole."""
    wanted = SIGNATURE_HEADERS[object_format] + b" "
    payload = bytearray()
    signature = bytearray()
    in_signature = other_signature = False
    position = 0
    while position < len(raw):
        end = raw.find(b"\n", position)
        end = len(raw) if end < 0 else end + 1
        line = raw[position:end]
        chunk: bytes | None = None
        if in_signature and line.startswith(b" "):
            chunk = line[1:]
        elif line.startswith(wanted):
            chunk = line[len(wanted) :]
            other_signature = False
        elif line.startswith(b"gpgsig"):
            other_signature = True
        elif other_signature and not line.startswith(b" "):
            other_signature = False
        if chunk is not None:
            signature += chunk
            in_signature = True
        else:
            if line == b"\n":
                end = len(raw)  # the header ends: the rest is the message, kept whole
                line = raw[position:end]
            if not other_signature:
                payload += line
            in_signature = False
        position = end
    return SignedObject(bytes(payload), bytes(signature) if signature else None)


def split_tag(raw: bytes) -> SignedObject:
    """A tag's signature is the last armored block of its message (git's parse_signature)."""
    header_end = raw.find(b"\n\n")
    start = -1
    if header_end >= 0:
        position = header_end + 2
        while position < len(raw):
            if raw.startswith(_TAG_SIGNATURE_STARTS, position):
                start = position
                break
            next_line = raw.find(b"\n", position)
            if next_line < 0:
                break
            position = next_line + 1
    if start < 0:
        return SignedObject(raw, None)
    return SignedObject(raw[:start], raw[start:])


@dataclass(frozen=True)
class Tag:
    oid: str
    target: str
    target_type: str
    name: str
    tagger: str


def parse_tag(oid: str, raw: bytes) -> Tag:
    """A tag object as git reads it: `object`, `type`, `tag` in that order, at most one
    `tagger`; anything else is refused (MalformedObjectError)."""
    header = raw.partition(b"\n\n")[0]
    lines = header.split(b"\n")
    names = (b"object ", b"type ", b"tag ")
    if (
        b"\0" in header
        or len(lines) < 3
        or not all(line.startswith(name) for line, name in zip(lines, names, strict=False))
    ):
        raise MalformedObjectError(oid, "tag object (`object`, `type`, `tag` must come first)")
    target = _object_id(lines[0][7:], len(oid))
    if target is None:
        raise MalformedObjectError(oid, "tag object (bad object id)")
    tagger = ""
    for line in lines[3:]:
        if line.startswith(names):
            raise MalformedObjectError(oid, "tag object (a repeated header)")
        if line.startswith(b"tagger "):
            if tagger:
                raise MalformedObjectError(oid, "tag object (two `tagger` lines)")
            tagger = line[7:].decode(errors="replace").rsplit(" ", 2)[0] or "?"
    name = lines[2][4:].decode(errors="surrogateescape")
    return Tag(oid, target, lines[1][5:].decode(errors="replace"), name, tagger)


@dataclass(frozen=True)
class Commit:
    oid: str
    raw: bytes
    tree: str
    parents: tuple[str, ...]
    author: str
    subject: str


_HEX = frozenset(b"0123456789abcdef")


def _object_id(value: bytes, size: int) -> str | None:
    return value.decode() if len(value) == size and not set(value) - _HEX else None


def parse_commit(oid: str, raw: bytes) -> Commit:
    """Split a commit as git (and fsck) read it, or refuse it: exactly one `tree` first, the
    `parent` lines right after, then one `author` and one `committer` (MalformedObjectError)."""
    size = len(oid)

    def bad(detail: str) -> MalformedObjectError:
        return MalformedObjectError(oid, f"commit object ({detail})")

    header, separator, message = raw.partition(b"\n\n")
    if not separator and raw.endswith(b"\n"):
        header = raw[:-1]
    if b"\0" in header:
        raise bad("NUL byte in the header")
    lines = header.split(b"\n")
    if not lines[0].startswith(b"tree "):
        raise bad("the first line is not `tree`")
    tree = _object_id(lines[0][5:], size)
    if tree is None:
        raise bad("bad tree id")
    parents: list[str] = []
    index = 1
    while index < len(lines) and lines[index].startswith(b"parent "):
        parent = _object_id(lines[index][7:], size)
        if parent is None:
            raise bad(f"bad parent id on line {index + 1}")
        if parent in parents:
            raise bad(f"duplicate parent {parent}")
        parents.append(parent)
        index += 1
    if index < len(lines) and lines[index].startswith(b"tree "):
        raise bad("a second `tree` line")
    if index >= len(lines) or not lines[index].startswith(b"author "):
        raise bad("`author` must follow the parents")
    author = lines[index][7:].decode(errors="replace").rsplit(" ", 2)[0]
    if index + 1 >= len(lines) or not lines[index + 1].startswith(b"committer "):
        raise bad("`committer` must follow `author`")
    for number, line in enumerate(lines[index + 2 :], start=index + 3):
        if line.startswith((b"tree ", b"parent ", b"author ", b"committer ")):
            raise bad(f"a second `{line.split(b' ', 1)[0].decode()}` line (line {number})")
    subject = message.split(b"\n", 1)[0].decode(errors="replace")
    return Commit(oid, raw, tree, tuple(parents), author, subject)


TREE_MODE = 0o040000
_DRAIN = 1 << 16
#: The parsed trees kept for diffing a range: consecutive commits share most of theirs.
_TREE_CACHE = 4096


@dataclass
class ObjectReader:
    """One long-lived `git cat-file --batch`: every object of a range through one pipe."""

    repo: Path
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _trees: dict[str, dict[bytes, tuple[int, str]]] = field(default_factory=dict, init=False)

    def read(
        self, oid: str, *, limit: int | None = None, what: str = "object"
    ) -> tuple[str, bytes]:
        """(type, bytes) of one object; an object over `limit` is refused by its announced size
        and skipped, never held in memory."""
        if self._process is None:
            self._process = subprocess.Popen(  # noqa: S603 - git with our own arguments
                git_argv(self.repo, "cat-file", "--batch"),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=git_env(),
            )
        process = self._process
        assert process.stdin is not None and process.stdout is not None  # noqa: S101 - PIPEs
        if len(oid) not in (40, 64) or not set(oid.encode()) <= _HEX:
            raise InputError(f"{self.repo}: {oid!r} is not an object id", code="bad-object-id")
        process.stdin.write(oid.encode() + b"\n")
        process.stdin.flush()
        header = process.stdout.readline().split()
        if len(header) != 3 or not header[2].isdigit():
            raise InputError(f"{self.repo}: object {oid} is missing", code="missing-object")
        kind, size = header[1].decode(), int(header[2])
        if limit is not None and size > limit:
            remaining = size + 1
            while remaining:
                remaining -= len(process.stdout.read(min(remaining, _DRAIN))) or remaining
            raise InputError(
                f"{what} {oid[:12]}: {size} bytes, more than the {limit} allowed",
                code="object-too-large",
            )
        data = process.stdout.read(size)
        process.stdout.read(1)  # the newline after each object
        # cat-file does not check that an object hashes to its id; a swapped loose object or a
        # doctored pack would otherwise be read as the commit that was asked for
        algorithm = "sha1" if len(oid) == 40 else "sha256"
        if hashlib.new(algorithm, b"%s %d\0%s" % (header[1], size, data)).hexdigest() != oid:
            raise InputError(
                f"{self.repo}: object {oid} does not hash to its id (the object store is "
                "corrupt or has been tampered with)",
                code="object-hash-mismatch",
            )
        return kind, data

    def tree(self, oid: str) -> dict[bytes, tuple[int, str]]:
        """name -> (mode, id) of one tree object, names as raw bytes; refused when fsck would."""
        cached = self._trees.get(oid)
        if cached is not None:
            return cached
        kind, data = self.read(oid)
        if kind != "tree":
            raise MalformedObjectError(oid, f"tree {oid} (a {kind})")
        entries = parse_tree(oid, data)
        if len(self._trees) >= _TREE_CACHE:
            self._trees.clear()
        self._trees[oid] = entries
        return entries

    def tree_entry(self, tree: str, path: str) -> str | None:
        """The object id at `path` below `tree`, or None when there is nothing there."""
        current = tree
        parts = path.split("/")
        for depth, part in enumerate(parts):
            entry = self.tree(current).get(part.encode())
            if entry is None:
                return None
            if depth == len(parts) - 1:
                return entry[1]
            if entry[0] & 0o170000 != TREE_MODE:
                return None
            current = entry[1]
        return None

    def changed_paths(self, new: str | None, old: str | None) -> set[str]:
        """Every path whose mode or content differs between two trees (None: the empty tree),
        read from the tree objects themselves: no output format a file name could confuse.
        Names are decoded with surrogateescape, so odd bytes never merge two paths."""
        changed: set[bytes] = set()
        self._diff(new, old, b"", changed)
        return {path.decode("utf-8", "surrogateescape") for path in changed}

    def _diff(self, new: str | None, old: str | None, prefix: bytes, out: set[bytes]) -> None:
        if new == old:
            return
        new_entries = self.tree(new) if new is not None else {}
        old_entries = self.tree(old) if old is not None else {}
        for name in new_entries.keys() | old_entries.keys():
            a, b = new_entries.get(name), old_entries.get(name)
            if a == b:
                continue
            path = prefix + name
            out.add(path)
            a_tree = a[1] if a is not None and a[0] & 0o170000 == TREE_MODE else None
            b_tree = b[1] if b is not None and b[0] & 0o170000 == TREE_MODE else None
            if a_tree is not None or b_tree is not None:
                self._diff(a_tree, b_tree, path + b"/", out)

    def close(self) -> None:
        if self._process is not None:
            if self._process.stdin is not None:
                self._process.stdin.close()
            self._process.wait()
            self._process = None
        self._trees.clear()

    def __enter__(self) -> ObjectReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


_BAD_NAMES = frozenset({b"", b".", b".."})


_ENTRY = {size: re.compile(rb"([0-7]{1,7}) ([^\0/]*)\0(.{%d})" % size, re.S) for size in (20, 32)}
_MODES: dict[bytes, int] = {}


def parse_tree(oid: str, data: bytes) -> dict[bytes, tuple[int, str]]:
    """The entries of a tree object; a name git could not check out (empty, `.`, `..`, `.git`,
    holding `/`), a duplicate name or a cut entry makes the tree malformed."""
    entries: dict[bytes, tuple[int, str]] = {}
    position = 0
    for match in _ENTRY[20 if len(oid) == 40 else 32].finditer(data):
        if match.start() != position:
            break
        mode, name, raw_id = match.groups()
        if name in _BAD_NAMES or name.lower() == b".git" or name in entries:
            detail = "duplicate entry" if name in entries else "entry name"
            raise MalformedObjectError(oid, f"tree object {oid} ({detail} {name!r})")
        kind = _MODES.get(mode)
        if kind is None:  # a zero-padded mode is the same mode to git: it must not hide a subtree
            kind = int(mode, 8) & 0o170000 | int(mode, 8) & 0o111
            if len(_MODES) < 64:
                _MODES[mode] = kind
        entries[name] = (kind, raw_id.hex())
        position = match.end()
    if position != len(data):
        rest = data[position:]
        nul = rest.find(b"\0")
        name = rest[rest.find(b" ") + 1 : nul] if nul > 0 else b""
        detail = f"entry name {name!r}" if b"/" in name else "a cut entry"
        raise MalformedObjectError(oid, f"tree object {oid} ({detail})")
    return entries
