"""Signer certificates: loading, and the checks that keep a wrong certificate out of a signature."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID

from signer.errors import ConfigError


def load_certificates(path: Path) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle, or the one in a DER file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such certificate file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read certificate file ({exc.strerror})") from None
    try:
        if b"-----BEGIN" in data:
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs = [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise ConfigError(f"{path}: not a PEM or DER X.509 certificate") from None
    if not certs:
        raise ConfigError(f"{path}: holds no certificate")
    return certs


def load_certificate(path: Path) -> x509.Certificate:
    certs = load_certificates(path)
    if len(certs) > 1:
        raise ConfigError(
            f"{path}: holds {len(certs)} certificates; give the signer's alone and the rest with --chain"
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


def check_signer_certificate(
    cert: x509.Certificate,
    public_key: PublicKeyTypes,
    *,
    where: str,
    key_name: str,
    now: dt.datetime | None = None,
) -> None:
    """Refuse a certificate that does not belong to the key, is not for code signing, or is not valid now."""
    if spki_der(cert.public_key()) != spki_der(public_key):
        raise ConfigError(
            f"{where}: certificate {describe(cert)!r} does not match the public key of {key_name}",
            hint="use the certificate issued for this key",
        )
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise ConfigError(
            f"{where}: certificate {describe(cert)!r} has no extendedKeyUsage; codeSigning is required"
        ) from None
    if ExtendedKeyUsageOID.CODE_SIGNING not in usages:
        raise ConfigError(
            f"{where}: certificate {describe(cert)!r} lacks the codeSigning extended key usage"
        )
    moment = now or dt.datetime.now(dt.UTC)
    if moment < cert.not_valid_before_utc:
        raise ConfigError(
            f"{where}: certificate {describe(cert)!r} is not valid before "
            f"{cert.not_valid_before_utc.isoformat()}"
        )
    if moment > cert.not_valid_after_utc:
        raise ConfigError(
            f"{where}: certificate {describe(cert)!r} expired on {cert.not_valid_after_utc.isoformat()}"
        )
