"""Where and how signatures are written: the caller's umask, the output directory (only its
last level is created), and every OS error on a path as exit 2 naming the path and the reason."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.components.hsm import HsmFixture
from tests.components.tsa import LocalTsa, TsaPki


def _sealgate(
    *args: str | Path, env: dict[str, str], umask: int = 0o022
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sealgate", *map(str, args)],
        env=env, capture_output=True, text=True, check=False, umask=umask,
    )  # fmt: skip


def _sign(
    hsm: HsmFixture, *args: str | Path, umask: int = 0o022
) -> subprocess.CompletedProcess[str]:
    return _sealgate("sign", "--key", hsm.uri("ec256"), *args, env=hsm.env, umask=umask)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _error_line(result: subprocess.CompletedProcess[str], code: str) -> str:
    """The one error line, which must carry the reason code."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"sealgate: error: [{code}] "), lines[0]
    return lines[0]


def _nothing_written(directory: Path) -> None:
    assert [p.name for p in directory.rglob("*") if p.name.endswith((".p7s", ".tmp"))] == []


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    path = tmp_path / "app.tar.gz"
    path.write_bytes(b"release\n" * 100)
    return path


@pytest.mark.parametrize(("umask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_a_signature_gets_the_mode_open_would_give_under_the_umask(
    hsm: HsmFixture, artifact: Path, umask: int, expected: int
) -> None:
    result = _sign(hsm, artifact, umask=umask)
    assert result.returncode == 0, result.stderr
    assert _mode(artifact.parent / "app.tar.gz.p7s") == expected


def test_timestamping_later_keeps_the_signature_file_mode(
    hsm: HsmFixture, artifact: Path, tsa: LocalTsa, tsa_pki: TsaPki
) -> None:
    """A rewrite is what `open(path, "wb")` would do: the file keeps its mode, not 0600."""
    assert _sign(hsm, artifact).returncode == 0
    p7s = artifact.parent / "app.tar.gz.p7s"
    p7s.chmod(0o640)
    before = p7s.read_bytes()
    stamped = _sealgate(
        "timestamp", "--tsa", tsa.url, "--tsa-roots", tsa_pki.root_pem, p7s,
        env=hsm.env, umask=0o077,
    )  # fmt: skip
    assert stamped.returncode == 0, stamped.stderr
    assert p7s.read_bytes() != before  # control: it was rewritten
    assert _mode(p7s) == 0o640


def test_the_out_dir_is_created_one_level_deep(hsm: HsmFixture, artifact: Path) -> None:
    out = artifact.parent / "signatures"
    result = _sign(hsm, "--out-dir", out, artifact, umask=0o027)
    assert result.returncode == 0, result.stderr
    assert (out / "app.tar.gz.p7s").is_file()
    assert _mode(out / "app.tar.gz.p7s") == 0o640


def test_an_out_dir_whose_parent_is_missing_is_refused_naming_the_parent(
    hsm: HsmFixture, artifact: Path
) -> None:
    missing = artifact.parent / "no-such-parent"
    line = _error_line(_sign(hsm, "--out-dir", missing / "sigs", artifact), "path-error")
    assert f"its parent {missing} does not exist" in line
    assert not missing.exists()
    _nothing_written(artifact.parent)


def test_an_out_dir_that_is_a_file_is_refused(hsm: HsmFixture, artifact: Path) -> None:
    line = _error_line(_sign(hsm, "--out-dir", artifact, artifact), "path-error")
    assert f"{artifact}: not a directory" in line
    _nothing_written(artifact.parent)


def test_an_out_dir_below_a_file_is_refused(hsm: HsmFixture, artifact: Path) -> None:
    line = _error_line(_sign(hsm, "--out-dir", artifact / "sigs", artifact), "path-error")
    assert f"{artifact / 'sigs'}: " in line and "(Not a directory)" in line
    _nothing_written(artifact.parent)


def test_an_out_dir_name_longer_than_the_system_allows(hsm: HsmFixture, artifact: Path) -> None:
    out = artifact.parent / ("d" * 300)
    line = _error_line(_sign(hsm, "--out-dir", out, artifact), "path-error")
    assert str(out) in line and "File name too long" in line
    _nothing_written(artifact.parent)


def test_an_artifact_whose_signature_name_would_be_too_long(
    hsm: HsmFixture, tmp_path: Path
) -> None:
    """The artifact fits (252 bytes), its `.p7s` (256) does not: refused before signing."""
    long_name = tmp_path / ("a" * 252)
    long_name.write_bytes(b"x")
    line = _error_line(_sign(hsm, long_name), "path-error")
    assert str(long_name) in line and "File name too long" in line and "256 bytes" in line
    _nothing_written(tmp_path)


def test_an_artifact_name_longer_than_the_system_allows(hsm: HsmFixture, tmp_path: Path) -> None:
    too_long = tmp_path / ("b" * 300)
    line = _error_line(_sign(hsm, too_long), "path-error")
    assert str(too_long) in line and "File name too long" in line


def test_an_artifact_below_a_file(hsm: HsmFixture, artifact: Path) -> None:
    inner = artifact / "inner"
    line = _error_line(_sign(hsm, inner), "path-error")
    assert str(inner) in line and "Not a directory" in line


def test_an_unwritable_out_dir_names_the_path_and_reason(
    hsm: HsmFixture, artifact: Path, tmp_path: Path
) -> None:
    if os.geteuid() == 0:
        # root writes through modes: a read-only bind is not available here, so use a path
        # the kernel refuses for everyone: /proc is not writable
        out = Path("/proc/self")
    else:
        out = tmp_path / "ro"
        out.mkdir(mode=0o500)
    line = _error_line(_sign(hsm, "--out-dir", out, artifact), "path-error")
    assert str(out) in line and "nothing was written" in line


def test_timestamping_a_signature_path_the_os_refuses(
    hsm: HsmFixture, tmp_path: Path, tsa: LocalTsa, tsa_pki: TsaPki
) -> None:
    """`timestamp` reads its `.p7s` through the capped reader: a path error, not a traceback."""
    for path, reason in [
        (tmp_path / ("s" * 300 + ".p7s"), "File name too long"),
        (tmp_path / "missing.p7s", "no such file"),
    ]:
        result = _sealgate(
            "timestamp", "--tsa", tsa.url, "--tsa-roots", tsa_pki.root_pem, path, env=hsm.env
        )
        code = "path-error" if "long" in reason else "file-missing"
        line = _error_line(result, code)
        assert str(path) in line and reason in line


def test_a_symlink_at_the_signature_path_lends_it_neither_mode_nor_content(
    hsm: HsmFixture, artifact: Path, tmp_path: Path
) -> None:
    """A planted `app.tar.gz.p7s -> world-writable file`: the link is replaced, its target
    untouched, and the signature gets the umask's mode, not the target's 0666."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    victim.chmod(0o666)
    link = artifact.parent / "app.tar.gz.p7s"
    link.symlink_to(victim)
    result = _sign(hsm, artifact, umask=0o022)
    assert result.returncode == 0, result.stderr
    assert not link.is_symlink() and _mode(link) == 0o644
    assert victim.read_bytes() == b"precious\n" and _mode(victim) == 0o666
