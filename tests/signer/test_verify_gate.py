"""`sealgate verify`, the release gate, end to end: what a release pipeline runs before upload.

Every case goes through the real CLI against signatures made by the real SoftHSM2 token and the
local RFC 3161 TSA. The tamper matrix builds each attack the way an attacker (or an accident)
would, by editing the DER with asn1crypto, splicing real tokens, or re-signing in-process with
the token's key, and asserts that the gate blocks it with its own reason, in text and in --json.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from sealgate.localpki import LocalCA, write_pem
from signer.algorithms import scheme_for
from signer.cms import CadesBesBuilder, add_unsigned_attribute, to_asn1, utc_now
from signer.cmsverify import TIMESTAMP_ATTRIBUTE, parse_signed_data
from signer.keys import open_key
from tests.components.cli import flip_byte, openssl_cms_verify, sealgate
from tests.components.hsm import HsmFixture
from tests.components.tsa import (
    LocalTsa,
    TsaPki,
    make_query,
    openssl_ts_verify_token,
    parse_reply,
    post_query,
    reply_token,
)

ARTIFACT = "app-1.0.tar.gz"
LABEL = "ec256"  # the signing key of the story; its certificate is hsm.certs[LABEL]
SUBJECT = "CN=Sealgate test signer ec256,O=Sealgate local PKI"


def _payload(name: str, size: int = 50_000) -> bytes:
    return hashlib.shake_256(name.encode()).digest(size)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _run_ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stdout + result.stderr
    return result


# --------------------------------------------------------------------------------------------
# Signatures made once for the module; every test works on copies.


@dataclass(frozen=True)
class Originals:
    """`stamped/` and `plain/` hold the same artifact signed with and without a token;
    `other/` another artifact's timestamped signature (a token to move)."""

    root: Path

    def artifact(self, kind: str) -> Path:
        name = "other.tar.gz" if kind == "other" else ARTIFACT
        return self.root / kind / name

    def p7s(self, kind: str) -> Path:
        artifact = self.artifact(kind)
        return artifact.with_name(artifact.name + ".p7s")


@pytest.fixture(scope="module")
def originals(
    hsm: HsmFixture, tsa: LocalTsa, tsa_pki: TsaPki, tmp_path_factory: pytest.TempPathFactory
) -> Originals:
    made = Originals(tmp_path_factory.mktemp("originals"))
    for kind in ("stamped", "plain", "other"):
        made.artifact(kind).parent.mkdir()
        made.artifact(kind).write_bytes(_payload(made.artifact(kind).name))
    common: list[str | Path] = ["sign", "--key", hsm.uri(LABEL), "--cert", hsm.cert_pems[LABEL]]
    common += ["--chain", hsm.chain_pem]
    _run_ok(
        sealgate(
            *common,
            *("--tsa", tsa.url, "--tsa-roots", tsa_pki.root_pem),
            made.artifact("stamped"),
            made.artifact("other"),
            env=hsm.env,
        )
    )
    _run_ok(sealgate(*common, made.artifact("plain"), env=hsm.env))
    return made


@dataclass
class Gate:
    """One release directory under test and the `sealgate verify` options the pipeline uses."""

    hsm: HsmFixture
    tsa_pki: TsaPki
    tsas: dict[str, LocalTsa]
    originals: Originals
    tmp: Path
    trust_roots: Path
    tsa_roots: Path | None
    options: list[str] = field(default_factory=list)

    @property
    def artifact(self) -> Path:
        return self.tmp / ARTIFACT

    @property
    def p7s(self) -> Path:
        return self.tmp / (ARTIFACT + ".p7s")

    def use(self, kind: Literal["stamped", "plain"]) -> None:
        """Start from a copy of the module's signature with (stamped) or without a token."""
        shutil.copyfile(self.originals.artifact(kind), self.artifact)
        shutil.copyfile(self.originals.p7s(kind), self.p7s)

    def verify(self, *extra: str | Path) -> subprocess.CompletedProcess[str]:
        args: list[str | Path] = ["verify", "--trust-roots", self.trust_roots]
        if self.tsa_roots is not None:
            args += ["--tsa-roots", self.tsa_roots]
        return sealgate(*args, *self.options, *extra, env=self.hsm.env)

    def report(self, *extra: str | Path) -> tuple[int, dict[str, Any]]:
        result = self.verify("--json", *extra)
        return result.returncode, json.loads(result.stdout)

    def sign(self, *extra: str | Path, artifacts: Sequence[Path] = ()) -> None:
        args: list[str | Path] = ["sign", "--key", self.hsm.uri(LABEL), "--chain"]
        args += [self.hsm.chain_pem, *extra, *(artifacts or [self.artifact])]
        _run_ok(sealgate(*args, env=self.hsm.env))

    def add_token_later(self) -> None:
        """`sealgate timestamp`: the token is asked for now, after the signing."""
        _run_ok(
            sealgate(
                "timestamp",
                *("--tsa", self.tsas["good"].url, "--tsa-roots", self.tsa_pki.root_pem),
                self.p7s,
                env=self.hsm.env,
            )
        )


@pytest.fixture
def gate(
    hsm: HsmFixture,
    tsa_pki: TsaPki,
    tsas: dict[str, LocalTsa],
    originals: Originals,
    tmp_path: Path,
) -> Gate:
    made = Gate(hsm, tsa_pki, tsas, originals, tmp_path, hsm.root_pem, tsa_pki.root_pem)
    made.use("stamped")
    return made


