"""The gate's words and codes, in process: what a release engineer reads must be actionable
(no path-builder jargon, no CLI flag a library cannot know was used, no silently cut reason),
and every failure and warning carries the stable code the audit log keys on.
"""

from __future__ import annotations

import ast
import datetime as dt
import re
from pathlib import Path

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

from signer import chain as chain_module
from signer.certificates import CODE_SIGNING, TIME_STAMPING, load_certificates
from signer.chain import validate_path
from signer.cmsverify import SHORT_LIMIT, _short, parse_signed_data
from signer.dsse import open_envelope
from signer.errors import ConfigError, VerificationError
from signer.verify import Level, VerifyPolicy, load_crl, parse_identity, verify_artifact
from tests.adversarial.test_certificate_attacks import EKU, Lab, make_root

ROOT = Path(__file__).resolve().parents[2]
OWN_FILES = ["verify.py", "cmsverify.py", "chain.py", "certificates.py", "dsse.py"]


# --------------------------------------------------------------------------------------------
# A library's reason is shown whole


def test_a_long_library_reason_is_kept_whole_up_to_the_limit() -> None:
    reason = " ".join(f"word{i}" for i in range(50))  # ~340 characters: cut at 120 before
    assert 120 < len(reason) <= SHORT_LIMIT
    assert _short(ValueError(reason)) == reason


def test_a_reason_past_the_limit_is_cut_at_a_word_and_says_so() -> None:
    reason = " ".join(f"word{i}" for i in range(200))
    shown = _short(ValueError(reason))
    assert shown.endswith(" …") and len(shown) <= SHORT_LIMIT + 2
    kept = shown.removesuffix(" …").split(" ")
    assert kept == reason.split(" ")[: len(kept)]  # whole words only, in order


def test_a_multi_line_reason_becomes_one_line_without_losing_its_end() -> None:
    assert _short(ValueError("first part\n  and the end")) == "first part and the end"
    assert _short(ValueError()) == "ValueError"


def test_a_malformed_signature_shows_the_parsers_whole_reason() -> None:
    garbage = b"\x30\x82\x01\x00" + b"\x06\x09" + b"\x2a" * 40
    try:
        _ = cms.ContentInfo.load(garbage, strict=True).native
    except Exception as exc:  # the parser's own words, whatever it raises
        library = " ".join(str(exc).split())
    else:
        raise AssertionError("the garbage parsed")
    with pytest.raises(VerificationError) as caught:
        parse_signed_data(garbage, "app.p7s")
    assert caught.value.code == "malformed-signature"
    assert caught.value.message == f"app.p7s: malformed CMS signature ({library})"


# --------------------------------------------------------------------------------------------
# Chain errors in words


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (
            "validation failed: candidates exhausted: all candidates exhausted with no "
            "interior errors",
            "no issuer certificate in the signature or among the roots leads to a trusted root",
        ),
        ("validation failed: chain construction exceeds max depth", "longer than 8 certificates"),
        ("validation failed: path length constraint violated", "pathLenConstraint"),
        ("validation failed: no permitted name constraints matched SAN", "nameConstraints"),
        ("validation failed: RSA key is too weak", "RSA key under 2048 bits"),
    ],
)
def test_the_path_builders_phrases_become_actionable_words(raw: str, words: str) -> None:
    shown = chain_module._detail(raw)
    assert words in shown
    for jargon in ("candidates exhausted", "validation failed", "max depth", "interior errors"):
        assert jargon not in shown


def test_an_unknown_path_builder_reason_is_kept_and_framed() -> None:
    shown = chain_module._detail("validation failed: something new")
    assert shown == "the X.509 path rules refuse it (something new)"


