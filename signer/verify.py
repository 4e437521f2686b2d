"""The release gate's judgement of one artifact and its `.p7s`: integrity, authenticity, time.

Policy levels in the manner of Notary's trust policy: `strict` enforces everything;
`audit` enforces integrity and authenticity and reports expiry, timestamp and revocation
problems as warnings. Nothing here ever answers "verified" for what it could not prove.
"""

from __future__ import annotations

import datetime as dt
import enum
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography import x509

from signer.algorithms import HASH_NAMES
from signer.certificates import CODE_SIGNING, describe, fingerprint, utc_text
from signer.chain import check_validity, validate_path
from signer.cmsverify import (
    SignedMessage,
    asn1_utc,
    check_signing_certificate,
    parse_signed_data,
    signer_certificate,
    verify_signer_info,
)
from signer.digest import check_artifact, digest_file
from signer.errors import ConfigError, SignerError, VerificationError
from signer.files import CRL_LIMIT, SIGNATURE_LIMIT, path_error, read_capped
from signer.sign import SIGNATURE_SUFFIX
from signer.timestamp import TimestampToken, verify_token


class Level(enum.Enum):
    STRICT = "strict"
    AUDIT = "audit"


@dataclass(frozen=True)
class VerifyPolicy:
    trust_roots: Sequence[x509.Certificate]
    tsa_roots: Sequence[x509.Certificate] = ()
    #: Untrusted TSA certificates and intermediates, for tokens that do not carry them.
    tsa_certs: Sequence[x509.Certificate] = ()
    identities: Sequence[str] = ()
    at: dt.datetime | None = None
    require_timestamp: bool = False
    crls: Sequence[x509.CertificateRevocationList] = ()
    level: Level = Level.STRICT
    signature_dir: Path | None = None


@dataclass
class Verdict:
    """What the gate concluded about one artifact; the same field names as a commit's verdict
    (`verified`, `reason`, `code`, `warnings`), so reports and the audit log read both alike."""

    artifact: Path
    signature: Path
    verified: bool = False
    reason: str | None = None
    #: The stable reason code of the failure (docs/reason-codes.md); None when verified.
    code: str | None = None
    warnings: list[str] = field(default_factory=list)
    #: One code per entry of `warnings`, in the same order.
    warning_codes: list[str] = field(default_factory=list)
    signer: str | None = None
    certificate_fingerprint: str | None = None
    signing_time: dt.datetime | None = None
    timestamp: TimestampToken | None = None
    digest: str | None = None
    #: 1 for a verification failure, 2 for an input that is not a usable file at all.
    exit_code: int = 0

    def as_json(self) -> dict[str, object]:
        return {
            "artifact": str(self.artifact),
            "signature": str(self.signature),
            "verified": self.verified,
            "reason": self.reason,
            "code": self.code,
            "warnings": self.warnings,
            "warning_codes": self.warning_codes,
            "signer": self.signer,
            "certificate_sha256": self.certificate_fingerprint,
            "signing_time": self.signing_time.isoformat() if self.signing_time else None,
            "timestamp": None if self.timestamp is None else self.timestamp.as_json(),
            "digest": self.digest,
        }


class _Judge:
    """Applies the level: a time-class problem fails in strict mode, warns in audit mode."""

    def __init__(self, verdict: Verdict, level: Level) -> None:
        self.verdict = verdict
        self.level = level

    def soft(self, problem: str, *, code: str) -> None:
        if self.level is Level.STRICT:
            raise VerificationError(problem, code=code)
        self.warn(problem, code=code)

    def warn(self, problem: str, *, code: str) -> None:
        self.verdict.warnings.append(problem)
        self.verdict.warning_codes.append(code)


def signature_path_for(artifact: Path, signature_dir: Path | None) -> Path:
    return (signature_dir or artifact.parent) / (artifact.name + SIGNATURE_SUFFIX)