# --------------------------------------------------------------------------------------------
# DER surgery and in-process signing


def _content_info(p7s: Path) -> Any:
    return cms.ContentInfo.load(p7s.read_bytes())


def _signed_data(info: Any) -> Any:
    return info["content"]


def _signer_info(info: Any) -> Any:
    return info["content"]["signer_infos"][0]


def _edit(p7s: Path, change: Callable[[Any, Any], None]) -> None:
    """Apply `change(signed_data, signer_info)` and write the re-encoded ContentInfo back."""
    info = _content_info(p7s)
    change(_signed_data(info), _signer_info(info))
    p7s.write_bytes(info.dump())
    cms.ContentInfo.load(p7s.read_bytes(), strict=True)  # one ContentInfo, nothing trailing


def _edit_signed_attributes(p7s: Path, change: Callable[[list[Any]], list[Any]]) -> None:
    def apply(_signed: Any, signer: Any) -> None:
        attributes = [cms.CMSAttribute.load(a.dump()) for a in signer["signed_attrs"]]
        signer["signed_attrs"] = cms.CMSAttributes(change(attributes))

    _edit(p7s, apply)


def _replace_attribute(kind: str, value: Any) -> Callable[[list[Any]], list[Any]]:
    def change(attributes: list[Any]) -> list[Any]:
        replaced = [a for a in attributes if a["type"].native != kind]
        assert len(replaced) == len(attributes) - 1
        return [*replaced, cms.CMSAttribute({"type": kind, "values": [value]})]

    return change


def _signing_time(p7s: Path) -> dt.datetime:
    for attribute in _signer_info(_content_info(p7s))["signed_attrs"]:
        if attribute["type"].native == "signing_time":
            moment: dt.datetime = attribute["values"][0].native
            return moment
    raise AssertionError("no signingTime")


def _replace_once(path: Path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    assert data.count(old) == 1 and len(old) == len(new)
    path.write_bytes(data.replace(old, new))


def _flip_last(value: bytes) -> bytes:
    return value[:-1] + bytes([value[-1] ^ 0x01])


def _token(p7s: Path) -> bytes:
    [token] = parse_signed_data(p7s.read_bytes(), str(p7s)).timestamp_tokens
    return token


def _gen_time(p7s: Path) -> dt.datetime:
    token = cms.ContentInfo.load(_token(p7s))
    moment: dt.datetime = (
        token["content"]["encap_content_info"]["content"].parsed["gen_time"].native
    )
    return moment


def _with_token(gate: Gate, token: bytes) -> None:
    """The plain signature with `token` as its id-aa-signatureTimeStampToken."""
    gate.use("plain")
    attribute = cms.CMSAttribute(
        {"type": TIMESTAMP_ATTRIBUTE, "values": [cms.ContentInfo.load(token)]}
    ).dump()
    gate.p7s.write_bytes(add_unsigned_attribute(gate.p7s.read_bytes(), attribute))


def _token_from(gate: Gate, mode: str) -> bytes:
    """A token over this signature's value, straight from the TSA in `mode` (no client checks)."""
    gate.use("plain")
    value = parse_signed_data(gate.p7s.read_bytes(), "p7s").signature
    answer = post_query(gate.tsas[mode].url, make_query(value, nonce=secrets.randbits(63)))
    assert answer.status_code == 200, answer.text
    reply = parse_reply(answer.content)
    assert reply["status"]["status"].native == "granted"
    return reply_token(reply)


def _sign_in_process(
    gate: Gate,
    cert: x509.Certificate,
    *,
    label: str = LABEL,
    ess_names: x509.Certificate | None = None,
) -> None:
    """Sign the artifact with the token's key, as `sign` would, but without its certificate
    checks: how a certificate `sign` refuses ends up in a .p7s. `ess_names` puts another
    certificate into the signingCertificateV2 attribute than the one the SignerInfo names."""
    chain = [to_asn1(c) for c in gate.hsm.ca.chain()]
    with open_key(gate.hsm.uri(label)) as key:
        scheme = scheme_for(key.public_key())
        named = CadesBesBuilder(scheme, to_asn1(ess_names or cert), chain, utc_now())
        digest = hashlib.new(scheme.hash_name, gate.artifact.read_bytes()).digest()
        attributes = named.signed_attributes(digest)
        signature = key.sign(attributes, scheme)
    builder = (
        named if ess_names is None else CadesBesBuilder(scheme, to_asn1(cert), chain, utc_now())
    )
    gate.p7s.write_bytes(builder.signed_data(attributes, signature))


def _crl(
    gate: Gate,
    cert: x509.Certificate,
    revoked_at: dt.datetime,
    reason: x509.ReasonFlags,
    *,
    ca: LocalCA | None = None,
) -> Path:
    """A CRL from the signer's issuing CA (or `ca`), made with cryptography, revoking `cert`."""
    issuer = ca or gate.hsm.ca
    now = _now()
    revoked = (
        x509.RevokedCertificateBuilder()
        .serial_number(cert.serial_number)
        .revocation_date(revoked_at)
        .add_extension(x509.CRLReason(reason), critical=False)
        .build()
    )
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.issuer.subject)
        .last_update(now - dt.timedelta(days=1))
        .next_update(now + dt.timedelta(days=7))
        .add_revoked_certificate(revoked)
        .sign(issuer.issuer_key, hashes.SHA256())
    )
    path = gate.tmp / f"revoked-{reason.value}.crl"
    path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    return path


