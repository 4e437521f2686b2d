"""`sealgate run` on paths the OS refuses or that do not exist: exit 2 with the path, the code
and the flag, before anything is signed; one missing folder level is made, never a tree."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.components.cli import sealgate
from tests.components.gitrepo import Repo
from tests.components.hsm import HsmFixture
from tests.sealgate.test_pipeline_verify_options import LABEL, built
from tests.sealgate.test_run import alice, repo

__all__ = ["alice", "built", "repo"]  # the fixtures this module uses

LONG = "x" * 300


def _run(work: Repo, hsm: HsmFixture, *args: str | Path) -> tuple[int, str]:
    result = sealgate(
        "run", "--repo", work.path, "--no-commits", "--artifacts", "dist/*.bin",
        "--key", hsm.uri(LABEL), "--chain", hsm.chain_pem, "--trust-roots", hsm.root_pem,
        *args, env=hsm.env,
    )  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stdout + result.stderr


def _signatures(work: Repo) -> list[Path]:
    return sorted(work.path.rglob("*.p7s"))


def test_a_report_two_missing_levels_deep_is_refused_before_signing(
    built: Repo, tmp_path: Path, hsm: HsmFixture
) -> None:
    report = tmp_path / "missing" / "deeper" / "report.json"
    code, output = _run(built, hsm, "--report", report)
    assert code == 2, output
    assert f"sealgate: error: [path-error] --report: {report}" in output
    assert not (tmp_path / "missing").exists()
    assert _signatures(built) == []


def test_control_one_missing_level_is_created_for_the_report_and_the_vsa(
    built: Repo, tmp_path: Path, hsm: HsmFixture
) -> None:
    report = tmp_path / "out" / "report.json"
    code, output = _run(built, hsm, "--report", report)
    assert code == 0, output
    assert json.loads(report.read_text())["ok"] is True
    assert (tmp_path / "out" / "sealgate-vsa.intoto.json").is_file()


def test_a_report_name_longer_than_the_system_allows(
    built: Repo, tmp_path: Path, hsm: HsmFixture
) -> None:
    code, output = _run(built, hsm, "--no-attest", "--report", tmp_path / LONG)
    assert code == 2, output
    assert f"[path-error] --report: {tmp_path / LONG}" in output
    assert _signatures(built) == []  # known before the build, not after signing


def test_a_repository_path_longer_than_the_system_allows(tmp_path: Path, hsm: HsmFixture) -> None:
    result = sealgate("run", "--repo", tmp_path / LONG, "--key", hsm.uri(LABEL), env=hsm.env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("sealgate: error: [path-error] ") and LONG in result.stderr


def test_a_repository_that_is_a_file(tmp_path: Path, hsm: HsmFixture) -> None:
    plain = tmp_path / "plain"
    plain.write_text("not a repository\n")
    result = sealgate("run", "--repo", plain, "--key", hsm.uri(LABEL), env=hsm.env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert str(plain) in result.stderr and result.stderr.startswith("sealgate: error: [")


@pytest.mark.parametrize("key", ["report", "tsa_certs", "artifacts", "chain", "crl", "certificate"])
def test_a_nul_byte_in_sealgate_yml_is_a_usage_error(
    built: Repo, hsm: HsmFixture, key: str
) -> None:
    """A NUL reaches the OS as ValueError, not OSError: refused as the setting it is in."""
    (built.path / "sealgate.yml").write_text(f'{key}: "dist/a\\0b"\n')
    result = sealgate("run", "--repo", built.path, env=hsm.env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    line = result.stderr.strip()
    assert line.startswith("sealgate: error: [bad-setting] ") and "sealgate.yml line 1" in line
    assert key in line and "NUL" in line
    assert _signatures(built) == []


@pytest.mark.parametrize("attest", [True, False])
def test_an_artifact_name_that_is_not_utf8(
    built: Repo, tmp_path: Path, hsm: HsmFixture, attest: bool
) -> None:
    """No output may fail on the name after signing: report, stage lines, job summary; the
    VSA cannot name it, so with the attestation on it is refused before anything is signed."""
    (built.path / "dist" / os.fsdecode(b"app-\xff.bin")).write_bytes(b"latin-1 name\n")
    summary = tmp_path / "summary.md"
    report = tmp_path / "report.json"
    result = sealgate(
        "run", "--repo", built.path, "--no-commits", "--artifacts", "dist/*.bin",
        "--key", hsm.uri(LABEL), "--chain", hsm.chain_pem, "--trust-roots", hsm.root_pem,
        "--report", report, *([] if attest else ["--no-attest"]),
        env={**hsm.env, "GITHUB_STEP_SUMMARY": str(summary), "PYTHONIOENCODING": "utf-8:strict"},
    )  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr
    document = json.loads(report.read_text())
    if attest:
        assert result.returncode == 2, result.stdout + result.stderr
        sign = next(s for s in document["stages"] if s["name"] == "sign")
        assert sign["code"] == "name-not-utf8" and "app-\\xff.bin" in sign["summary"]
        assert _signatures(built) == []
    else:
        assert result.returncode == 0, result.stdout + result.stderr
        assert "app-\\udcff.bin" in summary.read_text()
        assert len(document["signatures"]) == 2