def verify_artifact(artifact: Path, policy: VerifyPolicy) -> Verdict:
    """Judge one artifact; the verdict carries the reason when it is not verified."""
    verdict = Verdict(artifact, signature_path_for(artifact, policy.signature_dir))
    try:
        _verify(verdict, policy)
    except SignerError as exc:  # VerificationError, or a ConfigError about this artifact
        verdict.verified = False
        verdict.reason = exc.message
        verdict.code = exc.code
        verdict.exit_code = exc.exit_code
    return verdict


def _signature_present(artifact: Path, signature: Path, folder: Path | None) -> None:
    """A missing `.p7s` is a failure (exit 1, `unsigned`), also a link to nothing; a path that
    cannot exist, or a signature folder that is not there (a typo), is exit 2."""
    try:
        os.stat(signature)
    except FileNotFoundError:
        if folder is not None and not os.path.isdir(folder):
            raise ConfigError(
                f"signature folder {folder}: no such directory",
                code="path-error",
                field="signature_dir",
            ) from None
        dangling = " (a symbolic link to a missing file)" if os.path.islink(signature) else ""
        raise VerificationError(
            f"{artifact}: unsigned ({signature} missing{dangling})", code="unsigned"
        ) from None
    except OSError as exc:
        raise path_error(
            f"signature {signature}", exc, "use the path", field="signature_dir"
        ) from None


def _time_source(token: TimestampToken | None, at: dt.datetime | None, now: dt.datetime) -> str:
    """Which moment a time check used, in words: the token's, the given time, or now."""
    if token is not None:
        return f"the timestamp ({utc_text(token.gen_time)})"
    if at is not None:
        return f"{utc_text(at)} (the given time; no trusted timestamp)"
    return f"now ({utc_text(now)}; no trusted timestamp)"


def _verify(verdict: Verdict, policy: VerifyPolicy) -> None:
    judge = _Judge(verdict, policy.level)
    where = str(verdict.signature)
    check_artifact(verdict.artifact, action="verify")
    _signature_present(verdict.artifact, verdict.signature, policy.signature_dir)
    der = read_capped(verdict.signature, what="signature", limit=SIGNATURE_LIMIT)
    if not der:
        raise VerificationError(f"{where}: the signature file is empty", code="malformed-signature")
    if der.removeprefix(b"\xef\xbb\xbf").lstrip().startswith(b"-----BEGIN"):  # BOM too
        raise ConfigError(  # the right signature in the wrong encoding: exit 2
            f"{where}: DER expected, this is PEM (convert it with `openssl cms -cmsout "
            "-inform PEM -outform DER`)",
            code="signature-is-pem",
        )

    message = parse_signed_data(der, where)
    encap = message.signed_data["encap_content_info"]
    if encap["content_type"].native != "data" or message.econtent is not None:
        raise VerificationError(
            f"{where}: not a detached signature over data", code="unsupported-signature"
        )

    cert = signer_certificate(message, where)
    verdict.signer = describe(cert)
    verdict.certificate_fingerprint = fingerprint(cert)
    if message.digest_name not in HASH_NAMES:  # refuse before hashing anything with it
        raise VerificationError(
            f"{where}: digest algorithm {message.digest_name} is not accepted",
            code="algorithm-not-accepted",
        )
    artifact_digest = digest_file(verdict.artifact, message.digest_name)  # ConfigError: exit 2
    verdict.digest = f"{message.digest_name}:{artifact_digest.digest.hex()}"
    attrs = verify_signer_info(
        message, cert, content_digest=artifact_digest.digest, content_type="data", where=where
    )
    check_signing_certificate(attrs, cert, where, required=True)
    claimed = attrs.get("signing_time")
    verdict.signing_time = None if claimed is None else asn1_utc(claimed, "signingTime", where)

    verdict.timestamp = _trusted_timestamp(message, policy, judge, where)
    if verdict.timestamp is None and policy.require_timestamp:
        judge.soft(
            f"{where}: no trusted RFC 3161 timestamp, and one is required",
            code="timestamp-required",
        )
    now = policy.at or dt.datetime.now(dt.UTC)
    moment = verdict.timestamp.gen_time if verdict.timestamp else now

    try:
        check_validity(cert, moment, "signer certificate")
    except VerificationError as exc:
        proof = _time_source(verdict.timestamp, policy.at, now)
        judge.soft(f"{where}: {exc.message}, judged at {proof}", code=exc.code)
        # audit level: the rest of the path is still judged, inside the leaf's validity
        moment = min(max(moment, cert.not_valid_before_utc), cert.not_valid_after_utc)
    chain = validate_path(
        cert, message.certificates, policy.trust_roots, at=moment, purpose=CODE_SIGNING
    )
    _check_identity(cert, policy.identities, where)
    _check_revocation(chain, policy, verdict.timestamp, now, judge, where)
    verdict.verified = True


