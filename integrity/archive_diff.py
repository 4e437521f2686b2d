"""Explain why two artifacts differ, so a failed rebuild points at its cause.

A digest mismatch alone says nothing a developer can act on. For zip-family archives (zip,
wheel, jar) and tarballs this lists the members that were added, removed or changed (size,
sha256, and for tar the mtime, mode and owner); for anything else the first differing offset.
When `diffoscope` is on PATH its text report is added, bounded in time and size; Sealgate works
the same without it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

#: At most this many lines of member differences per artifact (then "... and N more").
MAX_LINES = 50
#: diffoscope is stopped after this many seconds and its report cut to this many characters.
DIFFOSCOPE_TIMEOUT = 120.0
DIFFOSCOPE_MAX_CHARS = 20_000

_CHUNK = 1 << 20
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2", ".tbz")
_ZIP_SUFFIXES = (".zip", ".whl", ".jar", ".war", ".ear", ".apk", ".aar", ".egg", ".nupkg")


@dataclass(frozen=True)
class Member:
    """What matters about one archive member when comparing two builds."""

    size: int
    sha256: str
    #: Metadata compared as well (name -> printable value), e.g. mtime or mode.
    meta: tuple[tuple[str, str], ...] = ()


def explain(expected: Path, rebuilt: Path, limit: int = MAX_LINES) -> list[str]:
    """Human-readable lines describing how `rebuilt` differs from `expected` (bounded)."""
    kind = archive_kind(expected)
    lines: list[str] = []
    if kind is not None:
        try:
            lines = _diff_members(kind, expected, rebuilt)
        except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError, ValueError) as exc:
            lines = [f"cannot read as {kind} ({exc}); comparing bytes"]
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
    for name in order_a:
        if name not in b:
            lines.append(f"removed {name} (size {a[name].size}, sha256 {a[name].sha256})")
    for name in order_b:
        if name not in a:
            lines.append(f"added {name} (size {b[name].size}, sha256 {b[name].sha256})")
    for name in order_a:
        if name not in b or a[name] == b[name]:
            continue
        old, new = a[name], b[name]
        if (old.size, old.sha256) != (new.size, new.sha256):
            lines.append(
                f"differs {name}: size {old.size} -> {new.size}, "
                f"sha256 {old.sha256} -> {new.sha256}"
            )
        old_meta, new_meta = dict(old.meta), dict(new.meta)
        for key in old_meta:
            if old_meta[key] != new_meta.get(key):
                lines.append(f"differs {name}: {key} {old_meta[key]} -> {new_meta.get(key)}")
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
        for info in archive.infolist():
            name = _unique(info.filename, members)
            with archive.open(info) as stream:
                digest = _sha256(stream)
            meta = (
                ("mtime", "{:04d}-{:02d}-{:02d} {:02d}:{:02d}:{:02d}".format(*info.date_time)),
                ("mode", _mode(info.external_attr >> 16)),
                ("compression", str(info.compress_type)),
            )
            members[name] = Member(info.file_size, digest.hexdigest(), meta)
            order.append(name)
    return members, order


def _tar_members(path: Path) -> tuple[dict[str, Member], list[str]]:
    members: dict[str, Member] = {}
    order: list[str] = []
    with tarfile.open(path, "r:*") as archive:
        for info in _iter_tar(archive):
            name = _unique(info.name, members)
            stream = archive.extractfile(info) if info.isfile() else None
            digest = _sha256(stream) if stream is not None else hashlib.sha256()
            meta = (
                ("type", _tar_type(info)),
                ("mtime", str(int(info.mtime))),
                ("mode", _mode(info.mode)),
                ("owner", f"{info.uid}:{info.gid} ({info.uname or '-'}:{info.gname or '-'})"),
                ("link", info.linkname or "-"),
            )
            members[name] = Member(info.size, digest.hexdigest(), meta)
            order.append(name)
    return members, order


def _sha256(stream: IO[bytes]) -> hashlib._Hash:
    digest = hashlib.sha256()
    while chunk := stream.read(_CHUNK):
        digest.update(chunk)
    return digest


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