def test_chain_errors_name_the_roots_in_words_and_carry_the_field() -> None:
    root, other = make_root("Messages Root"), make_root("Somebody Else")
    leaf = root.issue("Release signer", eku=[EKU.CODE_SIGNING])
    now = dt.datetime.now(dt.UTC)
    with pytest.raises(VerificationError) as caught:
        validate_path(leaf.cert, [], [other.cert], at=now, purpose=CODE_SIGNING)
    assert caught.value.code == "untrusted-chain"
    assert caught.value.field == "trust_roots"
    assert "is not among the trust roots" in caught.value.message
    assert "--" not in caught.value.message
    # a caller that still passes the flag's name gets words too, and the field
    tsa = root.issue("TSA", eku=[EKU.TIME_STAMPING], eku_critical=True)
    with pytest.raises(VerificationError) as caught:
        validate_path(
            tsa.cert, [], [other.cert], at=now, purpose=TIME_STAMPING, roots_name="--tsa-roots"
        )
    assert "is not among the TSA roots" in caught.value.message
    assert (caught.value.code, caught.value.field) == ("untrusted-chain", "tsa_roots")


def test_certificate_problems_carry_their_codes() -> None:
    root = make_root("Messages Root")
    no_eku = root.issue("Release signer")
    now = dt.datetime.now(dt.UTC)
    with pytest.raises(VerificationError) as caught:
        validate_path(no_eku.cert, [], [root.cert], at=now, purpose=CODE_SIGNING)
    assert caught.value.code == "no-codesigning"
    leaf = root.issue("Release signer", eku=[EKU.CODE_SIGNING])
    for moment, code in [
        (leaf.cert.not_valid_after_utc + dt.timedelta(days=1), "certificate-expired"),
        (leaf.cert.not_valid_before_utc - dt.timedelta(days=1), "certificate-not-yet-valid"),
    ]:
        with pytest.raises(VerificationError) as caught:
            validate_path(leaf.cert, [], [root.cert], at=moment, purpose=CODE_SIGNING)
        assert caught.value.code == code
    # the control: at a moment inside its validity it chains
    assert validate_path(leaf.cert, [], [root.cert], at=now, purpose=CODE_SIGNING)[0] == leaf.cert


# --------------------------------------------------------------------------------------------
# Library messages do not name CLI flags


_FLAG = re.compile(r"(?:^|\s)--[a-z]")


def _string_constants(path: Path) -> list[str]:
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.append(node.value)
    return found


@pytest.mark.parametrize("name", OWN_FILES)
def test_the_gates_library_messages_name_no_cli_flag(name: str) -> None:
    texts = _string_constants(ROOT / "signer" / name)
    flags = [text for text in texts if _FLAG.search(text) and "openssl" not in text]
    assert not flags, flags


def test_the_flag_scan_sees_a_flag() -> None:
    """The scan itself (a check that cannot fail is none)."""
    tree = ast.parse('raise ConfigError(f"--identity {x}: bad")\n')
    texts = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)]
    assert any(_FLAG.search(text) for text in texts if isinstance(text, str))


def test_a_malformed_identity_speaks_of_the_field() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_identity("release-bot@example.com")
    assert (caught.value.code, caught.value.field) == ("identity-malformed", "identity")
    assert caught.value.message.startswith("identity 'release-bot@example.com': not an RFC 4514")
    with pytest.raises(ConfigError) as caught:
        parse_identity("email:no-at-sign")
    assert caught.value.code == "identity-malformed"
    assert parse_identity("email:bot@Example.COM").value == "bot@example.com"  # the control


def test_a_malformed_crl_speaks_of_the_field(tmp_path: Path) -> None:
    bogus = tmp_path / "revoked.crl"
    bogus.write_bytes(b"not a CRL")
    with pytest.raises(ConfigError) as caught:
        load_crl(bogus)
    assert (caught.value.code, caught.value.field) == ("malformed-crl", "crl")
    assert caught.value.message == f"CRL {bogus}: not a PEM or DER CRL"


# --------------------------------------------------------------------------------------------
# Verdicts carry codes


def _signed(tmp_path: Path) -> tuple[Lab, VerifyPolicy]:
    lab = Lab(tmp_path)
    lab.artifact.write_bytes(b"release\n")
    root = make_root("Verdict Root")
    lab.sign(root.issue("Release signer", eku=[EKU.CODE_SIGNING]))
    return lab, VerifyPolicy(trust_roots=[root.cert])


