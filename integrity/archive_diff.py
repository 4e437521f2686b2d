"""Explain why two artifacts differ, so a failed rebuild points at its cause.

A digest mismatch alone says nothing a developer can act on. For zip-family archives (zip,
wheel, jar) and tarballs this lists the members that were added, removed or changed (size,
sha256, and for tar the mtime, mode and owner); for anything else the first differing offset.
When `diffoscope` is on PATH its text report is added, bounded in time and size; Sealgate works
the same without it.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import lzma
import os
import shutil
import signal
import stat
import struct
import subprocess
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from integrity.files import sha256_stream

#: At most this many lines of member differences per artifact (then "... and N more").
MAX_LINES = 50
#: diffoscope is stopped after this many seconds and its report cut to this many characters.
DIFFOSCOPE_TIMEOUT = 120.0
DIFFOSCOPE_MAX_CHARS = 20_000

#: Bounds on what one archive may make us read: a zip or gzip bomb stops here, then the bytes
#: are compared instead. Nothing is ever extracted to disk or followed.
MAX_UNPACKED = 2 << 30
MAX_MEMBERS = 200_000

_CHUNK = 1 << 20
#: How a line about a member that escapes the archive or is a device starts.
UNSAFE_PREFIX = "unsafe member in "
#: The sha256 of no bytes: a tar member that is not a regular file has no content.
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2", ".tbz")
_ZIP_SUFFIXES = (".zip", ".whl", ".jar", ".war", ".ear", ".apk", ".aar", ".egg", ".nupkg")


class ArchiveTooLargeError(ValueError):
    """The archive unpacks to more than MAX_UNPACKED bytes or holds more than MAX_MEMBERS."""


#: What a malformed or hostile archive makes the standard library raise (all caught).
_UNREADABLE = (
    OSError, EOFError, ValueError, zipfile.BadZipFile, tarfile.TarError, NotImplementedError,
    RuntimeError, zlib.error, lzma.LZMAError, struct.error, OverflowError, KeyError, IndexError,
    RecursionError, MemoryError,
)  # fmt: skip


@dataclass(frozen=True)
class Member:
    """What matters about one archive member when comparing two builds."""

    size: int
    sha256: str
    #: Metadata compared as well (name -> printable value), e.g. mtime or mode.
    meta: tuple[tuple[str, str], ...] = ()


def explain(expected: Path, rebuilt: Path, limit: int = MAX_LINES) -> list[str]:
    """Human-readable lines describing how `rebuilt` differs from `expected` (bounded)."""
    for path in (expected, rebuilt):  # a FIFO or device would block or never end
        try:
            mode = os.lstat(path).st_mode
        except OSError as exc:
            return [f"{_show(str(path))}: cannot read ({exc.strerror})"]
        if not stat.S_ISREG(mode):
            return [f"{_show(str(path))}: not a regular file ({stat.filemode(mode)}); not compared"]
    kind = archive_kind(expected)
    lines: list[str] = []
    if kind is not None:
        try:
            lines = _diff_members(kind, expected, rebuilt)
        except _UNREADABLE as exc:
            reason = _show(str(exc) or type(exc).__name__)[:200]
            lines = [f"cannot read as {kind} ({reason}); comparing bytes"]
            lines += byte_difference(expected, rebuilt)
    else:
        lines = byte_difference(expected, rebuilt)
    if len(lines) > limit:
        lines = [*lines[:limit], f"... and {len(lines) - limit} more differences"]
    return lines


def archive_kind(path: Path) -> str | None:
    """`zip`, `tar` or None, by name first and then (zip only) by content."""
    name = path.name.lower()
    if name.endswith(_TAR_SUFFIXES):
        return "tar"
    if name.endswith(_ZIP_SUFFIXES):
        return "zip"
    try:
        return "zip" if zipfile.is_zipfile(path) else None
    except OSError:
        return None


def byte_difference(expected: Path, rebuilt: Path) -> list[str]:
    """Sizes and the first differing offset of two files that are not archives we can open."""
    size_a, size_b = expected.stat().st_size, rebuilt.stat().st_size
    offset = 0
    with expected.open("rb") as fa, rebuilt.open("rb") as fb:
        while True:
            a, b = fa.read(_CHUNK), fb.read(_CHUNK)
            if a != b:
                common = min(len(a), len(b))
                first = next((i for i in range(common) if a[i] != b[i]), common)
                offset += first
                break
            if not a:
                return [f"sizes {size_a} and {size_b}; contents identical"]
            offset += len(a)
    return [
        f"first difference at byte offset {offset}; sizes {size_a} (expected), {size_b} (rebuilt)"
    ]


def _diff_members(kind: str, expected: Path, rebuilt: Path) -> list[str]:
    read = _zip_members if kind == "zip" else _tar_members
    a, order_a = read(expected)
    b, order_b = read(rebuilt)
    lines: list[str] = []
    for label, members, order in (("expected", a, order_a), ("rebuilt", b, order_b)):
        lines += [f"{UNSAFE_PREFIX}{label}: {w}" for n in order for w in _unsafe(n, members[n])]
    for name in order_a:
        if name not in b:
            lines.append(f"removed {_show(name)} (size {a[name].size}, sha256 {a[name].sha256})")
    for name in order_b:
        if name not in a:
            lines.append(f"added {_show(name)} (size {b[name].size}, sha256 {b[name].sha256})")
    for name in order_a:
        if name not in b or a[name] == b[name]:
            continue
        old, new = a[name], b[name]
        if (old.size, old.sha256) != (new.size, new.sha256):
            lines.append(
                f"differs {_show(name)}: size {old.size} -> {new.size}, "
                f"sha256 {old.sha256} -> {new.sha256}"
            )
        old_meta, new_meta = dict(old.meta), dict(new.meta)
        for key in old_meta:
            if old_meta[key] != new_meta.get(key):
                lines.append(
                    f"differs {_show(name)}: {key} {_show(old_meta[key])} -> "
                    f"{_show(new_meta.get(key) or '-')}"
                )
    if not lines:
        common = [n for n in order_a if n in b]
        if common != [n for n in order_b if n in a]:
            lines.append("same members with the same contents, in a different order")
        else:
            lines.append(
                f"same members, contents and metadata; the {kind} container differs "
                "(compression, headers or padding)"
            )
            lines += _gzip_header_difference(expected, rebuilt)
    return lines


def _zip_members(path: Path) -> tuple[dict[str, Member], list[str]]:
    members: dict[str, Member] = {}
    order: list[str] = []
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        if len(infos) > MAX_MEMBERS:
            raise ArchiveTooLargeError(f"more than {MAX_MEMBERS} members")
        if sum(info.file_size for info in infos) > MAX_UNPACKED:  # a zip bomb declares its size
            raise ArchiveTooLargeError(f"unpacks to more than {MAX_UNPACKED} bytes")
        for info in infos:
            name = _unique(info.filename, members)
            with archive.open(info) as stream:
                digest = sha256_stream(stream)
            meta = (
                ("mtime", "{:04d}-{:02d}-{:02d} {:02d}:{:02d}:{:02d}".format(*info.date_time)),
                ("mode", _mode(info.external_attr >> 16)),
                ("compression", str(info.compress_type)),
            )
            members[name] = Member(info.file_size, digest, meta)
            order.append(name)
    return members, order


def _tar_members(path: Path) -> tuple[dict[str, Member], list[str]]:
    members: dict[str, Member] = {}
    order: list[str] = []
    with _bounded_tar(path) as archive:
        for info in _iter_tar(archive):
            if len(order) >= MAX_MEMBERS:
                raise ArchiveTooLargeError(f"more than {MAX_MEMBERS} members")
            name = _unique(info.name, members)
            stream = archive.extractfile(info) if info.isfile() else None
            digest = sha256_stream(stream) if stream is not None else EMPTY_SHA256
            meta: tuple[tuple[str, str], ...] = (
                ("type", _tar_type(info)),
                ("mtime", str(int(info.mtime))),
                ("mode", _mode(info.mode)),
                ("owner", f"{info.uid}:{info.gid} ({info.uname or '-'}:{info.gname or '-'})"),
                ("link", info.linkname or "-"),
            )
            members[name] = Member(info.size, digest, meta)
            order.append(name)
    return members, order


class _Bounded(io.RawIOBase):
    """A decompressed stream that refuses to be read or sought past `limit` bytes: the work
    of decompressing a tar.gz bomb stops there."""

    def __init__(self, inner: IO[bytes], limit: int) -> None:
        self._inner = inner
        self._limit = limit

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._inner.tell()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = offset if whence == io.SEEK_SET else self._inner.tell() + offset
        if whence not in (io.SEEK_SET, io.SEEK_CUR) or target > self._limit:
            raise ArchiveTooLargeError(f"unpacks to more than {self._limit} bytes")
        return self._inner.seek(target)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._inner.tell() + len(view) > self._limit:
            raise ArchiveTooLargeError(f"unpacks to more than {self._limit} bytes")
        data = self._inner.read(len(view))
        view[: len(data)] = data
        return len(data)


@contextlib.contextmanager
def _bounded_tar(path: Path) -> Iterator[tarfile.TarFile]:
    """The tar inside `path` (plain, gzip, bzip2 or xz), read through a `_Bounded` stream."""
    with path.open("rb") as raw:
        magic = raw.read(6)
        raw.seek(0)
        inner: Any  # GzipFile, BZ2File and LZMAFile are binary streams without a common type
        if magic[:2] == b"\x1f\x8b":
            inner = gzip.GzipFile(fileobj=raw, mode="rb")
        elif magic[:3] == b"BZh":
            inner = bz2.BZ2File(raw, "rb")
        elif magic == b"\xfd7zXZ\x00":
            inner = lzma.LZMAFile(raw, "rb")
        else:
            inner = raw
        with inner, tarfile.open(fileobj=_Bounded(inner, MAX_UNPACKED), mode="r:") as archive:
            yield archive


def _unsafe(name: str, member: Member) -> list[str]:
    """Why a member would be dangerous to extract: Sealgate never extracts, it reports."""
    shown = _show(name)
    warnings: list[str] = []
    posix = name.replace("\\", "/")
    parts = posix.split("/")
    if posix.startswith("/") or (len(posix) > 1 and posix[1] == ":"):
        warnings.append(f"{shown}: absolute path")
    if ".." in parts:
        warnings.append(f"{shown}: `..` in its path")
    meta = dict(member.meta)
    kind = meta.get("type", "file")
    if kind.startswith("type ") or kind in ("chardev", "blockdev", "fifo"):
        warnings.append(f"{shown}: a special file ({kind}), not extracted")
    link = meta.get("link", "-")
    if link != "-" and (link.startswith("/") or ".." in link.replace("\\", "/").split("/")):
        warnings.append(f"{shown}: links outside the archive ({_show(link)})")
    return warnings


def _show(text: str) -> str:
    """A name as one printable line: control characters and newlines cannot forge report lines."""
    if text.isprintable():
        return text
    return repr(text)[1:-1]


def _iter_tar(archive: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    while (info := archive.next()) is not None:
        yield info


def _tar_type(info: tarfile.TarInfo) -> str:
    if info.isfile():
        return "file"
    if info.isdir():
        return "dir"
    if info.issym():
        return "symlink"
    if info.islnk():
        return "hardlink"
    if info.ischr():
        return "chardev"
    if info.isblk():
        return "blockdev"
    if info.isfifo():
        return "fifo"
    return f"type {info.type!r}"


def _unique(name: str, seen: dict[str, Member]) -> str:
    """Duplicate member names (legal in both formats) are kept apart as `name#2`, ..."""
    if name not in seen:
        return name
    n = 2
    while f"{name}#{n}" in seen:
        n += 1
    return f"{name}#{n}"


def _mode(mode: int) -> str:
    return f"{mode & 0o7777:04o}"


def _gzip_header_difference(expected: Path, rebuilt: Path) -> list[str]:
    """gzip stores its own mtime in the header: a classic cause of irreproducible .tar.gz."""
    with expected.open("rb") as fa, rebuilt.open("rb") as fb:
        a, b = fa.read(10), fb.read(10)
    if a[:2] == b[:2] == b"\x1f\x8b" and a[4:8] != b[4:8]:
        mtime_a = int.from_bytes(a[4:8], "little")
        mtime_b = int.from_bytes(b[4:8], "little")
        return [f"gzip header mtime {mtime_a} -> {mtime_b}"]
    return []


def run_diffoscope(
    expected: Path,
    rebuilt: Path,
    *,
    timeout: float = DIFFOSCOPE_TIMEOUT,
    max_chars: int = DIFFOSCOPE_MAX_CHARS,
) -> str | None:
    """diffoscope's text report (cut to `max_chars`), or None when diffoscope is not installed.

    Exit 0 means no difference, 1 a report, anything else an error: every case and a timeout
    come back as text, because a missing explanation must never hide the mismatch itself.
    """
    program = shutil.which("diffoscope")
    if program is None:
        return None
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(  # noqa: S603 - fixed program, paths as separate arguments
            [program, "--text", "-", "--", str(expected), str(rebuilt)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            return f"diffoscope timed out after {timeout:g} s"
        report = _head(out, max_chars)
        if code == 0:
            return "diffoscope: no differences"
        if code == 1:
            return report
        return f"diffoscope failed (exit {code}): {_tail(err, 2000).strip() or report.strip()}"


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def _head(file: IO[bytes], limit: int) -> str:
    size = file.seek(0, os.SEEK_END)
    file.seek(0)
    text = file.read(limit).decode("utf-8", "replace")
    if size > limit:
        text += f"\n... (diffoscope report cut at {limit} of {size} bytes)"
    return text


def _tail(file: IO[bytes], limit: int) -> str:
    size = file.seek(0, os.SEEK_END)
    file.seek(max(0, size - limit))
    return file.read().decode("utf-8", "replace")
