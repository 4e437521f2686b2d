"""Attacks on `sealgate verify` and the token checks through certificates, names, times and files.

Every PKI here is made at test time with cryptography; signatures are made in-process with the
test's own keys (Sealgate itself never uses key files) or by stock `openssl cms -sign` / `openssl
ts -reply`, and judged by the real CLI. Each attack asserts the exit code and the reason; the
controls show that the legitimate layout of the same kind still verifies.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from asn1crypto import cms, core, parser, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sealgate.localpki import write_pem as pem
from sealgate.localpki import write_private_key as key_file
from signer.algorithms import scheme_for
from signer.cms import CadesBesBuilder, add_unsigned_attribute, to_asn1
from signer.cmsverify import TIMESTAMP_ATTRIBUTE, parse_signed_data
from signer.files import SIGNATURE_LIMIT
from tests.components.cli import openssl_cms_verify
from tests.components.hsm import HsmFixture
from tests.components.tsa import (
    ID_CT_TSTINFO,
    LocalTsa,
    TsaPki,
    openssl_ts_verify_token,
)

EKU = ExtendedKeyUsageOID
ANY_EKU = x509.ObjectIdentifier("2.5.29.37.0")
TIMEOUT = 180  # seconds: a hang fails the test; generous, as a loaded runner stalls
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def run(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real CLI, killed (and the test failed) if it does not finish in TIMEOUT."""
    return subprocess.run(
        [sys.executable, "-m", "sealgate", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        timeout=TIMEOUT,
        env=env,
    )


def _name(common_name: str, organization: str = "Sealgate Attack Lab") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_usage(*, ca: bool, signing: bool = True, non_repudiation: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=signing and not ca,
        content_commitment=non_repudiation,
        key_encipherment=not ca and not signing,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass
class Issued:
    """A certificate and its private key (the test's own, generated now)."""

    cert: x509.Certificate
    key: PrivateKey

    @property
    def subject(self) -> str:
        return self.cert.subject.rfc4514_string()

    def issue(
        self,
        common_name: str,
        *,
        ca: bool = False,
        eku: Sequence[x509.ObjectIdentifier] | None = None,
        eku_critical: bool = False,
        path_length: int | None = None,
        san: Sequence[x509.GeneralName] = (),
        name_constraints: x509.NameConstraints | None = None,
        key_usage: x509.KeyUsage | None = None,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        key: PrivateKey | None = None,
        subject: x509.Name | None = None,
    ) -> Issued:
        """A certificate issued by this one (a CA, or a leaf when `ca` is False)."""
        return _certificate(
            subject or _name(common_name),
            key or ec.generate_private_key(ec.SECP256R1()),
            self,
            ca=ca,
            eku=eku,
            eku_critical=eku_critical,
            path_length=path_length,
            san=san,
            name_constraints=name_constraints,
            key_usage=key_usage,
            not_before=not_before,
            not_after=not_after,
        )


def _certificate(
    subject: x509.Name,
    key: PrivateKey,
    issuer: Issued | None,
    *,
    ca: bool,
    eku: Sequence[x509.ObjectIdentifier] | None = None,
    eku_critical: bool = False,
    path_length: int | None = None,
    san: Sequence[x509.GeneralName] = (),
    name_constraints: x509.NameConstraints | None = None,
    key_usage: x509.KeyUsage | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> Issued:
    now = _now()
    signing_key = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(days=1))
        .not_valid_after(not_after or now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
        .add_extension(key_usage or _key_usage(ca=ca), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()),
            critical=False,
        )
    )
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=eku_critical)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(san)), critical=False)
    if name_constraints is not None:
        builder = builder.add_extension(name_constraints, critical=True)
    return Issued(builder.sign(signing_key, hashes.SHA256()), key)


def make_root(common_name: str = "Attack Lab Root", **kwargs: Any) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    return _certificate(_name(common_name), key, None, ca=True, **kwargs)


def openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["openssl", *map(str, args)], capture_output=True, text=True, check=False, timeout=TIMEOUT
    )
    assert result.returncode == 0, result.stderr
    return result


# --------------------------------------------------------------------------------------------
# Signing and timestamping with the test's own keys


@dataclass
class Lab:
    """One release directory: an artifact, and the trust roots the gate is given."""

    tmp: Path

    @property
    def artifact(self) -> Path:
        return self.tmp / "app-2.0.tar.gz"

    @property
    def p7s(self) -> Path:
        return self.tmp / "app-2.0.tar.gz.p7s"

    def sign(
        self,
        signer: Issued,
        chain: Sequence[x509.Certificate] = (),
        *,
        embed_signer: x509.Certificate | None = None,
        signing_time: bytes | None = None,
    ) -> Path:
        """A CAdES-BES .p7s over the artifact, as `sealgate sign` builds it (`signing_time`:
        the DER of another signingTime attribute)."""
        key = signer.key
        scheme = scheme_for(key.public_key())
        builder = CadesBesBuilder(
            scheme,
            to_asn1(embed_signer or signer.cert),
            [to_asn1(c) for c in chain],
            _now(),
        )
        if signing_time is not None:
            builder._fixed_attributes[1] = signing_time
        attributes = builder.signed_attributes(hashlib.sha256(self.artifact.read_bytes()).digest())
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        signature = key.sign(attributes, ec.ECDSA(hashes.SHA256()))
        self.p7s.write_bytes(builder.signed_data(attributes, signature))
        return self.p7s

    def verify(self, roots: Path, *extra: str | Path) -> subprocess.CompletedProcess[str]:
        return run("verify", "--trust-roots", roots, *extra, self.artifact)

    def signature_value(self) -> bytes:
        return parse_signed_data(self.p7s.read_bytes(), "p7s").signature

    def add_token(self, token: bytes) -> None:
        attribute = cms.CMSAttribute(
            {"type": TIMESTAMP_ATTRIBUTE, "values": [cms.ContentInfo.load(token)]}
        ).dump()
        self.p7s.write_bytes(add_unsigned_attribute(self.p7s.read_bytes(), attribute))


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    made = Lab(tmp_path)
    made.artifact.write_bytes(hashlib.shake_256(b"release").digest(20_000))
    return made


def failed_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stdout.splitlines() if line.startswith("FAILED ")]
    assert len(lines) == 1, result.stdout + result.stderr
    return lines[0]


def assert_blocked(
    result: subprocess.CompletedProcess[str],
    *reason: str,
    code: int = 1,
    reason_code: str | None = None,
) -> None:
    """Blocked with this exit code and these words; with `reason_code`, the same command run
    again with --json must report that stable code for the artifact."""
    assert result.returncode == code, result.stdout + result.stderr
    text = failed_line(result) if code == 1 else result.stdout + result.stderr
    for part in reason:
        assert part in text, text
    if reason_code is not None:
        args = [str(arg) for arg in result.args]
        at = args.index("verify") + 1
        again = subprocess.run(
            [*args[:at], "--json", *args[at:]],
            capture_output=True,
            text=True,
            check=False,
            timeout=TIMEOUT,
        )
        assert again.returncode == code, again.stdout + again.stderr
        [entry] = json.loads(again.stdout)["artifacts"]
        assert entry["code"] == reason_code, entry