def test_a_verdict_carries_the_code_and_exit_code_of_its_failure(tmp_path: Path) -> None:
    lab, policy = _signed(tmp_path)
    good = verify_artifact(lab.artifact, policy)
    assert (good.verified, good.code, good.exit_code, good.reason) == (True, None, 0, None)
    shape = good.as_json()
    assert {"verified", "reason", "code", "warnings", "warning_codes"} <= set(shape)

    lab.artifact.write_bytes(b"release, changed\n")
    bad = verify_artifact(lab.artifact, policy)
    assert (bad.verified, bad.code, bad.exit_code) == (False, "digest-mismatch", 1)
    assert bad.as_json()["code"] == "digest-mismatch"

    missing = verify_artifact(tmp_path / "nothing-here.bin", policy)
    assert (missing.code, missing.exit_code) == ("artifact-missing", 2)


def test_audit_warnings_carry_one_code_each(tmp_path: Path) -> None:
    lab, policy = _signed(tmp_path)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=3 * 365)
    strict = verify_artifact(lab.artifact, VerifyPolicy(trust_roots=policy.trust_roots, at=later))
    assert strict.code == "certificate-expired"
    assert "judged at " in str(strict.reason) and "(the given time; no trusted timestamp)" in str(
        strict.reason
    )
    assert "now" not in str(strict.reason).split("judged at", 1)[1]
    audit = verify_artifact(
        lab.artifact,
        VerifyPolicy(
            trust_roots=policy.trust_roots, at=later, level=Level.AUDIT, require_timestamp=True
        ),
    )
    assert audit.verified is True and audit.code is None
    assert audit.warning_codes == ["timestamp-required", "certificate-expired"]
    assert len(audit.warnings) == len(audit.warning_codes)
    assert audit.as_json()["warning_codes"] == audit.warning_codes


def test_an_envelope_refusal_carries_its_code() -> None:
    root = make_root("Envelope Root")
    key = root.cert.public_key()
    for envelope, code in [
        (b'{"payloadType": "a", "payloadType": "b"}', "malformed-envelope"),
        (b"[]", "malformed-envelope"),
        (b'{"payloadType": "x", "payload": "", "signatures": []}', "unsigned"),
        (
            b'{"payloadType": "x", "payload": "", "signatures": [{"keyid": "ab", "sig": ""}]}',
            "untrusted-key",
        ),
        (b'{"payloadType": "x", "payload": "", "signatures": [{"sig": "AAAA"}]}', "bad-signature"),
    ]:
        with pytest.raises(VerificationError) as caught:
            open_envelope(envelope, [key])
        assert caught.value.code == code, (envelope, caught.value.message)
    with pytest.raises(VerificationError) as caught:
        open_envelope(
            b'{"payloadType": "x", "payload": "", "signatures": []}', [key], expected_type="y"
        )
    assert caught.value.code == "payload-type-mismatch"


def test_a_name_attribute_of_the_wrong_type_is_a_typed_refusal(tmp_path: Path) -> None:
    """Found by the CMS fuzz target: a BitString value under an OID that is not
    x500UniqueIdentifier makes cryptography raise TypeError when the name is first read."""
    key = ec.generate_private_key(ec.SECP256R1())
    odd = x509.Name(
        [x509.NameAttribute(NameOID.X500_UNIQUE_IDENTIFIER, b"\x00", _type=_ASN1Type.BitString)]
    )
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(odd).issuer_name(odd).public_key(key.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    der = cert.public_bytes(serialization.Encoding.DER)
    unique_id, common_name = bytes.fromhex("060355042d"), bytes.fromhex("0603550403")
    assert der.count(unique_id) == 2
    (tmp_path / "odd.der").write_bytes(der.replace(unique_id, common_name))
    with pytest.raises(ConfigError) as refused:
        load_certificates(tmp_path / "odd.der")
    assert refused.value.code == "malformed-certificate"
    (tmp_path / "fine.der").write_bytes(der)  # the control: the unaltered one loads
    assert len(load_certificates(tmp_path / "fine.der")) == 1