def _issue(
    gate: Gate,
    common_name: str = "Sealgate test signer ec256",
    *,
    label: str = LABEL,
    **kwargs: Any,
) -> x509.Certificate:
    public_key = gate.hsm.certs[label].public_key()
    return gate.hsm.ca.issue(public_key, common_name, **kwargs)


# --------------------------------------------------------------------------------------------
# The tamper matrix: each builder makes one attack; the gate must refuse it for its reason.


def artifact_byte_flipped(gate: Gate) -> None:
    flip_byte(gate.artifact, 1234)


def signature_value_flipped(gate: Gate) -> None:
    value = parse_signed_data(gate.p7s.read_bytes(), "p7s").signature
    _replace_once(gate.p7s, value, _flip_last(value))  # still a DER ECDSA signature


def message_digest_rewritten(gate: Gate) -> None:
    """The artifact swapped for another one, and messageDigest set to the new artifact's."""
    evil = b"a backdoored build\n" * 1000
    gate.artifact.write_bytes(evil)
    _edit_signed_attributes(
        gate.p7s, _replace_attribute("message_digest", hashlib.sha256(evil).digest())
    )


def signing_time_changed(gate: Gate) -> None:
    earlier = _signing_time(gate.p7s) - dt.timedelta(days=30)
    _edit_signed_attributes(
        gate.p7s, _replace_attribute("signing_time", cms.Time({"utc_time": earlier}))
    )


def content_type_attribute_changed(gate: Gate) -> None:
    _edit_signed_attributes(gate.p7s, _replace_attribute("content_type", "signed_data"))


def signed_attribute_duplicated(gate: Gate) -> None:
    later = cms.Time({"utc_time": _signing_time(gate.p7s) + dt.timedelta(hours=1)})
    _edit_signed_attributes(
        gate.p7s,
        lambda attributes: [
            *attributes,
            cms.CMSAttribute({"type": "signing_time", "values": [later]}),
        ],
    )


def certificate_swapped_same_subject(gate: Gate) -> None:
    """A real certificate from the same CA, same subject, another key; the SignerInfo re-pointed."""
    impostor = _issue(gate, label="nocert")
    assert impostor.subject == gate.hsm.certs[LABEL].subject

    def swap(signed: Any, signer: Any) -> None:
        signed["certificates"] = [
            cms.CertificateChoices({"certificate": to_asn1(c)})
            for c in [impostor, *gate.hsm.ca.chain()]
        ]
        signer["sid"] = cms.SignerIdentifier(
            {
                "issuer_and_serial_number": {
                    "issuer": to_asn1(impostor).issuer,
                    "serial_number": impostor.serial_number,
                }
            }
        )

    _edit(gate.p7s, swap)


def signer_certificate_stripped(gate: Gate) -> None:
    def strip(signed: Any, _signer: Any) -> None:
        signed["certificates"] = [
            cms.CertificateChoices({"certificate": to_asn1(c)}) for c in gate.hsm.ca.chain()
        ]

    _edit(gate.p7s, strip)


def resigned_by_another_key_under_the_same_name(gate: Gate) -> None:
    """Someone with another key and a same-named certificate re-signs the original attributes
    (which name the genuine certificate in signingCertificateV2)."""
    impostor = _issue(gate, label="nocert")
    _sign_in_process(gate, impostor, label="nocert", ess_names=gate.hsm.certs[LABEL])


def untrusted_root(gate: Gate) -> None:
    """The gate trusts another CA with the very same name as the signer's root."""
    lookalike = LocalCA(name="Sealgate Test Root CA")
    gate.trust_roots = write_pem(gate.tmp / "other-root.pem", lookalike.root)


def certificate_without_code_signing(gate: Gate) -> None:
    cert = _issue(gate, "Sealgate mail signer", eku=[ExtendedKeyUsageOID.EMAIL_PROTECTION])
    _sign_in_process(gate, cert)


def certificate_without_any_eku(gate: Gate) -> None:
    _sign_in_process(gate, _issue(gate, "Sealgate general signer", eku=[]))


def wrong_identity(gate: Gate) -> None:
    gate.options = ["--identity", "CN=Release Bot,O=Sealgate local PKI"]


def expired_without_token(gate: Gate) -> None:
    gate.use("plain")
    after = gate.hsm.certs[LABEL].not_valid_after_utc + dt.timedelta(days=30)
    gate.options = ["--at", after.isoformat()]


def expired_before_its_token(gate: Gate) -> None:
    """Signed while valid, but the token was only asked for after the certificate expired."""
    not_after = _now() + dt.timedelta(seconds=3)
    short = write_pem(
        gate.tmp / "short.pem", _issue(gate, "Sealgate short-lived signer", not_after=not_after)
    )
    gate.p7s.unlink()
    gate.sign("--cert", short)
    while dt.datetime.now(dt.UTC) < not_after + dt.timedelta(seconds=1.5):
        time.sleep(0.25)
    gate.add_token_later()


