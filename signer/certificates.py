"""Signer certificates: loading, and the checks that keep a wrong certificate out of a signature."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID

from signer.errors import ConfigError
from signer.files import CERTIFICATE_LIMIT, read_capped

#: anyExtendedKeyUsage (RFC 5280 section 4.2.1.12): a CA with it may issue for any usage.
ANY_EXTENDED_KEY_USAGE = x509.ObjectIdentifier("2.5.29.37.0")


class Problem(str):
    """Why a certificate cannot serve, in words, with the stable reason code beside them: it is
    still a `str`, so callers that only show the text keep working."""

    code: str

    def __new__(cls, text: str, *, code: str) -> Problem:
        made = super().__new__(cls, text)
        made.code = code
        return made


def load_certificates(path: Path, what: str = "certificate file") -> list[x509.Certificate]:
    """Every certificate in a PEM bundle, or the one in a DER file (a regular file, capped)."""
    data = read_capped(path, what=what, limit=CERTIFICATE_LIMIT)
    try:
        if b"-----BEGIN" in data:
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs = [x509.load_der_x509_certificate(data)]
        for cert in certs:  # names are parsed lazily: a garbled one must fail here, typed
            _ = cert.subject.rfc4514_string(), cert.issuer.rfc4514_string()
    except (ValueError, TypeError):
        raise ConfigError(
            f"{path}: not a PEM or DER X.509 certificate", code="malformed-certificate"
        ) from None
    if not certs:
        raise ConfigError(f"{path}: holds no certificate", code="malformed-certificate")
    return certs


def load_certificate(path: Path, what: str = "certificate file") -> x509.Certificate:
    certs = load_certificates(path, what)
    if len(certs) > 1:
        raise ConfigError(
            f"{path}: holds {len(certs)} certificates; give the signer's alone and the "
            "rest as the chain",
            code="several-certificates",
        )
    return certs[0]


def spki_der(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 over the DER certificate, hex: what `openssl x509 -fingerprint -sha256` shows."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def describe(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()


@dataclass(frozen=True)
class Purpose:
    """The extended key usage a leaf must carry; for RFC 3161 also 'critical' and 'only'."""

    name: str
    oid: x509.ObjectIdentifier
    critical: bool = False
    #: RFC 3161 section 2.3: the TSA certificate has this usage and no other.
    exclusive: bool = False
    #: keyUsage bits of which the leaf needs one when it carries keyUsage at all.
    key_usages: tuple[str, ...] = ("digital_signature",)
    #: The reason code of a leaf that may not act for this purpose.
    code: str = "bad-input"


CODE_SIGNING = Purpose("codeSigning", ExtendedKeyUsageOID.CODE_SIGNING, code="no-codesigning")
TIME_STAMPING = Purpose(
    "timeStamping",
    ExtendedKeyUsageOID.TIME_STAMPING,
    code="no-timestamping",
    critical=True,
    exclusive=True,
    key_usages=("digital_signature", "content_commitment"),
)


def usage_problem(cert: x509.Certificate, purpose: Purpose) -> Problem | None:
    """Why the certificate's extended key usage does not allow `purpose`; None when it does."""
    try:
        extension = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        return Problem(
            f"certificate {describe(cert)!r} has no extendedKeyUsage; {purpose.name} is required",
            code=purpose.code,
        )
    if purpose.oid not in extension.value:
        return Problem(
            f"certificate {describe(cert)!r} lacks the {purpose.name} extended key usage",
            code=purpose.code,
        )
    if purpose.exclusive and len(list(extension.value)) != 1:
        others = ", ".join(_usage_name(oid) for oid in extension.value if oid != purpose.oid)
        return Problem(
            f"certificate {describe(cert)!r}: {purpose.name} must be its only extended key "
            f"usage (RFC 3161 section 2.3), it also has {others}",
            code=purpose.code,
        )
    if purpose.critical and not extension.critical:
        return Problem(
            f"certificate {describe(cert)!r}: its {purpose.name} extended key usage is not "
            "marked critical (RFC 3161 requires it)",
            code=purpose.code,
        )
    return None


