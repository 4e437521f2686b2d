"""Git objects in bulk: one `git cat-file --batch` process for a whole range, and the split of
a signed commit or tag into signature and payload exactly as git does it."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from integrity.errors import InputError

SIGNATURE_HEADERS = {"sha1": b"gpgsig", "sha256": b"gpgsig-sha256"}
_TAG_SIGNATURE_STARTS = (
    b"-----BEGIN PGP SIGNATURE-----",
    b"-----BEGIN SSH SIGNATURE-----",
    b"-----BEGIN SIGNED MESSAGE-----",
)


def git(repo: Path, *args: str, input_bytes: bytes | None = None) -> bytes:
    """Run one git command; a failure is a usage error naming the command."""
    result = subprocess.run(  # noqa: S603 - git with our own arguments
        ["git", "-C", str(repo), *args],  # noqa: S607 - git from PATH, as users run it
        input=input_bytes,
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip().splitlines()
        raise InputError(f"git {' '.join(args)}: {message[-1] if message else 'failed'}")
    return result.stdout


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
class Commit:
    oid: str
    raw: bytes
    tree: str
    parents: tuple[str, ...]
    author: str
    subject: str


def parse_commit(oid: str, raw: bytes) -> Commit:
    header, _, message = raw.partition(b"\n\n")
    tree = ""
    parents: list[str] = []
    author = ""
    for line in header.split(b"\n"):
        if line.startswith(b"tree "):
            tree = line[5:].decode()
        elif line.startswith(b"parent "):
            parents.append(line[7:].decode())
        elif line.startswith(b"author "):
            author = line[7:].decode(errors="replace").rsplit(" ", 2)[0]
    subject = message.split(b"\n", 1)[0].decode(errors="replace")
    return Commit(oid, raw, tree, tuple(parents), author, subject)


@dataclass
class ObjectReader:
    """One long-lived `git cat-file --batch`: every object of a range through one pipe."""

    repo: Path
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def read(self, oid: str) -> tuple[str, bytes]:
        if self._process is None:
            self._process = subprocess.Popen(  # noqa: S603
                ["git", "-C", str(self.repo), "cat-file", "--batch"],  # noqa: S607
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
        process = self._process
        assert process.stdin is not None and process.stdout is not None  # noqa: S101 - PIPEs
        process.stdin.write(oid.encode() + b"\n")
        process.stdin.flush()
        header = process.stdout.readline().split()
        if len(header) != 3:
            raise InputError(f"{self.repo}: object {oid} is missing")
        kind, size = header[1].decode(), int(header[2])
        data = process.stdout.read(size)
        process.stdout.read(1)  # the newline after each object
        return kind, data

    def tree_entry(self, tree: str, path: str) -> str | None:
        """The object id at `path` below `tree`, or None when there is nothing there."""
        current = tree
        for part in path.split("/"):
            kind, data = self.read(current)
            if kind != "tree":
                return None
            found = _find_in_tree(data, part.encode(), 20 if len(tree) == 40 else 32)
            if found is None:
                return None
            current = found
        return current

    def close(self) -> None:
        if self._process is not None:
            if self._process.stdin is not None:
                self._process.stdin.close()
            self._process.wait()
            self._process = None

    def __enter__(self) -> ObjectReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _find_in_tree(data: bytes, name: bytes, oid_size: int) -> str | None:
    position = 0
    while position < len(data):
        space = data.index(b" ", position)
        nul = data.index(b"\0", space)
        entry_name = data[space + 1 : nul]
        oid = data[nul + 1 : nul + 1 + oid_size]
        if entry_name == name:
            return oid.hex()
        position = nul + 1 + oid_size
    return None