def _trusted_timestamp(
    message: SignedMessage, policy: VerifyPolicy, judge: _Judge, where: str
) -> TimestampToken | None:
    """The earliest token that verifies over this signature; problems are time-class issues."""
    tokens = message.timestamp_tokens
    if not tokens:
        return None
    if not policy.tsa_roots:
        # Not a problem by itself: without a trusted token, time is judged at "now".
        judge.warn(
            f"{where}: carries a timestamp that is not used: no TSA roots were given",
            code="timestamp-unused",
        )
        return None
    good: list[TimestampToken] = []
    problems: list[str] = []
    for index, token_der in enumerate(tokens):
        try:
            good.append(
                verify_token(
                    token_der,
                    signed_value=message.signature,
                    roots=policy.tsa_roots,
                    where=f"timestamp {index + 1}",
                    certs=policy.tsa_certs,
                )
            )
        except VerificationError as exc:
            problems.append(exc.message)
    if not good:
        judge.soft(
            f"{where}: timestamp not accepted: {'; '.join(problems)}", code="timestamp-untrusted"
        )
        return None
    return min(good, key=lambda token: token.gen_time)


IdentityKind = Literal["subject", "email", "dns", "uri"]
_PREFIXES: tuple[IdentityKind, ...] = ("subject", "email", "dns", "uri")


@dataclass(frozen=True)
class Identity:
    """One allowed signer: a subject DN or one typed subjectAltName, in comparable form."""

    kind: IdentityKind
    value: str
    text: str


#: Unescaped spaces beside an RDN separator: RFC 4514 has none there, people write them.
_SPACE_AROUND_SEPARATOR = re.compile(r"(?<!\\)\s+(?=[,+])|(?<=[,+])(?<!\\[,+])\s+")


def _subject_form(text: str) -> str | None:
    """The RFC 4514 normal form of a DN; None when `text` is not one."""
    try:  # "CN=a, O=b" and "CN=a,O=b" name the same subject
        name = x509.Name.from_rfc4514_string(_SPACE_AROUND_SEPARATOR.sub("", text.strip()))
    except ValueError:
        return None
    return name.rfc4514_string() if len(name) else None


def _email_form(text: str) -> str | None:
    """local@domain with the domain in lower case (the local part is case-sensitive)."""
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain or any(c.isspace() for c in text):
        return None
    return f"{local}@{domain.lower()}"


def _dns_form(text: str) -> str | None:
    name = text.strip().rstrip(".").lower()
    return name if name and all(part for part in name.split(".")) and "@" not in name else None


def parse_identity(text: str) -> Identity:
    """`subject:DN`, `email:ADDR`, `dns:NAME`, `uri:URI`, or a bare DN (the subject, as before)."""
    prefix, colon, rest = text.partition(":")
    bare = not (colon and prefix.lower() in _PREFIXES)
    kind: IdentityKind = "subject" if bare else prefix.lower()  # type: ignore[assignment]
    body = text if bare else rest
    if kind == "subject":
        value = _subject_form(body)
    elif kind == "email":
        value = _email_form(body)
    elif kind == "dns":
        value = _dns_form(body)
    else:
        value = body if body and body == body.strip() else None
    if value is None:
        if bare:
            raise ConfigError(
                f"identity {text!r}: not an RFC 4514 subject DN",
                hint="write subject:CN=...,O=..., email:ADDRESS, dns:NAME or uri:URI",
                code="identity-malformed",
                field="identity",
            )
        raise ConfigError(
            f"identity {text!r}: not a valid {kind} value",
            code="identity-malformed",
            field="identity",
        )
    return Identity(kind, value, text)


