"""`sealgate keys inspect` and `sealgate keys csr` against the SoftHSM2 token, checked with OpenSSL."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.components.cli import sealgate
from tests.components.hsm import HsmFixture


def _spki_sha256(cert: x509.Certificate) -> str:
    der = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def test_inspect_reports_key_and_stored_certificate(hsm: HsmFixture) -> None:
    result = sealgate("keys", "inspect", "--json", hsm.uri("ec256"), env=hsm.env)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    cert = hsm.certs["ec256"]
    assert info["algorithm"] == "ecdsa-p256"
    assert info["public_key_sha256"] == _spki_sha256(cert)
    assert info["certificate"]["subject"] == cert.subject.rfc4514_string()
    assert info["certificate"]["serial"] == format(cert.serial_number, "x")
    assert "pin" not in result.stdout.lower()


@pytest.mark.parametrize(("label", "algorithm"), [("rsa3072", "rsa"), ("ec384", "ecdsa-p384")])
def test_inspect_human_output_without_certificate(
    hsm: HsmFixture, label: str, algorithm: str
) -> None:
    result = sealgate("keys", "inspect", hsm.uri(label), env=hsm.env)
    assert result.returncode == 0, result.stderr
    assert f"algorithm:   {algorithm}" in result.stdout
    assert "BEGIN PUBLIC KEY" in result.stdout
    assert "certificate: none stored with the key" in result.stdout


@pytest.mark.parametrize("label", ["ec256", "ec384", "rsa2048"])
def test_csr_is_signed_by_the_hsm_key(hsm: HsmFixture, tmp_path: Path, label: str) -> None:
    out = tmp_path / "req.pem"
    result = sealgate(
        "keys",
        "csr",
        hsm.uri(label),
        "--subject",
        "CN=Release signing,O=Example Corp",
        "--email",
        "release@example.com",
        "--out",
        out,
        env=hsm.env,
    )
    assert result.returncode == 0, result.stderr
    verified = subprocess.run(
        ["openssl", "req", "-verify", "-noout", "-in", str(out)], capture_output=True, text=True
    )
    assert verified.returncode == 0, verified.stderr
    csr = x509.load_pem_x509_csr(out.read_bytes())
    assert csr.is_signature_valid
    assert csr.subject.rfc4514_string() == "CN=Release signing,O=Example Corp"
    assert (
        _spki_sha256(hsm.certs[label])
        == hashlib.sha256(
            csr.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        ).hexdigest()
    )
    eku = csr.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CODE_SIGNING]
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.RFC822Name) == ["release@example.com"]


def test_csr_with_bad_subject(hsm: HsmFixture) -> None:
    result = sealgate("keys", "csr", hsm.uri("ec256"), "--subject", "not a name", env=hsm.env)
    assert result.returncode == 2
    assert "[bad-subject] --subject: subject 'not a name' is not an RFC 4514 name" in result.stderr


def test_demo_runs_the_main_job(tmp_path: Path) -> None:
    """The README's first command: a local token, CA and TSA; one signature OpenSSL verifies."""
    from sealgate.softhsm import softhsm_module
    from tests.components import require

    require(softhsm_module() is not None, "SoftHSM2")
    workdir = tmp_path / "demo"
    result = sealgate("demo", "--workdir", workdir)
    assert result.returncode == 0, result.stderr
    assert "openssl says: CMS Verification successful" in result.stdout
    assert (
        "local RFC 3161 TSA" in result.stdout and "sealgate verify says verified" in result.stdout
    )
    gate = sealgate(
        "verify", "--trust-roots", workdir / "root.pem", "--tsa-roots",
        workdir / "tsa" / "tsa-root.pem", "--require-timestamp", workdir / "sample-artifact.txt",
    )  # fmt: skip
    assert gate.returncode == 0, gate.stdout + gate.stderr
    assert (workdir / "sample-artifact.txt.p7s").is_file()
    pin = (workdir / "hsm" / "user.pin").read_text()
    assert pin not in result.stdout + result.stderr
    # running it again starts clean; a foreign folder is never wiped
    assert sealgate("demo", "--workdir", workdir).returncode == 0
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    refused = sealgate("demo", "--workdir", foreign)
    assert refused.returncode == 2 and "was not made by `sealgate demo`" in refused.stderr
    assert (foreign / "notes.txt").read_text() == "keep me"
