"""`sealgate sign` through a real SoftHSM2 token; every signature is judged by stock OpenSSL."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from asn1crypto import cms, tsp
from cryptography.hazmat.primitives import serialization

from signer.algorithms import KeyKind, SignatureScheme, verify_signature
from tests.components.cli import flip_byte, openssl_cms_verify, sealgate
from tests.components.hsm import HsmFixture, RemoteHsm


def _artifact(tmp_path: Path, name: str = "release.tar.gz", size: int = 100_000) -> Path:
    path = tmp_path / name
    path.write_bytes(hashlib.shake_256(name.encode()).digest(size))
    return path


def _signer_info(p7s: Path) -> tuple[cms.SignedData, cms.SignerInfo]:
    info = cms.ContentInfo.load(p7s.read_bytes())
    signed = info["content"]
    return signed, signed["signer_infos"][0]


@pytest.mark.parametrize(
    ("label", "extra", "digest", "signature_algorithm"),
    [
        ("ec256", [], "sha256", "sha256_ecdsa"),
        ("ec384", [], "sha384", "sha384_ecdsa"),
        ("rsa2048", [], "sha256", "sha256_rsa"),
        ("rsa3072", ["--rsa-padding", "pss"], "sha256", "rsassa_pss"),
        ("rsa4096", ["--digest", "sha512"], "sha512", "sha512_rsa"),
        ("rsa3072", ["--rsa-padding", "pss", "--digest", "sha384"], "sha384", "rsassa_pss"),
    ],
)
def test_openssl_verifies_every_key_type_and_rejects_a_flipped_byte(
    hsm: HsmFixture,
    tmp_path: Path,
    label: str,
    extra: list[str],
    digest: str,
    signature_algorithm: str,
) -> None:
    artifact = _artifact(tmp_path)
    result = sealgate(
        "sign",
        "--key",
        hsm.uri(label),
        "--cert",
        hsm.cert_pems[label],
        "--chain",
        hsm.chain_pem,
        *extra,
        artifact,
        env=hsm.env,
    )
    assert result.returncode == 0, result.stderr
    p7s = tmp_path / "release.tar.gz.p7s"
    verified = openssl_cms_verify(p7s, artifact, hsm.root_pem)
    assert verified.returncode == 0, verified.stderr
    assert "Verification successful" in verified.stderr

    der = p7s.read_bytes()
    assert cms.ContentInfo.load(der).dump(force=True) == der  # canonical DER, as re-encoded
    signed, signer = _signer_info(p7s)
    assert signed["encap_content_info"]["content"].native is None  # detached
    assert signer["digest_algorithm"]["algorithm"].native == digest
    assert signer["signature_algorithm"]["algorithm"].native == signature_algorithm
    attrs = {a["type"].native: a["values"][0] for a in signer["signed_attrs"]}
    assert set(attrs) == {
        "content_type",
        "signing_time",
        "message_digest",
        "signing_certificate_v2",
    }
    assert attrs["message_digest"].native == hashlib.new(digest, artifact.read_bytes()).digest()
    ess = attrs["signing_certificate_v2"]["certs"][0]
    assert (
        ess["cert_hash"].native
        == hashlib.sha256(hsm.certs[label].public_bytes(serialization.Encoding.DER)).digest()
    )
    # signer certificate plus the chain, so a verifier needs only the root
    assert len(signed["certificates"]) == 2

    flip_byte(artifact, 5000)
    tampered = openssl_cms_verify(p7s, artifact, hsm.root_pem)
    assert tampered.returncode != 0
    assert "content verify error" in tampered.stderr


def test_untrusted_root_is_refused_by_openssl(hsm: HsmFixture, tmp_path: Path) -> None:
    from sealgate.localpki import LocalCA, write_pem

    artifact = _artifact(tmp_path)
    result = sealgate(
        "sign", "--key", hsm.uri("ec256"), "--chain", hsm.chain_pem, artifact, env=hsm.env
    )
    assert result.returncode == 0, result.stderr
    other_root = write_pem(tmp_path / "other.pem", LocalCA(name="Someone else").root)
    assert openssl_cms_verify(tmp_path / "release.tar.gz.p7s", artifact, other_root).returncode != 0


def test_certificate_comes_from_the_token_when_cert_is_not_given(
    hsm: HsmFixture, tmp_path: Path
) -> None:
    artifact = _artifact(tmp_path)
    result = sealgate(
        "sign", "--key", hsm.uri("ec256"), "--chain", hsm.chain_pem, "--json", artifact, env=hsm.env
    )
    assert result.returncode == 0, result.stderr
    [entry] = json.loads(result.stdout)["signed"]
    assert (
        entry["certificate"]["sha256_fingerprint"]
        == hashlib.sha256(hsm.certs["ec256"].public_bytes(serialization.Encoding.DER)).hexdigest()
    )
    assert openssl_cms_verify(Path(entry["output"]), artifact, hsm.root_pem).returncode == 0


def test_ed25519_signs_rfc8419_cms(hsm: HsmFixture, tmp_path: Path) -> None:
    """OpenSSL 3.0 cannot sign or verify EdDSA in CMS, so this one is checked with cryptography."""
    artifact = _artifact(tmp_path)
    result = sealgate(
        "sign",
        "--key",
        hsm.uri("ed25519"),
        "--cert",
        hsm.cert_pems["ed25519"],
        artifact,
        env=hsm.env,
    )
    assert result.returncode == 0, result.stderr
    _, signer = _signer_info(tmp_path / "release.tar.gz.p7s")
    assert signer["digest_algorithm"]["algorithm"].native == "sha512"
    assert signer["signature_algorithm"]["algorithm"].native == "ed25519"
    attrs = {a["type"].native: a["values"][0].native for a in signer["signed_attrs"]}
    assert attrs["message_digest"] == hashlib.sha512(artifact.read_bytes()).digest()
    tbs = signer["signed_attrs"].untag().dump(force=True)
    verify_signature(
        hsm.certs["ed25519"].public_key(),
        signer["signature"].native,
        tbs,
        SignatureScheme(KeyKind.ED25519, "sha512"),
    )


def test_batch_json_report_and_out_dir(hsm: HsmFixture, tmp_path: Path) -> None:
    artifacts = [_artifact(tmp_path, f"pkg-{i}.whl", 1000 + i) for i in range(25)]
    out_dir = tmp_path / "signatures"
    result = sealgate(
        "sign",
        "--key",
        hsm.uri("ec384"),
        "--cert",
        hsm.cert_pems["ec384"],
        "--chain",
        hsm.chain_pem,
        "--out-dir",
        out_dir,
        "--json",
        *artifacts,
        env=hsm.env,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)["signed"]
    assert [Path(r["path"]) for r in report] == artifacts
    for artifact, entry in zip(artifacts, report, strict=True):
        assert entry["digest"] == {
            "algorithm": "sha384",
            "value": hashlib.sha384(artifact.read_bytes()).hexdigest(),
        }
        assert entry["key"] == "pkcs11:token=sealgate-test;object=ec384"
        assert entry["output"] == str(out_dir / f"{artifact.name}.p7s")
        assert openssl_cms_verify(Path(entry["output"]), artifact, hsm.root_pem).returncode == 0
    assert not list(tmp_path.glob("*.p7s"))


def test_remote_hsm_through_p11_kit_server(remote: RemoteHsm, tmp_path: Path) -> None:
    artifact = _artifact(tmp_path)
    hsm = remote.hsm
    result = sealgate(
        "sign", "--key", remote.uri("ec256"), "--chain", hsm.chain_pem, artifact, env=remote.env
    )
    assert result.returncode == 0, result.stderr
    assert (
        openssl_cms_verify(tmp_path / "release.tar.gz.p7s", artifact, hsm.root_pem).returncode == 0
    )
    rsa = sealgate(
        "sign",
        "--key",
        remote.uri("rsa3072"),
        "--cert",
        hsm.cert_pems["rsa3072"],
        "--rsa-padding",
        "pss",
        "--chain",
        hsm.chain_pem,
        "--out-dir",
        tmp_path / "rsa",
        artifact,
        env=remote.env,
    )
    assert rsa.returncode == 0, rsa.stderr
    assert (
        openssl_cms_verify(
            tmp_path / "rsa" / "release.tar.gz.p7s", artifact, hsm.root_pem
        ).returncode
        == 0
    )


def test_remote_hsm_down_is_an_infrastructure_failure(remote: RemoteHsm, tmp_path: Path) -> None:
    artifact = _artifact(tmp_path)
    remote.stop()
    try:
        result = sealgate("sign", "--key", remote.uri("ec256"), artifact, env=remote.env)
    finally:
        remote.start()
    assert result.returncode == 3, result.stderr
    assert "remote HSM" in result.stderr and str(remote.socket) in result.stderr
    assert list(tmp_path.iterdir()) == [artifact]


def test_ess_certificate_identifier_names_the_issuer(hsm: HsmFixture, tmp_path: Path) -> None:
    artifact = _artifact(tmp_path)
    assert sealgate("sign", "--key", hsm.uri("ec256"), artifact, env=hsm.env).returncode == 0
    _, signer = _signer_info(tmp_path / "release.tar.gz.p7s")
    attrs = {a["type"].native: a["values"][0] for a in signer["signed_attrs"]}
    ess: tsp.ESSCertIDv2 = attrs["signing_certificate_v2"]["certs"][0]
    issuer = ess["issuer_serial"]["issuer"][0].chosen
    assert issuer.native == signer["sid"].chosen["issuer"].native
    assert ess["issuer_serial"]["serial_number"].native == hsm.certs["ec256"].serial_number