def assert_verified(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 verified, 0 failed" in result.stdout, result.stdout


def make_token(
    tmp: Path,
    signed_value: bytes,
    tsa: Issued,
    certs: Sequence[x509.Certificate] | None = (),
    *,
    gen_time: dt.datetime | bytes | None = None,
) -> bytes:
    """A TimeStampToken over `signed_value` signed by `tsa` with stock `openssl cms -sign
    -cades` (so certificates `openssl ts -reply` refuses to sign with can be tried); `certs`
    None leaves every certificate out; `gen_time` as bytes is the raw GeneralizedTime."""
    fields: dict[str, Any] = {
        "version": "v1",
        "policy": "1.2.3.4.1",
        "message_imprint": {
            "hash_algorithm": {"algorithm": "sha256"},
            "hashed_message": hashlib.sha256(signed_value).digest(),
        },
        "serial_number": int.from_bytes(os.urandom(8), "big"),
        "gen_time": _now() if gen_time is None or isinstance(gen_time, bytes) else gen_time,
        "tsa": asn1_x509.GeneralName(
            name="directory_name", value=asn1_x509.Name.load(tsa.cert.subject.public_bytes())
        ),
    }
    tst = tsp.TSTInfo(fields)
    if isinstance(gen_time, bytes):
        tst["gen_time"] = core.GeneralizedTime.load(b"\x18" + bytes([len(gen_time)]) + gen_time)
    work = tmp / f"token-{os.urandom(4).hex()}"
    work.mkdir()
    (work / "tst.der").write_bytes(tst.dump())
    args: list[str | Path] = ["cms", "-sign", "-binary", "-nodetach", "-cades", "-nosmimecap"]
    args += ["-md", "sha256", "-econtent_type", ID_CT_TSTINFO, "-outform", "DER"]
    args += ["-signer", pem(work / "tsa.pem", tsa.cert), "-inkey", key_file(work / "k", tsa.key)]
    if certs is None:
        args += ["-nocerts"]
    elif certs:
        args += ["-certfile", pem(work / "chain.pem", *certs)]
    args += ["-in", work / "tst.der", "-out", work / "token.der"]
    openssl(*args)
    return (work / "token.der").read_bytes()


def tsa_leaf(issuer: Issued, name: str = "Attack Lab TSA", **kwargs: Any) -> Issued:
    options: dict[str, Any] = {"eku": [EKU.TIME_STAMPING], "eku_critical": True}
    options["key_usage"] = _key_usage(ca=False, non_repudiation=True)
    options.update(kwargs)
    return issuer.issue(name, **options)


# --------------------------------------------------------------------------------------------
# 1. Intermediate CAs: the CA/Browser Forum code-signing profile


@pytest.mark.parametrize(
    "eku",
    [None, [EKU.CODE_SIGNING], [ANY_EKU], [EKU.CODE_SIGNING, EKU.TIME_STAMPING]],
    ids=["no-eku", "codeSigning", "anyExtendedKeyUsage", "codeSigning-and-timeStamping"],
)
def test_control_an_intermediate_that_may_issue_code_signing_verifies(
    lab: Lab, eku: list[x509.ObjectIdentifier] | None
) -> None:
    """The usual public layout (root -> codeSigning intermediate -> leaf) must pass."""
    root = make_root()
    intermediate = root.issue("Attack Lab Code Signing CA", ca=True, path_length=0, eku=eku)
    leaf = intermediate.issue("Release signer", eku=[EKU.CODE_SIGNING])
    lab.sign(leaf, [intermediate.cert])
    roots = pem(lab.tmp / "root.pem", root.cert)
    assert_verified(lab.verify(roots))
    stock = openssl_cms_verify(lab.p7s, lab.artifact, roots)
    assert stock.returncode == 0, stock.stderr


@pytest.mark.parametrize(
    ("eku", "named"),
    [([EKU.CLIENT_AUTH], "clientAuth"), ([EKU.TIME_STAMPING], "timeStamping")],
    ids=["clientAuth-only", "timeStamping-only"],
)
def test_an_intermediate_whose_eku_excludes_code_signing_cannot_issue_signers(
    lab: Lab, eku: list[x509.ObjectIdentifier], named: str
) -> None:
    root = make_root()
    intermediate = root.issue("Attack Lab Client CA", ca=True, eku=eku)
    leaf = intermediate.issue("Release signer", eku=[EKU.CODE_SIGNING])
    lab.sign(leaf, [intermediate.cert])
    assert_blocked(
        lab.verify(pem(lab.tmp / "root.pem", root.cert)),
        f"CA {intermediate.subject!r} may not issue codeSigning certificates",
        f"its extended key usage is {named}",
        reason_code="untrusted-chain",
    )


def test_a_nested_intermediate_excluding_code_signing_breaks_the_chain_anywhere(lab: Lab) -> None:
    """The EKU nests: a clientAuth-only CA above a codeSigning CA still excludes code signing."""
    root = make_root()
    upper = root.issue("Attack Lab Upper CA", ca=True, eku=[EKU.CLIENT_AUTH])
    lower = upper.issue("Attack Lab Lower CA", ca=True, eku=[EKU.CODE_SIGNING])
    leaf = lower.issue("Release signer", eku=[EKU.CODE_SIGNING])
    lab.sign(leaf, [lower.cert, upper.cert])
    assert_blocked(
        lab.verify(pem(lab.tmp / "root.pem", root.cert)),
        f"CA {upper.subject!r} may not issue codeSigning certificates",
        reason_code="untrusted-chain",
    )


def test_a_trust_root_whose_eku_excludes_code_signing_anchors_no_signer(lab: Lab) -> None:
    root = make_root(eku=[EKU.SERVER_AUTH])
    leaf = root.issue("Release signer", eku=[EKU.CODE_SIGNING])
    lab.sign(leaf)
    assert_blocked(
        lab.verify(pem(lab.tmp / "root.pem", root.cert)),
        f"CA {root.subject!r} may not issue codeSigning certificates",
        reason_code="untrusted-chain",
    )


def test_an_expired_intermediate_is_named_with_its_dates(lab: Lab) -> None:
    root = make_root()
    now = _now()
    intermediate = root.issue(
        "Attack Lab Old CA",
        ca=True,
        not_before=now - dt.timedelta(days=30),
        not_after=now - dt.timedelta(days=2),
    )
    leaf = intermediate.issue("Release signer", eku=[EKU.CODE_SIGNING])
    lab.sign(leaf, [intermediate.cert])
    assert_blocked(
        lab.verify(pem(lab.tmp / "root.pem", root.cert)),
        f"intermediate CA {intermediate.subject!r} had expired at",
        reason_code="certificate-expired",
    )


# --------------------------------------------------------------------------------------------
# 2. Chain errors a release engineer can act on


def test_a_missing_intermediate_names_the_issuer_that_is_not_trusted(lab: Lab) -> None:
    root = make_root()
    intermediate = root.issue("Attack Lab Code Signing CA", ca=True)
    leaf = intermediate.issue("Release signer", eku=[EKU.CODE_SIGNING])
    lab.sign(leaf)  # the intermediate is left out of the .p7s
    result = lab.verify(pem(lab.tmp / "root.pem", root.cert))
    assert_blocked(
        result,
        f"no chain from {leaf.subject!r} to a trusted root: issuer {intermediate.subject!r} "
        "is not among the trust roots",
        reason_code="untrusted-chain",
    )
    assert "candidates exhausted" not in result.stdout
    assert "--trust-roots" not in result.stdout


def test_a_foreign_root_is_named(lab: Lab) -> None:
    root = make_root()
    intermediate = root.issue("Attack Lab Code Signing CA", ca=True)
    leaf = intermediate.issue("Release signer", eku=[EKU.CODE_SIGNING])
    lab.sign(leaf, [intermediate.cert])
    other = make_root("Somebody Else's Root")
    assert_blocked(
        lab.verify(pem(lab.tmp / "other.pem", other.cert)),
        f"no chain from {leaf.subject!r} to a trusted root (through {intermediate.subject!r})",
        f"issuer {root.subject!r} is not among the trust roots",
        reason_code="untrusted-chain",
    )


def test_a_chain_longer_than_the_limit_is_refused_with_its_reason(lab: Lab) -> None:
    root = make_root()
    chain = [root]
    for depth in range(9):
        chain.append(chain[-1].issue(f"Attack Lab CA level {depth}", ca=True))
    leaf = chain[-1].issue("Release signer", eku=[EKU.CODE_SIGNING])
    lab.sign(leaf, [c.cert for c in reversed(chain[1:])])
    result = lab.verify(pem(lab.tmp / "root.pem", root.cert))
    assert_blocked(
        result,
        f"no chain from {leaf.subject!r} to a trusted root within 8",
        reason_code="untrusted-chain",
    )
    assert "max depth" not in result.stdout


# --------------------------------------------------------------------------------------------
# 3. The signer certificate itself


def test_a_ca_certificate_cannot_be_the_signer(lab: Lab) -> None:
    root = make_root()
    signer = root.issue(
        "Release signer CA", ca=True, eku=[EKU.CODE_SIGNING], key_usage=_ca_and_signing()
    )
    lab.sign(signer)
    assert_blocked(
        lab.verify(pem(lab.tmp / "root.pem", root.cert)),
        f"certificate {signer.subject!r} is a CA certificate (basicConstraints CA:TRUE)",
        reason_code="no-codesigning",
    )


def _ca_and_signing() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def test_a_key_usage_without_digital_signature_cannot_sign(lab: Lab) -> None:
    root = make_root()
    signer = root.issue(
        "Release signer", eku=[EKU.CODE_SIGNING], key_usage=_key_usage(ca=False, signing=False)
    )
    lab.sign(signer)
    assert_blocked(
        lab.verify(pem(lab.tmp / "root.pem", root.cert)),
        f"certificate {signer.subject!r}: its keyUsage lacks digitalSignature",
        reason_code="no-codesigning",
    )


@pytest.mark.parametrize("defect", ["ca", "key-usage"])
def test_sign_refuses_such_a_certificate_before_signing(
    hsm: HsmFixture, tmp_path: Path, defect: str
) -> None:
    root = make_root()
    public_key = hsm.certs["ec256"].public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    holder = Issued(root.cert, root.key)
    cert = _certificate(
        _name("Release signer"),
        ec.generate_private_key(ec.SECP256R1()),
        holder,
        ca=defect == "ca",
        eku=[EKU.CODE_SIGNING],
        key_usage=_ca_and_signing() if defect == "ca" else _key_usage(ca=False, signing=False),
    ).cert
    # the same certificate, but for the token's key
    cert = (
        x509.CertificateBuilder(
            issuer_name=cert.issuer,
            subject_name=cert.subject,
            public_key=public_key,
            serial_number=cert.serial_number,
            not_valid_before=cert.not_valid_before_utc,
            not_valid_after=cert.not_valid_after_utc,
            extensions=list(cert.extensions),
        )
    ).sign(root.key, hashes.SHA256())
    artifact = tmp_path / "app.bin"
    artifact.write_bytes(b"payload")
    result = run(
        "sign", "--key", hsm.uri("ec256"), "--cert", pem(tmp_path / "c.pem", cert), artifact,
        env=hsm.env,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    reason = "is a CA certificate" if defect == "ca" else "its keyUsage lacks digitalSignature"
    assert reason in result.stderr
    assert not (tmp_path / "app.bin.p7s").exists()


# --------------------------------------------------------------------------------------------
# 4. The TSA certificate: timeStamping only, and critical


def _stamped(lab: Lab, tsa: Issued, certs: Sequence[x509.Certificate] | None, **kw: Any) -> None:
    lab.add_token(make_token(lab.tmp, lab.signature_value(), tsa, certs, **kw))


@pytest.fixture
def signed(lab: Lab) -> tuple[Lab, Path]:
    """The lab's artifact signed under a fresh code-signing root (returned as trust roots)."""
    root = make_root()
    lab.sign(root.issue("Release signer", eku=[EKU.CODE_SIGNING]))
    return lab, pem(lab.tmp / "root.pem", root.cert)


def test_a_tsa_certificate_with_a_second_usage_is_refused(signed: tuple[Lab, Path]) -> None:
    lab, roots = signed
    tsa_root = make_root("Attack Lab TSA Root")
    tsa = tsa_leaf(tsa_root, eku=[EKU.TIME_STAMPING, EKU.CODE_SIGNING])
    _stamped(lab, tsa, [])
    tsa_roots = pem(lab.tmp / "tsa-root.pem", tsa_root.cert)
    assert_blocked(
        lab.verify(roots, "--tsa-roots", tsa_roots, "--require-timestamp"),
        "timestamp not accepted",
        "timeStamping must be its only extended key usage (RFC 3161 section 2.3), it also has "
        "codeSigning",
        reason_code="timestamp-untrusted",
    )
    # stock OpenSSL refuses it as well
    token = parse_signed_data(lab.p7s.read_bytes(), "p7s").timestamp_tokens[0]
    stock = openssl_ts_verify_token(token, lab.signature_value(), tsa_roots)
    assert stock.returncode != 0


def test_a_tsa_certificate_with_a_non_critical_usage_is_refused(signed: tuple[Lab, Path]) -> None:
    lab, roots = signed
    tsa_root = make_root("Attack Lab TSA Root")
    _stamped(lab, tsa_leaf(tsa_root, eku_critical=False), [])
    assert_blocked(
        lab.verify(
            roots, "--tsa-roots", pem(lab.tmp / "t.pem", tsa_root.cert), "--require-timestamp"
        ),
        "timeStamping extended key usage is not marked critical",
        reason_code="timestamp-untrusted",
    )


def test_control_a_token_made_by_the_test_tsa_verifies(signed: tuple[Lab, Path]) -> None:
    """The token builder itself is honest: the same token with a proper TSA certificate passes."""
    lab, roots = signed
    tsa_root = make_root("Attack Lab TSA Root")
    _stamped(lab, tsa_leaf(tsa_root), [])
    result = lab.verify(
        roots, "--tsa-roots", pem(lab.tmp / "t.pem", tsa_root.cert), "--require-timestamp"
    )
    assert_verified(result)
    assert "timestamp 20" in result.stdout


# --------------------------------------------------------------------------------------------
# 8. Real TSA chains: root -> timeStamping intermediate -> TSA leaf


def test_control_a_public_tsa_style_chain_verifies(signed: tuple[Lab, Path]) -> None:
    """IdenTrust's layout: "TrustID Timestamping CA 3" (EKU timeStamping) issues the TSA."""
    lab, roots = signed
    tsa_root = make_root("Attack Lab TSA Root")
    intermediate = tsa_root.issue("Attack Lab Timestamping CA 3", ca=True, eku=[EKU.TIME_STAMPING])
    _stamped(lab, tsa_leaf(intermediate), [intermediate.cert])
    tsa_roots = pem(lab.tmp / "t.pem", tsa_root.cert)
    assert_verified(lab.verify(roots, "--tsa-roots", tsa_roots, "--require-timestamp"))


def test_a_tsa_chain_through_a_client_auth_ca_is_refused(signed: tuple[Lab, Path]) -> None:
    lab, roots = signed
    tsa_root = make_root("Attack Lab TSA Root")
    intermediate = tsa_root.issue("Attack Lab Client CA", ca=True, eku=[EKU.CLIENT_AUTH])
    _stamped(lab, tsa_leaf(intermediate), [intermediate.cert])
    assert_blocked(
        lab.verify(
            roots, "--tsa-roots", pem(lab.tmp / "t.pem", tsa_root.cert), "--require-timestamp"
        ),
        f"CA {intermediate.subject!r} may not issue timeStamping certificates",
        reason_code="timestamp-untrusted",
    )


def test_the_local_openssl_tsa_with_an_intermediate(
    hsm: HsmFixture, tsa_pki: TsaPki, tsas: dict[str, LocalTsa], tmp_path: Path
) -> None:
    """`openssl ts -reply -chain` with a timeStamping intermediate: sign and verify trust only
    the TSA root, and stock `openssl ts -verify` agrees."""
    artifact = tmp_path / "app.bin"
    artifact.write_bytes(b"release bytes")
    result = run(
        "sign", "--key", hsm.uri("ec256"), "--cert", hsm.cert_pems["ec256"],
        "--chain", hsm.chain_pem, "--tsa", tsas["chained"].url,
        "--tsa-roots", tsa_pki.root_pem, "--json", artifact, env=hsm.env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    [signed_artifact] = json.loads(result.stdout)["signed"]
    assert (
        signed_artifact["timestamp"]["tsa"] == tsa_pki.chained.certificate.subject.rfc4514_string()
    )
    p7s = tmp_path / "app.bin.p7s"
    message = parse_signed_data(p7s.read_bytes(), "p7s")
    [token] = message.timestamp_tokens
    stock = openssl_ts_verify_token(token, message.signature, tsa_pki.root_pem)
    assert stock.returncode == 0, stock.stderr
    verified = run(
        "verify", "--trust-roots", hsm.root_pem, "--tsa-roots", tsa_pki.root_pem,
        "--require-timestamp", artifact, env=hsm.env,
    )  # fmt: skip
    assert_verified(verified)
    assert "Sealgate Test TSA (chained)" in verified.stdout


def test_a_token_without_certificates_needs_tsa_certs(
    hsm: HsmFixture, tsa_pki: TsaPki, tsas: dict[str, LocalTsa], tmp_path: Path
) -> None:
    """A TSA that sends no certificate: sign fails closed without --tsa-certs, works with it,
    and verify needs the same bundle (which confers no trust: the roots still decide)."""
    artifact = tmp_path / "app.bin"
    artifact.write_bytes(b"release bytes")
    sign: list[str | Path] = ["sign", "--key", hsm.uri("ec256"), "--cert", hsm.cert_pems["ec256"]]
    sign += ["--chain", hsm.chain_pem, "--tsa", tsas["chained_no_certs"].url]
    sign += ["--tsa-roots", tsa_pki.root_pem, "--tsa-retries", "0"]
    refused = run(*sign, artifact, env=hsm.env)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "certificate is not in the signature" in refused.stderr
    assert not (tmp_path / "app.bin.p7s").exists()

    _ok = run(*sign, "--tsa-certs", tsa_pki.chained_certs_pem, artifact, env=hsm.env)
    assert _ok.returncode == 0, _ok.stdout + _ok.stderr
    message = parse_signed_data((tmp_path / "app.bin.p7s").read_bytes(), "p7s")
    [token] = message.timestamp_tokens
    assert not cms.ContentInfo.load(token)["content"]["certificates"]
    stock = openssl_ts_verify_token(
        token, message.signature, tsa_pki.root_pem, untrusted=tsa_pki.chained_certs_pem
    )
    assert stock.returncode == 0, stock.stderr

    verify: list[str | Path] = ["verify", "--trust-roots", hsm.root_pem]
    verify += ["--tsa-roots", tsa_pki.root_pem, "--require-timestamp"]
    assert_verified(run(*verify, "--tsa-certs", tsa_pki.chained_certs_pem, artifact))
    assert_blocked(
        run(*verify, artifact),
        "timestamp not accepted",
        "certificate is not in the signature",
        reason_code="timestamp-untrusted",
    )
    # the bundle is untrusted: with the TSA root missing from --tsa-roots it proves nothing
    other_roots = pem(tmp_path / "other.pem", make_root("Not the TSA root").cert)
    assert_blocked(
        run(
            "verify", "--trust-roots", hsm.root_pem, "--tsa-roots", other_roots,
            "--require-timestamp", "--tsa-certs", tsa_pki.chained_certs_pem, artifact,
        ),
        "timestamp not accepted",
        "is not among the TSA roots",
        reason_code="timestamp-untrusted",
    )  # fmt: skip


def test_timestamp_command_takes_tsa_certs(
    tsa_pki: TsaPki, tsas: dict[str, LocalTsa], signed: tuple[Lab, Path]
) -> None:
    lab, roots = signed
    stamp: list[str | Path] = ["timestamp", "--tsa", tsas["chained_no_certs"].url]
    stamp += ["--tsa-roots", tsa_pki.root_pem, "--tsa-retries", "0"]
    refused = run(*stamp, lab.p7s)
    assert refused.returncode == 3 and "certificate is not in the signature" in refused.stderr
    done = run(*stamp, "--tsa-certs", tsa_pki.chained_certs_pem, lab.p7s)
    assert done.returncode == 0, done.stdout + done.stderr
    assert_verified(
        lab.verify(
            roots, "--tsa-roots", tsa_pki.root_pem, "--tsa-certs", tsa_pki.chained_certs_pem,
            "--require-timestamp",
        )
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# 7 and 9. Signatures made by stock `openssl cms -sign`


@dataclass
class OpensslSigner:
    root: Path
    cert: Path
    key: Path
    chain: Path


def _openssl_signer(tmp: Path, key: PrivateKey) -> OpensslSigner:
    root = make_root()
    intermediate = root.issue("Attack Lab Code Signing CA", ca=True, eku=[EKU.CODE_SIGNING])
    leaf = intermediate.issue("OpenSSL signer", eku=[EKU.CODE_SIGNING], key=key)
    return OpensslSigner(
        root=pem(tmp / "root.pem", root.cert),
        cert=pem(tmp / "leaf.pem", leaf.cert),
        key=key_file(tmp / "leaf.key", key),
        chain=pem(tmp / "chain.pem", intermediate.cert),
    )


def _openssl_sign(lab: Lab, signer: OpensslSigner, *extra: str) -> None:
    openssl(
        "cms", "-sign", "-binary", "-outform", "DER", "-md", "sha256",
        "-signer", signer.cert, "-inkey", signer.key, *extra, "-certfile", signer.chain,
        "-in", lab.artifact, "-out", lab.p7s,
    )  # fmt: skip


def test_openssl_cms_sign_with_cades_passes_the_gate(lab: Lab) -> None:
    signer = _openssl_signer(lab.tmp, ec.generate_private_key(ec.SECP256R1()))
    _openssl_sign(lab, signer, "-cades")
    assert_verified(lab.verify(signer.root))


def test_openssl_cms_sign_without_cades_is_refused_for_its_missing_ess_binding(lab: Lab) -> None:
    signer = _openssl_signer(lab.tmp, ec.generate_private_key(ec.SECP256R1()))
    _openssl_sign(lab, signer)
    assert_blocked(
        lab.verify(signer.root),
        "no signingCertificate attribute binds the certificate",
        reason_code="ess-binding-missing",
    )


def _pss_params(p7s: Path) -> Any:
    info = cms.ContentInfo.load(p7s.read_bytes())
    algorithm = info["content"]["signer_infos"][0]["signature_algorithm"]
    assert algorithm["algorithm"].native == "rsassa_pss"
    return algorithm["parameters"]


@pytest.mark.parametrize(
    ("options", "salt"),
    [((), 222), (("-keyopt", "rsa_pss_saltlen:max"), 222), (("-keyopt", "rsa_pss_saltlen:0"), 0)],
    ids=["openssl-default", "max", "zero"],
)
def test_rsassa_pss_with_any_salt_length_verifies(
    lab: Lab, options: tuple[str, ...], salt: int
) -> None:
    """Stock `openssl cms -sign -keyopt rsa_padding_mode:pss` uses the longest salt (222 bytes
    for RSA-2048 with SHA-256); the salt length is read from the signature's parameters."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signer = _openssl_signer(lab.tmp, key)
    _openssl_sign(lab, signer, "-cades", "-keyopt", "rsa_padding_mode:pss", *options)
    assert _pss_params(lab.p7s)["salt_length"].native == salt
    assert_verified(lab.verify(signer.root))


def _edit_pss(p7s: Path, field: str, value: Any) -> None:
    """Change one RSASSA-PSS parameter: signatureAlgorithm is not covered by the signature."""
    info = cms.ContentInfo.load(p7s.read_bytes())
    algorithm = info["content"]["signer_infos"][0]["signature_algorithm"]
    params = algorithm["parameters"].copy()
    params[field] = value
    info["content"]["signer_infos"][0]["signature_algorithm"] = {
        "algorithm": "rsassa_pss",
        "parameters": params,
    }
    p7s.write_bytes(info.dump(force=True))


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("trailer_field", 2, "RSASSA-PSS trailerField 2 is not 1"),
        ("salt_length", 223, "RSASSA-PSS salt length 223 does not fit a 2048-bit key"),
        ("salt_length", 100, "the signature does not verify"),
    ],
    ids=["trailer-field-2", "salt-too-long-for-the-key", "salt-length-lied-about"],
)
def test_rsassa_pss_parameters_that_do_not_fit_are_refused(
    lab: Lab, field: str, value: int, reason: str
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signer = _openssl_signer(lab.tmp, key)
    _openssl_sign(lab, signer, "-cades", "-keyopt", "rsa_padding_mode:pss")
    _edit_pss(lab.p7s, field, value)
    assert_blocked(lab.verify(signer.root), reason)


# --------------------------------------------------------------------------------------------
# 5. Typed identities


@pytest.fixture
def named(lab: Lab) -> tuple[Lab, Path, Issued]:
    """A signer whose subjectAltName holds an e-mail address, a DNS name and a URI."""
    root = make_root()
    leaf = root.issue(
        "Release Bot",
        eku=[EKU.CODE_SIGNING],
        san=[
            x509.RFC822Name("Release.Bot@Example.COM"),
            x509.DNSName("Builds.Example.com"),
            x509.UniformResourceIdentifier("https://ci.example.com/release"),
        ],
    )
    lab.sign(leaf)
    return lab, pem(lab.tmp / "root.pem", root.cert), leaf


@pytest.mark.parametrize(
    "identity",
    [
        "subject:CN=Release Bot,O=Sealgate Attack Lab",
        "CN=Release Bot, O=Sealgate Attack Lab",  # bare: the subject DN, as before
        "email:Release.Bot@example.com",  # the domain compares case-insensitively
        "dns:builds.example.COM",
        "uri:https://ci.example.com/release",
    ],
)
def test_control_each_typed_identity_matches_its_own_kind(
    named: tuple[Lab, Path, Issued], identity: str
) -> None:
    lab, roots, _ = named
    assert_verified(lab.verify(roots, "--identity", identity))


@pytest.mark.parametrize(
    "identity",
    [
        "email:release.bot@example.com",  # the local part is case-sensitive
        "dns:example.com",  # the parent domain is not the name
        "uri:CN=Release Bot,O=Sealgate Attack Lab",
        "subject:CN=Release Bot",  # a part of the subject is not the subject
        "dns:ci.example.com",
    ],
)
def test_an_identity_of_one_kind_never_matches_another(
    named: tuple[Lab, Path, Issued], identity: str
) -> None:
    lab, roots, _ = named
    assert_blocked(
        lab.verify(roots, "--identity", identity),
        "is not an allowed identity",
        f"(allowed: {identity})",
        reason_code="identity-mismatch",
    )


def test_a_san_holding_the_text_of_another_kind_does_not_match_it(lab: Lab) -> None:
    """An attacker's certificate with a dNSName and a URI that spell the victim's e-mail and DN."""
    root = make_root()
    leaf = root.issue(
        "Mallory",
        eku=[EKU.CODE_SIGNING],
        san=[
            x509.DNSName("alice@example.com"),
            x509.UniformResourceIdentifier("CN=Alice,O=Sealgate Attack Lab"),
        ],
    )
    lab.sign(leaf)
    roots = pem(lab.tmp / "root.pem", root.cert)
    for identity in ("email:alice@example.com", "CN=Alice,O=Sealgate Attack Lab"):
        assert_blocked(
            lab.verify(roots, "--identity", identity),
            "is not an allowed identity",
            reason_code="identity-mismatch",
        )


@pytest.mark.parametrize(
    ("identity", "reason"),
    [
        ("alice@example.com", "not an RFC 4514 subject DN"),
        ("https://ci.example.com/", "not an RFC 4514 subject DN"),
        ("email:not-an-address", "not a valid email value"),
        ("dns:", "not a valid dns value"),
    ],
)
def test_an_unparseable_identity_is_a_usage_error(
    named: tuple[Lab, Path, Issued], identity: str, reason: str
) -> None:
    lab, roots, _ = named
    result = lab.verify(roots, "--identity", identity)
    assert result.returncode == 2, result.stdout + result.stderr
    assert reason in result.stderr


# --------------------------------------------------------------------------------------------
# 6. Time values


def _signing_time_attribute(raw: bytes) -> bytes:
    """DER of a signingTime attribute holding `raw` as a GeneralizedTime, byte for byte."""
    oid = cms.CMSAttributeType("signing_time").dump()
    value = parser.emit(0, 0, 24, raw)  # universal, primitive, GeneralizedTime
    return bytes(parser.emit(0, 1, 16, oid + parser.emit(0, 1, 17, value)))


@pytest.mark.parametrize(
    "raw",
    [b"20260101120000", b"20260101120000+0200", b"20260101120000.5"],
    ids=["no-Z", "offset", "fraction-no-Z"],
)
def test_a_signing_time_without_z_is_malformed_not_a_crash(lab: Lab, raw: bytes) -> None:
    root = make_root()
    leaf = root.issue("Release signer", eku=[EKU.CODE_SIGNING])
    lab.sign(leaf, signing_time=_signing_time_attribute(raw))
    result = lab.verify(pem(lab.tmp / "root.pem", root.cert))
    assert_blocked(
        result,
        "malformed signingTime",
        "a UTC time ending in 'Z' is required",
        reason_code="malformed-signature",
    )
    assert "Traceback" not in result.stderr


def test_control_a_generalized_signing_time_with_z_and_fraction_verifies(lab: Lab) -> None:
    root = make_root()
    leaf = root.issue("Release signer", eku=[EKU.CODE_SIGNING])
    lab.sign(leaf)
    raw = _now().strftime("%Y%m%d%H%M%S").encode() + b".25Z"
    lab.sign(leaf, signing_time=_signing_time_attribute(raw))
    result = run(
        "verify", "--trust-roots", pem(lab.tmp / "r.pem", root.cert), "--json", lab.artifact
    )
    assert result.returncode == 0, result.stdout + result.stderr
    [report] = json.loads(result.stdout)["artifacts"]
    assert report["signing_time"].endswith(".250000+00:00")


@pytest.mark.parametrize(
    "raw",
    [b"20260101120000", b"20260101120000+0100", b"20260101120000.123"],
    ids=["no-Z", "offset", "fraction-no-Z"],
)
def test_a_gen_time_without_z_is_malformed_not_a_type_error(
    signed: tuple[Lab, Path], raw: bytes
) -> None:
    lab, roots = signed
    tsa_root = make_root("Attack Lab TSA Root")
    _stamped(lab, tsa_leaf(tsa_root), [], gen_time=raw)
    result = lab.verify(
        roots, "--tsa-roots", pem(lab.tmp / "t.pem", tsa_root.cert), "--require-timestamp"
    )
    assert_blocked(
        result, "timestamp not accepted", "malformed genTime", reason_code="timestamp-untrusted"
    )
    assert "TypeError" not in result.stdout + result.stderr


def test_control_a_gen_time_with_fractions_and_z_verifies(signed: tuple[Lab, Path]) -> None:
    lab, roots = signed
    tsa_root = make_root("Attack Lab TSA Root")
    raw = _now().strftime("%Y%m%d%H%M%S").encode() + b".123Z"
    _stamped(lab, tsa_leaf(tsa_root), [], gen_time=raw)
    result = lab.verify(
        roots, "--tsa-roots", pem(lab.tmp / "t.pem", tsa_root.cert), "--require-timestamp"
    )
    assert_verified(result)
    assert ".123000+00:00" in result.stdout


@pytest.mark.parametrize(
    ("at", "code", "reason"),
    [
        ("9999-12-31T23:59:59Z", 1, "had expired at 9999-12-31T23:59:59Z"),
        ("0001-01-01T00:00:00Z", 1, "was not yet valid at 0001-01-01T00:00:00Z"),
        ("10000-01-01T00:00:00Z", 2, "not an ISO 8601 time"),
        ("2026-13-01", 2, "not an ISO 8601 time"),
    ],
)
def test_at_far_away_is_judged_or_refused(
    signed: tuple[Lab, Path], at: str, code: int, reason: str
) -> None:
    lab, roots = signed
    result = lab.verify(roots, "--at", at)
    assert_blocked(result, reason, code=code)
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------------------------
# 10. Hostile files at the gate


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("where", ["p7s", "trust-roots", "crl", "tsa-roots", "tsa-certs"])
@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_a_special_file_as_gate_input_is_refused_at_once(
    signed: tuple[Lab, Path], where: str, kind: str
) -> None:
    lab, roots = signed
    hostile = _fifo(lab.tmp / "hostile") if kind == "fifo" else Path("/dev/zero")
    options: list[str | Path] = []
    if where == "p7s":
        lab.p7s.unlink()
        if kind == "fifo":
            os.rename(hostile, lab.p7s)
        else:
            lab.p7s.symlink_to(hostile)
    elif where == "trust-roots":
        roots = hostile
    else:
        options = [f"--{where}", hostile]
    result = lab.verify(roots, *options)  # a hang here is a TimeoutExpired: the test fails
    assert result.returncode == 2, result.stdout + result.stderr
    text = result.stdout + result.stderr
    expected = "a FIFO" if kind == "fifo" else "a character device"
    assert f"{expected}, not a regular file" in text, text
    assert "Traceback" not in text


def test_a_fifo_artifact_is_refused_at_once(signed: tuple[Lab, Path]) -> None:
    lab, roots = signed
    lab.artifact.unlink()
    _fifo(lab.artifact)
    result = lab.verify(roots)
    assert_blocked(result, "is a FIFO, not a regular file", code=2, reason_code="not-a-file")


def test_an_oversized_signature_file_is_refused_unread(signed: tuple[Lab, Path]) -> None:
    lab, roots = signed
    with lab.p7s.open("r+b") as stream:
        stream.truncate(SIGNATURE_LIMIT + 1)  # sparse: costs no disk
    result = lab.verify(roots)
    assert_blocked(
        result,
        "signature",
        f"more than the {SIGNATURE_LIMIT} allowed",
        code=2,
        reason_code="file-too-large",
    )


def test_a_fifo_signature_given_to_timestamp_is_refused(
    tsa_pki: TsaPki, tsas: dict[str, LocalTsa], tmp_path: Path
) -> None:
    fifo = _fifo(tmp_path / "app.p7s")
    result = run("timestamp", "--tsa", tsas["good"].url, "--tsa-roots", tsa_pki.root_pem, fifo)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "a FIFO, not a regular file" in result.stderr


def test_a_fifo_certificate_given_to_sign_is_refused(hsm: HsmFixture, tmp_path: Path) -> None:
    artifact = tmp_path / "app.bin"
    artifact.write_bytes(b"payload")
    fifo = _fifo(tmp_path / "cert.pem")
    result = run("sign", "--key", hsm.uri("ec256"), "--cert", fifo, artifact, env=hsm.env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "a FIFO, not a regular file" in result.stderr


def test_a_pem_signature_is_refused_with_the_conversion(signed: tuple[Lab, Path]) -> None:
    lab, roots = signed
    der = lab.p7s.read_bytes()
    body = base64.encodebytes(der).decode()
    lab.p7s.write_text(f"-----BEGIN CMS-----\n{body}-----END CMS-----\n")
    assert_blocked(
        lab.verify(roots),
        "DER expected, this is PEM",
        "openssl cms -cmsout",
        code=2,  # the right signature in the wrong encoding: unusable as given
        reason_code="signature-is-pem",
    )


# --------------------------------------------------------------------------------------------
# 11. TSA URLs with credentials


class _Recorder(BaseHTTPRequestHandler):
    """Answers 503 to every query and keeps what it was sent."""

    seen: ClassVar[list[tuple[str, str | None]]] = []

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).seen.append((self.path, self.headers.get("Authorization")))
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[tuple[str, str | None]]]]:
    class Handler(_Recorder):
        seen: ClassVar[list[tuple[str, str | None]]] = []

    handler = Handler
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", handler.seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


PASSWORD = "hunter2-s3cret"
TOKEN = "tok-9f8e7d"


def test_tsa_credentials_travel_in_a_header_and_never_reach_output(
    signed: tuple[Lab, Path],
    tsa_pki: TsaPki,
    recorder: tuple[str, list[tuple[str, str | None]]],
) -> None:
    lab, _ = signed
    address, seen = recorder
    url = f"http://stamper:{PASSWORD}@{address}/tsa?token={TOKEN}&profile=ci"
    result = run(
        "timestamp", "--tsa", url, "--tsa-roots", tsa_pki.root_pem, "--tsa-retries", "1",
        "--json", lab.p7s,
    )  # fmt: skip
    assert result.returncode == 3, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert PASSWORD not in output and TOKEN not in output, output
    assert f"http://{address}/tsa?token=REDACTED&profile=ci: HTTP 503" in result.stderr
    # the TSA got the credentials beside the URL: user info as HTTP Basic, never in the request
    expected = "Basic " + base64.b64encode(f"stamper:{PASSWORD}".encode()).decode()
    assert seen and all(auth == expected for _, auth in seen), seen
    assert all("stamper" not in path and PASSWORD not in path for path, _ in seen)


def test_a_tsa_url_with_credentials_is_redacted_in_the_sign_report(
    hsm: HsmFixture, tsa_pki: TsaPki, tsas: dict[str, LocalTsa], tmp_path: Path
) -> None:
    artifact = tmp_path / "app.bin"
    artifact.write_bytes(b"payload")
    host = tsas["good"].url.removeprefix("http://")
    url = f"http://stamper:{PASSWORD}@{host}?access_token={TOKEN}"
    result = run(
        "sign", "--key", hsm.uri("ec256"), "--cert", hsm.cert_pems["ec256"], "--chain",
        hsm.chain_pem, "--tsa", url, "--tsa-roots", tsa_pki.root_pem, "--json", artifact,
        env=hsm.env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert PASSWORD not in output and TOKEN not in output, output
    [report] = json.loads(result.stdout)["signed"]
    assert report["timestamp"]["tsa_url"] == f"http://{host}?access_token=REDACTED"


def test_a_malformed_tsa_url_with_credentials_is_refused_redacted(
    signed: tuple[Lab, Path], tsa_pki: TsaPki
) -> None:
    lab, _ = signed
    result = run(
        "timestamp", "--tsa", f"ftp://stamper:{PASSWORD}@tsa.example/", "--tsa-roots",
        tsa_pki.root_pem, lab.p7s,
    )  # fmt: skip
    assert result.returncode == 2
    assert "not an http(s) URL" in result.stderr
    assert PASSWORD not in result.stdout + result.stderr


# --------------------------------------------------------------------------------------------
# 12. The next attacks in the class


def test_a_path_length_zero_ca_cannot_have_a_sub_ca_issue_the_signer(lab: Lab) -> None:
    root = make_root()
    capped = root.issue("Attack Lab Capped CA", ca=True, path_length=0, eku=[EKU.CODE_SIGNING])
    rogue = capped.issue("Attack Lab Rogue Sub CA", ca=True)
    leaf = rogue.issue("Release signer", eku=[EKU.CODE_SIGNING])
    lab.sign(leaf, [rogue.cert, capped.cert])
    assert_blocked(
        lab.verify(pem(lab.tmp / "root.pem", root.cert)),
        f"no chain from {leaf.subject!r} to a trusted root at ",
        "a CA's pathLenConstraint does not allow a chain this long",
        reason_code="untrusted-chain",
    )


def _constrained(root: Issued) -> Issued:
    constraints = x509.NameConstraints(
        permitted_subtrees=[x509.DNSName("example.com")], excluded_subtrees=None
    )
    return root.issue("Attack Lab example.com CA", ca=True, name_constraints=constraints)


def test_a_name_constrained_intermediate_cannot_vouch_for_a_foreign_name(lab: Lab) -> None:
    root = make_root()
    intermediate = _constrained(root)
    leaf = intermediate.issue(
        "Release signer", eku=[EKU.CODE_SIGNING], san=[x509.DNSName("builds.evil.org")]
    )
    lab.sign(leaf, [intermediate.cert])
    assert_blocked(
        lab.verify(pem(lab.tmp / "root.pem", root.cert), "--identity", "dns:builds.evil.org"),
        f"no chain from {leaf.subject!r} to a trusted root at ",
        "a name of the certificate is outside a CA's nameConstraints",
        reason_code="untrusted-chain",
    )


def test_control_a_name_constrained_intermediate_vouches_inside_its_names(lab: Lab) -> None:
    root = make_root()
    intermediate = _constrained(root)
    leaf = intermediate.issue(
        "Release signer", eku=[EKU.CODE_SIGNING], san=[x509.DNSName("builds.example.com")]
    )
    lab.sign(leaf, [intermediate.cert])
    result = lab.verify(
        pem(lab.tmp / "root.pem", root.cert), "--identity", "dns:builds.example.com"
    )
    assert_verified(result)


def test_control_a_cross_signed_root_verifies_from_either_anchor(lab: Lab) -> None:
    """A new root cross-signed by the old one: the .p7s carries the cross certificate."""
    old = make_root("Attack Lab Old Root")
    new = make_root("Attack Lab New Root")
    cross = old.issue("", ca=True, key=new.key, subject=new.cert.subject)
    intermediate = new.issue("Attack Lab Code Signing CA", ca=True, eku=[EKU.CODE_SIGNING])
    leaf = intermediate.issue("Release signer", eku=[EKU.CODE_SIGNING])
    lab.sign(leaf, [intermediate.cert, cross.cert])
    assert_verified(lab.verify(pem(lab.tmp / "old.pem", old.cert)))
    assert_verified(lab.verify(pem(lab.tmp / "new.pem", new.cert)))
    # the cross certificate grants nothing to a third root
    other = pem(lab.tmp / "other.pem", make_root("Attack Lab Other Root").cert)
    assert_blocked(lab.verify(other), "is not among the trust roots", reason_code="untrusted-chain")


def test_a_root_embedded_in_the_signature_is_not_trusted_for_being_there(lab: Lab) -> None:
    """The attacker ships its own "root" (named like the real one) inside the .p7s."""
    genuine = make_root("Attack Lab Root")
    fake = make_root("Attack Lab Root")
    leaf = fake.issue("Release signer", eku=[EKU.CODE_SIGNING])
    lab.sign(leaf, [fake.cert])
    result = lab.verify(pem(lab.tmp / "root.pem", genuine.cert))
    assert_blocked(
        result,
        f"no chain from {leaf.subject!r} to a trusted root",
        "has the name of a certificate among the trust roots, but its signature does not verify",
        reason_code="untrusted-chain",
    )
    stock = openssl_cms_verify(lab.p7s, lab.artifact, pem(lab.tmp / "root.pem", genuine.cert))
    assert stock.returncode != 0


def test_control_the_same_certificates_twice_change_nothing(lab: Lab) -> None:
    root = make_root()
    intermediate = root.issue("Attack Lab Code Signing CA", ca=True)
    leaf = intermediate.issue("Release signer", eku=[EKU.CODE_SIGNING])
    lab.sign(leaf, [intermediate.cert, intermediate.cert, leaf.cert, root.cert])
    assert_verified(lab.verify(pem(lab.tmp / "root.pem", root.cert, root.cert)))


def test_a_token_over_another_signature_value_is_refused(signed: tuple[Lab, Path]) -> None:
    lab, roots = signed
    tsa_root = make_root("Attack Lab TSA Root")
    tsa = tsa_leaf(tsa_root)
    lab.add_token(make_token(lab.tmp, b"another signature value", tsa, []))
    assert_blocked(
        lab.verify(
            roots, "--tsa-roots", pem(lab.tmp / "t.pem", tsa_root.cert), "--require-timestamp"
        ),
        "timestamp not accepted",
        "the token's message imprint is not over this signature",
        reason_code="timestamp-untrusted",
    )


def test_a_token_from_a_valid_tsa_outside_the_signer_validity_proves_nothing(lab: Lab) -> None:
    """The TSA was valid at genTime, but genTime is after the signer certificate expired."""
    root = make_root()
    now = _now()
    leaf = root.issue(
        "Release signer",
        eku=[EKU.CODE_SIGNING],
        not_before=now - dt.timedelta(days=10),
        not_after=now - dt.timedelta(days=1),
    )
    lab.sign(leaf)
    tsa_root = make_root("Attack Lab TSA Root")
    _stamped(lab, tsa_leaf(tsa_root), [])
    result = lab.verify(
        pem(lab.tmp / "root.pem", root.cert),
        "--tsa-roots",
        pem(lab.tmp / "t.pem", tsa_root.cert),
        "--require-timestamp",
    )
    assert_blocked(
        result,
        "signer certificate",
        "had expired at",
        "judged at the timestamp",
        reason_code="certificate-expired",
    )


def test_a_ca_signed_leaf_without_eku_nesting_in_a_tsa_chain_is_refused(
    signed: tuple[Lab, Path],
) -> None:
    """A code-signing intermediate may not issue a TSA (EKU nesting, the other purpose)."""
    lab, roots = signed
    tsa_root = make_root("Attack Lab TSA Root")
    intermediate = tsa_root.issue("Attack Lab Code CA", ca=True, eku=[EKU.CODE_SIGNING])
    _stamped(lab, tsa_leaf(intermediate), [intermediate.cert])
    assert_blocked(
        lab.verify(
            roots, "--tsa-roots", pem(lab.tmp / "t.pem", tsa_root.cert), "--require-timestamp"
        ),
        f"CA {intermediate.subject!r} may not issue timeStamping certificates",
        "its extended key usage is codeSigning",
        reason_code="timestamp-untrusted",
    )


def test_a_tsa_certificate_that_is_a_ca_is_refused(signed: tuple[Lab, Path]) -> None:
    lab, roots = signed
    tsa_root = make_root("Attack Lab TSA Root")
    tsa = tsa_leaf(tsa_root, ca=True, key_usage=_ca_and_signing())
    _stamped(lab, tsa, [])
    assert_blocked(
        lab.verify(
            roots, "--tsa-roots", pem(lab.tmp / "t.pem", tsa_root.cert), "--require-timestamp"
        ),
        "timestamp not accepted",
        f"certificate {tsa.subject!r} is a CA certificate",
        reason_code="timestamp-untrusted",
    )


def _crl_file(path: Path, issuer: Issued, *, next_update: dt.datetime) -> Path:
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.cert.subject)
        .last_update(next_update - dt.timedelta(days=7))
        .next_update(next_update)
        .sign(issuer.key, hashes.SHA256())
    )
    path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    return path


def test_an_out_of_date_crl_proves_nothing(lab: Lab) -> None:
    """A CRL past its nextUpdate may predate the revocation: replaying it must not pass."""
    root = make_root()
    leaf = root.issue("Release signer", eku=[EKU.CODE_SIGNING])
    lab.sign(leaf)
    roots = pem(lab.tmp / "root.pem", root.cert)
    stale = _crl_file(lab.tmp / "stale.crl", root, next_update=_now() - dt.timedelta(days=1))
    assert_blocked(
        lab.verify(roots, "--crl", stale),
        f"the CRL of {root.subject!r} is out of date",
        "fetch a current one",
        reason_code="crl-stale",
    )
    current = _crl_file(lab.tmp / "current.crl", root, next_update=_now() + dt.timedelta(days=1))
    assert_verified(lab.verify(roots, "--crl", current))


def test_a_tsa_certificate_whose_key_usage_cannot_sign_is_refused(
    signed: tuple[Lab, Path],
) -> None:
    lab, roots = signed
    tsa_root = make_root("Attack Lab TSA Root")
    tsa = tsa_leaf(tsa_root, key_usage=_key_usage(ca=False, signing=False))
    _stamped(lab, tsa, [])
    assert_blocked(
        lab.verify(
            roots, "--tsa-roots", pem(lab.tmp / "t.pem", tsa_root.cert), "--require-timestamp"
        ),
        "timestamp not accepted",
        f"certificate {tsa.subject!r}: its keyUsage lacks digitalSignature or nonRepudiation",
        reason_code="timestamp-untrusted",
    )


def test_an_expired_tsa_intermediate_is_named(signed: tuple[Lab, Path]) -> None:
    lab, roots = signed
    tsa_root = make_root("Attack Lab TSA Root")
    now = _now()
    intermediate = tsa_root.issue(
        "Attack Lab Timestamping CA 2",
        ca=True,
        eku=[EKU.TIME_STAMPING],
        not_before=now - dt.timedelta(days=30),
        not_after=now - dt.timedelta(days=1),
    )
    _stamped(lab, tsa_leaf(intermediate), [intermediate.cert])
    assert_blocked(
        lab.verify(
            roots, "--tsa-roots", pem(lab.tmp / "t.pem", tsa_root.cert), "--require-timestamp"
        ),
        "timestamp not accepted",
        f"intermediate CA {intermediate.subject!r} had expired at",
        reason_code="timestamp-untrusted",
    )