def not_yet_valid_when_stamped(gate: Gate) -> None:
    """A certificate valid only from tomorrow; the token proves the signing happened today."""
    future = _issue(
        gate,
        "Sealgate future signer",
        not_before=_now() + dt.timedelta(days=1),
        not_after=_now() + dt.timedelta(days=30),
    )
    _sign_in_process(gate, future)
    gate.add_token_later()


def token_over_other_data(gate: Gate) -> None:
    _with_token(gate, _token(gate.originals.p7s("other")))


def token_from_untrusted_tsa(gate: Gate) -> None:
    _with_token(gate, _token_from(gate, "untrusted"))


def tsa_root_not_trusted_by_the_gate(gate: Gate) -> None:
    gate.tsa_roots = gate.tsa_pki.untrusted_root_pem


def token_tsa_without_time_stamping_eku(gate: Gate) -> None:
    _with_token(gate, _token_from(gate, "no_eku"))


def token_tsa_eku_not_critical(gate: Gate) -> None:
    _with_token(gate, _token_from(gate, "noncritical_eku"))


def token_tsa_certificate_expired(gate: Gate) -> None:
    _with_token(gate, _token_from(gate, "expired"))


def token_signature_flipped(gate: Gate) -> None:
    value = parse_signed_data(_token(gate.p7s), "token").signature
    _replace_once(gate.p7s, value, _flip_last(value))


def revoked_before_signing(gate: Gate) -> None:
    revoked_at = _gen_time(gate.p7s) - dt.timedelta(minutes=10)
    crl = _crl(gate, gate.hsm.certs[LABEL], revoked_at, x509.ReasonFlags.superseded)
    gate.options = ["--crl", str(crl)]


def key_compromised_after_signing(gate: Gate) -> None:
    revoked_at = _gen_time(gate.p7s) + dt.timedelta(minutes=1)
    crl = _crl(gate, gate.hsm.certs[LABEL], revoked_at, x509.ReasonFlags.key_compromise)
    gate.options = ["--crl", str(crl)]