def parse_identities(texts: Sequence[str]) -> list[Identity]:
    return [parse_identity(text) for text in texts]


def _identity_names(cert: x509.Certificate) -> set[tuple[str, str]]:
    """The certificate's names, each tagged with its kind so that kinds never cross-match."""
    names: set[tuple[str, str]] = {("subject", cert.subject.rfc4514_string())}
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return names
    for value in san.get_values_for_type(x509.RFC822Name):
        if (email := _email_form(value)) is not None:
            names.add(("email", email))
    for value in san.get_values_for_type(x509.DNSName):
        if (dns := _dns_form(value)) is not None:
            names.add(("dns", dns))
    for value in san.get_values_for_type(x509.UniformResourceIdentifier):
        names.add(("uri", value))
    return names


def _check_identity(cert: x509.Certificate, identities: Sequence[str], where: str) -> None:
    if not identities:
        return
    wanted = {(identity.kind, identity.value) for identity in parse_identities(identities)}
    if not _identity_names(cert) & wanted:
        raise VerificationError(
            f"{where}: signer {describe(cert)!r} is not an allowed identity "
            f"(allowed: {', '.join(identities)})",
            code="identity-mismatch",
        )


def _check_revocation(
    chain: Sequence[x509.Certificate],
    policy: VerifyPolicy,
    token: TimestampToken | None,
    now: dt.datetime,
    judge: _Judge,
    where: str,
) -> None:
    """A revocation before the signing time fails; keyCompromise fails whatever the time.

    Without a trusted token the signing time is unknown: a revocation up to now (or the
    given time) counts, and the message says which moment it was judged at.
    """
    if not policy.crls:
        return
    signing_moment = token.gen_time if token else now
    judged = _time_source(token, policy.at, now)
    for index, cert in enumerate(chain[:-1]):
        issuer = chain[index + 1]
        for crl in policy.crls:
            if crl.issuer != cert.issuer:
                continue
            if not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
                judge.soft(
                    f"{where}: a CRL names {describe(issuer)!r} as issuer but its signature "
                    "does not verify with that CA's key",
                    code="crl-bad-signature",
                )
                continue
            next_update = crl.next_update_utc
            if next_update is not None and next_update < now:
                # an old CRL may predate the revocation that matters: it proves nothing now
                moment = "the given time" if policy.at else "now,"
                judge.soft(
                    f"{where}: the CRL of {describe(issuer)!r} is out of date (nextUpdate "
                    f"{utc_text(next_update)}, before {moment} {utc_text(now)}); "
                    "fetch a current one",
                    code="crl-stale",
                )
            revoked = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
            if revoked is None:
                continue
            reason = _reason(revoked)
            when = revoked.revocation_date_utc
            role = "signer certificate" if index == 0 else "CA certificate"
            if reason == x509.ReasonFlags.key_compromise:
                judge.soft(
                    f"{where}: {role} {describe(cert)!r} was revoked for key compromise on "
                    f"{utc_text(when)}; no signature by it is trusted",
                    code="key-compromised",
                )
            elif when <= signing_moment:
                before = f"the signing time {utc_text(token.gen_time)}" if token else judged
                judge.soft(
                    f"{where}: {role} {describe(cert)!r} was revoked on {utc_text(when)}"
                    f"{f' ({reason.value})' if reason else ''}, before {before}",
                    code="revoked",
                )


def _reason(revoked: x509.RevokedCertificate) -> x509.ReasonFlags | None:
    try:
        return revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        return None


def load_crl(path: Path) -> x509.CertificateRevocationList:
    data = read_capped(path, what="CRL", limit=CRL_LIMIT, field="crl")
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError:
        raise ConfigError(
            f"CRL {path}: not a PEM or DER CRL", code="malformed-crl", field="crl"
        ) from None