def _usage_name(oid: x509.ObjectIdentifier) -> str:
    if oid == ANY_EXTENDED_KEY_USAGE:
        return "anyExtendedKeyUsage"
    name = oid._name
    return oid.dotted_string if name == "Unknown OID" else name


def leaf_problem(cert: x509.Certificate, purpose: Purpose) -> Problem | None:
    """Why `cert` cannot be an end-entity signer (a CA, or a keyUsage without signing)."""
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is not None and constraints.ca:
        return Problem(
            f"certificate {describe(cert)!r} is a CA certificate (basicConstraints CA:TRUE); "
            "a CA may not sign as an end entity",
            code=purpose.code,
        )
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None
    if not any(getattr(usage, bit) for bit in purpose.key_usages):
        wanted = " or ".join(_KEY_USAGE_NAMES[bit] for bit in purpose.key_usages)
        return Problem(
            f"certificate {describe(cert)!r}: its keyUsage lacks {wanted}", code=purpose.code
        )
    return None


_KEY_USAGE_NAMES = {"digital_signature": "digitalSignature", "content_commitment": "nonRepudiation"}


def ca_usage_problem(cert: x509.Certificate, purpose: Purpose) -> Problem | None:
    """Why a CA may not issue for `purpose` (CA/B Forum code-signing profile: an EKU that
    excludes it); None when it has no EKU, anyExtendedKeyUsage or the usage itself."""
    try:
        extension = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None
    if purpose.oid in extension or ANY_EXTENDED_KEY_USAGE in extension:
        return None
    usages = ", ".join(_usage_name(oid) for oid in extension) or "none"
    return Problem(
        f"CA {describe(cert)!r} may not issue {purpose.name} certificates: its extended key "
        f"usage is {usages}",
        code="untrusted-chain",
    )


def utc_text(moment: dt.datetime) -> str:
    """A moment as the gate's messages show it: ISO 8601 in UTC with a 'Z'."""
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def validity_problem(cert: x509.Certificate, at: dt.datetime, role: str) -> Problem | None:
    """Why the certificate was not valid at `at`; None when it was."""
    if at < cert.not_valid_before_utc:
        return Problem(
            f"{role} {describe(cert)!r} was not yet valid at {utc_text(at)} "
            f"(valid from {utc_text(cert.not_valid_before_utc)})",
            code="certificate-not-yet-valid",
        )
    if at > cert.not_valid_after_utc:
        return Problem(
            f"{role} {describe(cert)!r} had expired at {utc_text(at)} "
            f"(expired {utc_text(cert.not_valid_after_utc)})",
            code="certificate-expired",
        )
    return None


def check_signer_certificate(
    cert: x509.Certificate,
    public_key: PublicKeyTypes,
    *,
    where: str,
    key_name: str,
    now: dt.datetime | None = None,
) -> None:
    """Refuse, before signing, a certificate that is not this key's, not for code signing,
    or not valid now."""
    if spki_der(cert.public_key()) != spki_der(public_key):
        raise ConfigError(
            f"{where}: certificate {describe(cert)!r} does not match the public key of {key_name}",
            hint="use the certificate issued for this key",
            code="cert-key-mismatch",
        )
    usage = leaf_problem(cert, CODE_SIGNING) or usage_problem(cert, CODE_SIGNING)
    if usage:
        raise ConfigError(f"{where}: {usage}", code="cert-no-codesigning")
    validity = validity_problem(cert, now or dt.datetime.now(dt.UTC), "certificate")
    if validity and validity.code == "certificate-expired":
        raise ConfigError(f"{where}: {validity}", code="cert-expired")
    if validity:
        raise ConfigError(f"{where}: {validity}", code="cert-not-yet-valid")