def truncated(gate: Gate) -> None:
    data = gate.p7s.read_bytes()
    gate.p7s.write_bytes(data[: len(data) * 2 // 3])


def garbage(gate: Gate) -> None:
    gate.p7s.write_bytes(hashlib.shake_256(b"not a signature").digest(3000))


def empty(gate: Gate) -> None:
    gate.p7s.write_bytes(b"")


def not_signed_data(gate: Gate) -> None:
    gate.p7s.write_bytes(
        cms.ContentInfo({"content_type": "data", "content": gate.artifact.read_bytes()}).dump()
    )


def two_signer_infos(gate: Gate) -> None:
    other = _signer_info(_content_info(gate.originals.p7s("other")))

    def add(signed: Any, signer: Any) -> None:
        signed["signer_infos"] = [
            cms.SignerInfo.load(signer.dump()),
            cms.SignerInfo.load(other.dump()),
        ]

    _edit(gate.p7s, add)


def missing_signature(gate: Gate) -> None:
    gate.p7s.unlink()


def _declare_digest(name: str, *, in_signed_data: bool = True) -> Callable[[Gate], None]:
    def declare(gate: Gate) -> None:
        def change(signed: Any, signer: Any) -> None:
            signer["digest_algorithm"] = {"algorithm": name}
            if in_signed_data:
                signed["digest_algorithms"] = [{"algorithm": name}]

        _edit(gate.p7s, change)

    return declare


def signature_algorithm_swapped(gate: Gate) -> None:
    def change(_signed: Any, signer: Any) -> None:
        signer["signature_algorithm"] = {"algorithm": "sha384_ecdsa"}

    _edit(gate.p7s, change)


def signed_data_version_changed(gate: Gate) -> None:
    def change(signed: Any, _signer: Any) -> None:
        signed["version"] = "v3"

    _edit(gate.p7s, change)


def content_attached(gate: Gate) -> None:
    """The artifact's bytes carried inside the signature (not the detached form)."""

    def change(signed: Any, _signer: Any) -> None:
        signed["encap_content_info"] = {
            "content_type": "data",
            "content": gate.artifact.read_bytes(),
        }

    _edit(gate.p7s, change)


def timestamp_required_but_absent(gate: Gate) -> None:
    gate.use("plain")
    gate.options = ["--require-timestamp"]


@dataclass(frozen=True)
class Tamper:
    name: str
    build: Callable[[Gate], None]
    reason: tuple[str, ...]
    #: The stable reason code the --json report carries for it (docs/reason-codes.md).
    code: str


TAMPERS = [
    Tamper(
        "artifact byte flipped",
        artifact_byte_flipped,
        ("digest mismatch: the content's sha256 is not the signed one",),
        "digest-mismatch",
    ),
    Tamper(
        "signature value flipped",
        signature_value_flipped,
        ("the signature does not verify with the key of", SUBJECT),
        "bad-signature",
    ),
    Tamper(
        "messageDigest rewritten for a swapped artifact",
        message_digest_rewritten,
        ("the signature does not verify with the key of",),
        "bad-signature",
    ),
    Tamper(
        "signingTime changed",
        signing_time_changed,
        ("the signature does not verify with the key of",),
        "bad-signature",
    ),
    Tamper(
        "contentType attribute changed",
        content_type_attribute_changed,
        ("signed contentType is signed_data, expected data",),
        "malformed-signature",
    ),
    Tamper(
        "signed attribute duplicated",
        signed_attribute_duplicated,
        ("signed attribute signing_time appears twice",),
        "malformed-signature",
    ),
    Tamper(
        "certificate swapped, same subject, other key",
        certificate_swapped_same_subject,
        ("the signature does not verify with the key of", SUBJECT),
        "bad-signature",
    ),
    Tamper(
        "signer certificate stripped",
        signer_certificate_stripped,
        ("the signer's certificate is not in the signature",),
        "signer-certificate-missing",
    ),
    Tamper(
        "re-signed by another key under the same name",
        resigned_by_another_key_under_the_same_name,
        ("the signing certificate attribute names another certificate",),
        "ess-binding-mismatch",
    ),
    Tamper(
        "untrusted root",
        untrusted_root,
        (
            "no chain from 'CN=Sealgate test signer ec256",
            "has the name of a certificate among the trust roots, but its signature does not verify",
        ),
        "untrusted-chain",
    ),
    Tamper(
        "certificate without codeSigning",
        certificate_without_code_signing,
        ("lacks the codeSigning extended key usage",),
        "no-codesigning",
    ),
    Tamper(
        "certificate without any EKU",
        certificate_without_any_eku,
        ("has no extendedKeyUsage; codeSigning is required",),
        "no-codesigning",
    ),
    Tamper(
        "wrong identity",
        wrong_identity,
        ("is not an allowed identity", "allowed: CN=Release Bot"),
        "identity-mismatch",
    ),
    Tamper(
        "expired certificate, no token",
        expired_without_token,
        ("had expired at", "judged at ", "Z (the given time; no trusted timestamp)"),
        "certificate-expired",
    ),
    Tamper(
        "expired certificate, token from after expiry",
        expired_before_its_token,
        ("had expired at", "judged at the timestamp"),
        "certificate-expired",
    ),
    Tamper(
        "certificate not yet valid when stamped",
        not_yet_valid_when_stamped,
        ("was not yet valid at", "judged at the timestamp"),
        "certificate-not-yet-valid",
    ),
    Tamper(
        "token over other data",
        token_over_other_data,
        ("timestamp not accepted", "message imprint is not over this signature"),
        "timestamp-untrusted",
    ),
    Tamper(
        "token from an untrusted TSA",
        token_from_untrusted_tsa,
        ("timestamp not accepted", "TSA no chain from", "to a trusted root", "the TSA roots"),
        "timestamp-untrusted",
    ),
    Tamper(
        "TSA root not trusted by the gate",
        tsa_root_not_trusted_by_the_gate,
        ("timestamp not accepted", "TSA no chain from", "to a trusted root", "the TSA roots"),
        "timestamp-untrusted",
    ),
    Tamper(
        "TSA certificate without timeStamping",
        token_tsa_without_time_stamping_eku,
        ("timestamp not accepted", "has no extendedKeyUsage; timeStamping is required"),
        "timestamp-untrusted",
    ),
    Tamper(
        "TSA timeStamping EKU not critical",
        token_tsa_eku_not_critical,
        ("timestamp not accepted", "not marked critical"),
        "timestamp-untrusted",
    ),
    Tamper(
        "TSA certificate expired",
        token_tsa_certificate_expired,
        ("timestamp not accepted", "TSA certificate", "had expired"),
        "timestamp-untrusted",
    ),
    Tamper(
        "token signature flipped",
        token_signature_flipped,
        ("timestamp not accepted", "timestamp 1: the signature does not verify"),
        "timestamp-untrusted",
    ),
    Tamper(
        "revoked before signing",
        revoked_before_signing,
        ("was revoked on", "(superseded), before the signing time"),
        "revoked",
    ),
    Tamper(
        "key compromised after signing",
        key_compromised_after_signing,
        ("revoked for key compromise", "no signature by it is trusted"),
        "key-compromised",
    ),
    Tamper(
        "truncated signature",
        truncated,
        ("malformed CMS signature (Insufficient data",),
        "malformed-signature",
    ),
    Tamper("garbage signature", garbage, ("malformed CMS signature",), "malformed-signature"),
    Tamper("empty signature", empty, ("the signature file is empty",), "malformed-signature"),
    Tamper(
        "CMS that is not SignedData",
        not_signed_data,
        ("not a CMS SignedData (data)",),
        "malformed-signature",
    ),
    Tamper(
        "two SignerInfos",
        two_signer_infos,
        ("holds 2 SignerInfos; exactly one is allowed",),
        "unsupported-signature",
    ),
    Tamper("missing signature", missing_signature, ("unsigned (", ".p7s missing)"), "unsigned"),
    Tamper(
        "digest algorithm sha384 declared",
        _declare_digest("sha384"),
        ("digest mismatch: the content's sha384 is not the signed one",),
        "digest-mismatch",
    ),
    Tamper(
        "digest algorithm md5 declared",
        _declare_digest("md5"),
        ("digest algorithm md5 is not accepted",),
        "algorithm-not-accepted",
    ),
    Tamper(
        "digest algorithm not in digestAlgorithms",
        _declare_digest("sha512", in_signed_data=False),
        ("digest algorithm sha512 is not among the SignedData's digestAlgorithms",),
        "malformed-signature",
    ),
    Tamper(
        "signature algorithm swapped",
        signature_algorithm_swapped,
        ("signature algorithm sha384_ecdsa does not fit",),
        "malformed-signature",
    ),
    Tamper(
        "SignedData version changed",
        signed_data_version_changed,
        ("SignedData version v3 is not the v1",),
        "malformed-signature",
    ),
    Tamper(
        "content attached",
        content_attached,
        ("not a detached signature over data",),
        "unsupported-signature",
    ),
    Tamper(
        "timestamp required, none present",
        timestamp_required_but_absent,
        ("no trusted RFC 3161 timestamp, and one is required",),
        "timestamp-required",
    ),
]
BY_NAME = {tamper.name: tamper for tamper in TAMPERS}


def _failed_line(stdout: str, artifact: Path) -> str:
    [line] = [line for line in stdout.splitlines() if line.startswith("FAILED ")]
    assert line.startswith(f"FAILED {artifact}: ")
    return line


@pytest.mark.parametrize("tamper", TAMPERS, ids=[t.name.replace(" ", "-") for t in TAMPERS])
def test_the_gate_blocks_tampering_with_its_reason(gate: Gate, tamper: Tamper) -> None:
    tamper.build(gate)

    result = gate.verify(gate.artifact)
    assert result.returncode == 1, result.stdout + result.stderr
    line = _failed_line(result.stdout, gate.artifact)
    for part in tamper.reason:
        assert part in line, line
    assert "0 verified, 1 failed" in result.stdout

    code, report = gate.report(gate.artifact)
    assert code == 1
    [entry] = report["artifacts"]
    assert entry["verified"] is False
    assert all(part in entry["reason"] for part in tamper.reason), entry["reason"]
    assert entry["code"] == tamper.code, entry
    assert (report["verified"], report["failed"]) == (0, 1)


def test_the_tamper_matrix_has_a_reason_per_attack() -> None:
    """Twenty and more attacks, each named once; several share 'the signature does not
    verify', which is the honest reason for every edit of signed bytes."""
    assert len(TAMPERS) >= 20
    assert len(BY_NAME) == len(TAMPERS)
    assert all(re.fullmatch(r"[a-z]+(-[a-z0-9]+)*", tamper.code) for tamper in TAMPERS)


# --------------------------------------------------------------------------------------------
# Time: the token proves when the signature was made.


def test_a_token_proves_the_signature_outlives_its_certificate(gate: Gate) -> None:
    cert = gate.hsm.certs[LABEL]
    years_later = (cert.not_valid_after_utc + dt.timedelta(days=2 * 365)).isoformat()

    result = _run_ok(gate.verify("--at", years_later, gate.artifact))
    assert f"verified {gate.artifact}: signer '{SUBJECT}', timestamp " in result.stdout
    code, report = gate.report("--at", years_later, gate.artifact)
    [entry] = report["artifacts"]
    assert code == 0 and entry["verified"] is True and entry["warnings"] == []
    gen_time = dt.datetime.fromisoformat(entry["timestamp"]["gen_time"])
    assert cert.not_valid_before_utc <= gen_time <= cert.not_valid_after_utc

    # the same signature without its token: judged at --at, where the certificate is long expired
    gate.use("plain")
    result = gate.verify("--at", years_later, gate.artifact)
    assert result.returncode == 1
    assert "had expired at" in _failed_line(result.stdout, gate.artifact)

    # with the token but no --tsa-roots the token proves nothing, and the gate says why: it
    # judged at the time given with --at, and says so (never "now" when a time was given)
    gate.use("stamped")
    gate.tsa_roots = None
    result = gate.verify("--at", years_later, gate.artifact)
    assert result.returncode == 1
    line = _failed_line(result.stdout, gate.artifact)
    given = dt.datetime.fromisoformat(years_later).isoformat().replace("+00:00", "Z")
    assert f"judged at {given} (the given time; no trusted timestamp)" in line, line
    assert "now" not in line.split("judged at", 1)[1]
    assert "warning: " in result.stdout and "no TSA roots were given" in result.stdout
    assert "--tsa-roots" not in result.stdout
    code, report = gate.report("--at", years_later, gate.artifact)
    [entry] = report["artifacts"]
    assert code == 1 and entry["code"] == "certificate-expired"
    assert entry["warning_codes"] == ["timestamp-unused"]


def test_a_token_added_later_verifies_while_the_certificate_is_valid(gate: Gate) -> None:
    gate.use("plain")
    gate.add_token_later()
    _, report = gate.report("--require-timestamp", gate.artifact)
    [entry] = report["artifacts"]
    assert entry["verified"] is True
    assert dt.datetime.fromisoformat(entry["timestamp"]["gen_time"]) >= _signing_time(gate.p7s)


AUDIT_WARNS = {
    "expired certificate, no token": "had expired at",
    "TSA root not trusted by the gate": "timestamp not accepted",
    "token from an untrusted TSA": "timestamp not accepted",
    "revoked before signing": "was revoked on",
    "key compromised after signing": "revoked for key compromise",
    "timestamp required, none present": "one is required",
}


@pytest.mark.parametrize("name", list(AUDIT_WARNS))
def test_audit_level_turns_time_class_failures_into_warnings(gate: Gate, name: str) -> None:
    BY_NAME[name].build(gate)
    assert gate.verify(gate.artifact).returncode == 1  # strict, the default, blocks

    result = gate.verify("--level", "audit", gate.artifact)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"verified {gate.artifact}" in result.stdout
    warnings = [line for line in result.stdout.splitlines() if line.startswith("  warning: ")]
    assert any(AUDIT_WARNS[name] in line for line in warnings), result.stdout

    code, report = gate.report("--level", "audit", gate.artifact)
    [entry] = report["artifacts"]
    assert code == 0 and report["level"] == "audit"
    assert entry["verified"] is True and entry["reason"] is None and entry["code"] is None
    assert any(AUDIT_WARNS[name] in warning for warning in entry["warnings"])
    # one code per warning, and the one the strict level fails with
    assert len(entry["warning_codes"]) == len(entry["warnings"])
    assert BY_NAME[name].code in entry["warning_codes"]


AUDIT_BLOCKS = [
    "artifact byte flipped",
    "signature value flipped",
    "certificate swapped, same subject, other key",
    "untrusted root",
    "certificate without codeSigning",
    "wrong identity",
    "missing signature",
]


@pytest.mark.parametrize("name", AUDIT_BLOCKS)
def test_audit_level_never_excuses_integrity_or_authenticity(gate: Gate, name: str) -> None:
    tamper = BY_NAME[name]
    tamper.build(gate)
    result = gate.verify("--level", "audit", gate.artifact)
    assert result.returncode == 1, result.stdout
    line = _failed_line(result.stdout, gate.artifact)
    assert all(part in line for part in tamper.reason), line


# --------------------------------------------------------------------------------------------
# Identity


def test_identity_matches_the_subject_as_rfc4514(gate: Gate) -> None:
    assert gate.hsm.certs[LABEL].subject.rfc4514_string() == SUBJECT
    _run_ok(gate.verify("--identity", SUBJECT, gate.artifact))
    # the same name written with spaces after the commas names the same subject
    spaced = SUBJECT.replace(",", ", ")
    _run_ok(gate.verify("--identity", spaced, gate.artifact))
    # any one of several allowed identities will do
    _run_ok(gate.verify("--identity", "CN=Someone else", "--identity", SUBJECT, gate.artifact))
    # a prefix of the subject is not the subject
    result = gate.verify("--identity", "CN=Sealgate test signer ec256", gate.artifact)
    assert result.returncode == 1
    assert "is not an allowed identity" in _failed_line(result.stdout, gate.artifact)


def test_identity_matches_the_san_email(gate: Gate) -> None:
    cert = _issue(gate, "Sealgate release bot", email="release-bot@example.com")
    pem = write_pem(gate.tmp / "bot.pem", cert)
    gate.p7s.unlink()
    gate.sign("--cert", pem)

    result = _run_ok(gate.verify("--identity", "email:release-bot@example.com", gate.artifact))
    assert "signer 'CN=Sealgate release bot,O=Sealgate local PKI'" in result.stdout
    result = gate.verify("--identity", "email:someone@example.com", gate.artifact)
    assert result.returncode == 1
    line = _failed_line(result.stdout, gate.artifact)
    assert "is not an allowed identity (allowed: email:someone@example.com)" in line
    # a bare value is a subject DN (as before); one that is not a DN is a usage error
    result = gate.verify("--identity", "release-bot@example.com", gate.artifact)
    assert result.returncode == 2
    assert "not an RFC 4514 subject DN" in result.stderr
    assert "email:ADDRESS" in result.stderr


# --------------------------------------------------------------------------------------------
# Revocation


@pytest.mark.parametrize(
    ("reason", "offset", "verdict"),
    [
        (x509.ReasonFlags.superseded, dt.timedelta(minutes=-10), "was revoked on"),
        (x509.ReasonFlags.superseded, dt.timedelta(minutes=1), None),
        (x509.ReasonFlags.key_compromise, dt.timedelta(minutes=-10), "revoked for key compromise"),
        (x509.ReasonFlags.key_compromise, dt.timedelta(minutes=1), "revoked for key compromise"),
    ],
    ids=["superseded-before", "superseded-after", "compromise-before", "compromise-after"],
)
def test_revocation_is_judged_at_the_token(
    gate: Gate, reason: x509.ReasonFlags, offset: dt.timedelta, verdict: str | None
) -> None:
    """Revoked before the token's genTime fails; revoked after it for a benign reason does not;
    keyCompromise fails whatever the time."""
    crl = _crl(gate, gate.hsm.certs[LABEL], _gen_time(gate.p7s) + offset, reason)
    result = gate.verify("--crl", crl, gate.artifact)
    if verdict is None:
        _run_ok(result)
        assert f"verified {gate.artifact}" in result.stdout
    else:
        assert result.returncode == 1
        assert verdict in _failed_line(result.stdout, gate.artifact)


def test_without_a_token_a_revocation_up_to_now_counts(gate: Gate) -> None:
    gate.use("plain")
    crl = _crl(
        gate, gate.hsm.certs[LABEL], _now() - dt.timedelta(seconds=1), x509.ReasonFlags.superseded
    )
    result = gate.verify("--crl", crl, gate.artifact)
    assert result.returncode == 1
    line = _failed_line(result.stdout, gate.artifact)
    # no token, so no known signing time: the message says which moment it judged at
    assert "(superseded), before now (" in line and "; no trusted timestamp)" in line, line
    assert "signing time" not in line


def test_a_crl_of_another_ca_is_not_about_this_signer(gate: Gate) -> None:
    stranger = LocalCA(name="Some other CA", with_intermediate=True)
    crl = _crl(
        gate,
        gate.hsm.certs[LABEL],
        _gen_time(gate.p7s) - dt.timedelta(minutes=10),
        x509.ReasonFlags.key_compromise,
        ca=stranger,
    )
    _run_ok(gate.verify("--crl", crl, gate.artifact))


# --------------------------------------------------------------------------------------------
# Reports, batches, stock tools


def test_json_report_shape(gate: Gate) -> None:
    plain = gate.tmp / "plain" / ARTIFACT
    plain.parent.mkdir()
    shutil.copyfile(gate.originals.artifact("plain"), plain)
    shutil.copyfile(gate.originals.p7s("plain"), plain.with_name(ARTIFACT + ".p7s"))
    unsigned = gate.tmp / "unsigned.bin"
    unsigned.write_bytes(b"never signed\n")

    code, report = gate.report(gate.artifact, plain, unsigned)
    assert code == 1
    assert set(report) == {"level", "verified", "failed", "artifacts"}
    assert (report["level"], report["verified"], report["failed"]) == ("strict", 2, 1)
    keys = {
        "artifact",
        "signature",
        "verified",
        "reason",
        "code",
        "warnings",
        "warning_codes",
        "signer",
        "certificate_sha256",
        "signing_time",
        "timestamp",
        "digest",
    }
    stamped, plain_entry, unsigned_entry = report["artifacts"]
    assert all(set(entry) == keys for entry in report["artifacts"])

    cert_der = gate.hsm.certs[LABEL].public_bytes(serialization.Encoding.DER)
    digest = hashlib.sha256(gate.artifact.read_bytes()).hexdigest()
    for entry in (stamped, plain_entry):
        assert entry["verified"] is True and entry["reason"] is None and entry["warnings"] == []
        assert entry["code"] is None and entry["warning_codes"] == []
        assert entry["signer"] == SUBJECT
        assert entry["certificate_sha256"] == hashlib.sha256(cert_der).hexdigest()
        assert entry["digest"] == f"sha256:{digest}"
        dt.datetime.fromisoformat(entry["signing_time"])
    assert stamped["artifact"] == str(gate.artifact)
    assert stamped["signature"] == str(gate.p7s)
    # the one JSON shape of a timestamp (TimestampToken.as_json), as sign and run print it
    assert set(stamped["timestamp"]) == {
        "gen_time",
        "tsa",
        "serial",
        "policy",
        "digest_algorithm",
        "tsa_url",
    }
    assert stamped["timestamp"]["digest_algorithm"] == "sha256"
    assert stamped["timestamp"]["tsa_url"] is None  # not known from the token alone
    assert stamped["timestamp"]["tsa"] == "CN=Sealgate Test TSA (good),O=Sealgate Tests"
    assert dt.datetime.fromisoformat(stamped["timestamp"]["gen_time"]) == _gen_time(gate.p7s)
    int(stamped["timestamp"]["serial"], 16)
    assert plain_entry["timestamp"] is None

    assert unsigned_entry["verified"] is False
    assert unsigned_entry["reason"].endswith(f"unsigned ({unsigned}.p7s missing)")
    assert unsigned_entry["code"] == "unsigned"
    assert unsigned_entry["signer"] is None and unsigned_entry["timestamp"] is None


def test_one_bad_artifact_fails_the_batch_and_the_others_are_still_reported(gate: Gate) -> None:
    artifacts = [gate.tmp / f"pkg-{i}.whl" for i in range(3)]
    for artifact in artifacts:
        artifact.write_bytes(_payload(artifact.name))
    gate.sign(
        "--cert",
        gate.hsm.cert_pems[LABEL],
        *("--tsa", gate.tsas["good"].url, "--tsa-roots", gate.tsa_pki.root_pem),
        artifacts=artifacts,
    )
    _run_ok(gate.verify(*artifacts))
    flip_byte(artifacts[1], 10)

    result = gate.verify(*artifacts)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert any(line.startswith(f"verified {artifacts[0]}: ") for line in lines)
    assert any(line.startswith(f"verified {artifacts[2]}: ") for line in lines)
    assert "digest mismatch" in _failed_line(result.stdout, artifacts[1])
    assert lines[-1] == "2 verified, 1 failed"

    code, report = gate.report(*artifacts)
    assert code == 1 and (report["verified"], report["failed"]) == (2, 1)
    assert [entry["verified"] for entry in report["artifacts"]] == [True, False, True]
    assert [entry["artifact"] for entry in report["artifacts"]] == [str(a) for a in artifacts]


def test_the_timestamped_signature_still_passes_stock_openssl(gate: Gate) -> None:
    verified = openssl_cms_verify(gate.p7s, gate.artifact, gate.hsm.root_pem)
    assert verified.returncode == 0, verified.stderr
    assert "Verification successful" in verified.stderr

    message = parse_signed_data(gate.p7s.read_bytes(), str(gate.p7s))
    [token] = message.timestamp_tokens
    stamped = openssl_ts_verify_token(token, message.signature, gate.tsa_pki.root_pem)
    assert stamped.returncode == 0, stamped.stderr
    assert "Verification: OK" in stamped.stdout
    # and OpenSSL agrees with the gate about tampering
    flip_byte(gate.artifact, 99)
    assert openssl_cms_verify(gate.p7s, gate.artifact, gate.hsm.root_pem).returncode != 0
    assert gate.verify(gate.artifact).returncode == 1
