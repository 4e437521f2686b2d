"""One file hash, one capped reader and one git runner inside integrity, each held to its codes.

A second way to run git (without `--no-replace-objects` and the safe `-c` settings) would let a
repository's replace refs or config steer one check and not the others; a second file hash
would be a second place to get chunking or error handling wrong.
"""

from __future__ import annotations

import ast
import hashlib
import io
import os
import zipfile
from pathlib import Path

import pytest

from integrity.archive_diff import explain
from integrity.errors import InputError
from integrity.files import read_regular, sha256_file, sha256_stream

INTEGRITY = Path(__file__).resolve().parents[2] / "integrity"


@pytest.mark.parametrize("size", [0, 1, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 3 << 20])
def test_sha256_file_is_sha256_of_the_bytes(tmp_path: Path, size: int) -> None:
    data = hashlib.shake_256(str(size).encode()).digest(size) if size else b""
    path = tmp_path / "artifact"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    assert sha256_stream(io.BytesIO(data)) == hashlib.sha256(data).hexdigest()


def test_sha256_file_reads_only_a_regular_file_and_never_blocks(tmp_path: Path) -> None:
    """A path swapped after it was listed: a symlink is not followed, a FIFO never read."""
    target = tmp_path / "real"
    target.write_bytes(b"bytes")
    link = tmp_path / "link"
    link.symlink_to(target)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    cases = {tmp_path / "missing": "path-error", link: "path-error", tmp_path: "not-a-file",
             fifo: "not-a-file"}  # fmt: skip
    for path, code in cases.items():
        with pytest.raises(InputError) as caught:
            sha256_file(path)
        assert caught.value.code == code, path
        assert str(path) in caught.value.message
    assert sha256_file(target) == hashlib.sha256(b"bytes").hexdigest()  # control


def test_archive_members_are_hashed_the_same_way(tmp_path: Path) -> None:
    a, b = tmp_path / "a.zip", tmp_path / "b.zip"
    for path, body in ((a, b"one\n"), (b, b"two\n")):
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr(zipfile.ZipInfo("m.txt", (2024, 1, 1, 0, 0, 0)), body)
    [line] = explain(a, b)
    assert hashlib.sha256(b"one\n").hexdigest() in line
    assert hashlib.sha256(b"two\n").hexdigest() in line


def test_read_regular_codes(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    big = tmp_path / "big"
    big.write_bytes(b"x" * 11)
    fine = tmp_path / "fine"
    fine.write_bytes(b"x" * 10)
    cases = {tmp_path / "missing": "path-error", fifo: "not-a-file", tmp_path: "not-a-file",
             big: "file-too-large"}  # fmt: skip
    for path, code in cases.items():
        with pytest.raises(InputError) as caught:
            read_regular(path, what="policy", limit=10)
        assert caught.value.code == code, path
        assert f"policy {path}" in caught.value.message
    assert read_regular(fine, what="policy", limit=10) == b"x" * 10  # control


def _calls(tree: ast.AST) -> list[str]:
    return [
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    ]


def test_git_is_run_only_through_gitobjects() -> None:
    """Every `git` argv is built by git_argv; every module but gitobjects reaches git through
    run_git, git or ObjectReader (rebuild runs `bash` for the build, archive_diff diffoscope)."""
    builders: list[str] = []
    for path in sorted(INTEGRITY.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.List)
                and node.elts
                and isinstance(node.elts[0], ast.Constant)
                and node.elts[0].value == "git"
            ):
                builders.append(path.name)
        if path.name in ("gitobjects.py", "rebuild.py", "archive_diff.py", "watch.py"):
            continue
        assert not {"run", "Popen", "check_output", "call"} & set(_calls(tree)), path.name
    assert builders == ["gitobjects.py"]


def test_the_scan_sees_a_second_git_runner(tmp_path: Path) -> None:
    """The check above can fail: a module that builds its own argv is found."""
    tree = ast.parse('import subprocess\nsubprocess.run(["git", "log"])\n')
    found = [
        n for n in ast.walk(tree) if isinstance(n, ast.List) and isinstance(n.elts[0], ast.Constant)
    ]
    assert found and "run" in _calls(tree)
