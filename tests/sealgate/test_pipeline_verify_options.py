"""`sealgate run` takes the gate's options (`--crl`, `--level`, `--at`, `--identity`, ...) through
the same option group as `verify`: each reaches the verify stage, whose failure carries its code."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from tests.components.cli import sealgate
from tests.components.gitrepo import Repo
from tests.components.hsm import HsmFixture
from tests.sealgate.test_run import alice, repo  # noqa: F401 - the signed repository fixtures

LABEL = "ec256"


@pytest.fixture
def built(repo: Repo) -> Repo:  # noqa: F811 - the fixture imported above
    """The artifact present before the run (no build stage): untracked, declared by the glob."""
    (repo.path / "dist").mkdir()
    (repo.path / "dist" / "app.bin").write_bytes(b"the release\n")
    return repo


def _run(
    work: Repo, tmp_path: Path, hsm: HsmFixture, *args: str | Path, **env: str
) -> tuple[int, str, dict[str, Any]]:
    report = tmp_path / "report.json"
    result = sealgate(
        "run", "--repo", work.path, "--report", report, "--no-commits", "--no-attest",
        "--artifacts", "dist/*.bin", "--key", hsm.uri(LABEL), "--chain", hsm.chain_pem,
        "--trust-roots", hsm.root_pem, *args, env={**hsm.env, **env},
    )  # fmt: skip
    output = result.stdout + result.stderr
    document = json.loads(report.read_text()) if report.exists() else {}
    return result.returncode, output, document


def _stage(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(stage for stage in report["stages"] if stage["name"] == name)


def _revoking_crl(hsm: HsmFixture, tmp_path: Path) -> Path:
    """A CRL from the signer's issuing CA revoking the signer for key compromise."""
    now = dt.datetime.now(dt.UTC)
    revoked = (
        x509.RevokedCertificateBuilder()
        .serial_number(hsm.certs[LABEL].serial_number)
        .revocation_date(now - dt.timedelta(days=1))
        .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False)
        .build()
    )
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(hsm.ca.issuer.subject)
        .last_update(now - dt.timedelta(days=1))
        .next_update(now + dt.timedelta(days=7))
        .add_revoked_certificate(revoked)
        .sign(hsm.ca.issuer_key, hashes.SHA256())
    )
    path = tmp_path / "revoked.crl"
    path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    return path


def test_control_the_run_passes_with_the_signers_identity(
    built: Repo, tmp_path: Path, hsm: HsmFixture
) -> None:
    subject = hsm.certs[LABEL].subject.rfc4514_string()
    code, output, report = _run(built, tmp_path, hsm, "--identity", f"subject:{subject}")
    assert code == 0, output
    assert _stage(report, "verify")["status"] == "passed"
    assert _stage(report, "verify")["code"] is None and report["code"] is None


def test_an_identity_that_does_not_match_fails_the_verify_stage(
    built: Repo, tmp_path: Path, hsm: HsmFixture
) -> None:
    summary = tmp_path / "summary.md"
    code, output, report = _run(
        built, tmp_path, hsm, "--identity", "email:release@elsewhere.test",
        GITHUB_STEP_SUMMARY=str(summary),
    )  # fmt: skip
    assert code == 1, output
    assert "| verify | ❌ failed | `identity-mismatch` 0 verified, 1 failed" in summary.read_text()
    verify = _stage(report, "verify")
    assert verify["status"] == "failed" and verify["code"] == "identity-mismatch"
    assert [v["code"] for v in report["verify"]] == ["identity-mismatch"]
    assert report["code"] == "identity-mismatch"
    assert "verify   failed   [identity-mismatch]" in output  # the human stage line


def test_identity_from_the_environment_as_verify_reads_it(
    built: Repo, tmp_path: Path, hsm: HsmFixture
) -> None:
    code, output, report = _run(
        built, tmp_path, hsm, SEALGATE_IDENTITY="email:release@elsewhere.test"
    )
    assert code == 1, output
    assert _stage(report, "verify")["code"] == "identity-mismatch"


def test_a_crl_revoking_the_signer_fails_the_verify_stage(
    built: Repo, tmp_path: Path, hsm: HsmFixture
) -> None:
    code, output, report = _run(built, tmp_path, hsm, "--crl", _revoking_crl(hsm, tmp_path))
    assert code == 1, output
    assert _stage(report, "verify")["code"] == "key-compromised"
    assert _stage(report, "sign")["status"] == "passed"


@pytest.mark.slow
def test_level_audit_turns_the_revocation_into_a_warning(
    built: Repo, tmp_path: Path, hsm: HsmFixture
) -> None:
    crl = _revoking_crl(hsm, tmp_path)
    code, output, report = _run(built, tmp_path, hsm, "--crl", crl, "--level", "audit")
    assert code == 0, output
    (verdict,) = report["verify"]
    assert verdict["verified"] is True
    assert "key-compromised" in verdict["warning_codes"]
    # the same through the variable verify reads
    code, output, report = _run(built, tmp_path, hsm, "--crl", crl, SEALGATE_LEVEL="audit")
    assert code == 0, output


def test_at_reaches_the_verify_stage(built: Repo, tmp_path: Path, hsm: HsmFixture) -> None:
    """Without a timestamp, --at is the moment judged: before the certificate existed."""
    code, output, report = _run(built, tmp_path, hsm, "--at", "2001-01-01T00:00:00Z")
    assert code == 1, output
    verify = _stage(report, "verify")
    assert verify["status"] == "failed" and verify["code"]
    assert [v["code"] for v in report["verify"]] == [verify["code"]]
    assert "2001-01-01" in " ".join(verify["reasons"])


@pytest.mark.parametrize(
    ("args", "env", "code"),
    [
        (("--at", "yesterday"), {}, "bad-time"),
        ((), {"SEALGATE_AT": "yesterday"}, "bad-time"),
        ((), {"SEALGATE_LEVEL": "lenient"}, "bad-setting"),
        (("--identity", "subject:"), {}, None),
    ],
)
def test_a_bad_verify_option_is_exit_2_before_anything_is_signed(
    built: Repo,
    tmp_path: Path,
    hsm: HsmFixture,
    args: tuple[str, ...],
    env: dict[str, str],
    code: str | None,
) -> None:
    result, output, _ = _run(built, tmp_path, hsm, *args, **env)
    assert result == 2, output
    assert "sealgate: error: [" in output and "Traceback" not in output
    if code:
        assert f"[{code}]" in output
    assert not list(built.path.rglob("*.p7s"))


@pytest.mark.parametrize("setting", ["level: audit", "at: '2001-01-01T00:00:00Z'"])
def test_sealgate_yml_cannot_choose_how_leniently_the_gate_judges(
    built: Repo, tmp_path: Path, hsm: HsmFixture, setting: str
) -> None:
    """The file is part of the commits under test: a pusher must not pick audit or a past time."""
    built.write("sealgate.yml", setting + "\n")
    built.commit_ssh(None, "lenient")
    code, output, _ = _run(built, tmp_path, hsm)
    assert code == 2, output
    assert "sealgate.yml line 1" in output and "cannot be set in this file" in output
    assert not list(built.path.rglob("*.p7s"))
