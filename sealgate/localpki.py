"""A throwaway local PKI for the embedded demo and the tests: CAs, signer and TSA certificates.

CA keys live only in this process's memory: only certificates leave it (a TSA signing key is
written, mode 0600, because `openssl ts -reply` reads it from a file). Production certificates
come from the organisation's CA through `sealgate keys csr`.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: What a CA certificate may do: sign certificates and CRLs, nothing else.
CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


#: What a timestamping certificate may do (RFC 3161 2.3): sign, and mean it.
TSA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=True,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)
ORGANIZATION = "Sealgate local PKI"


def pki_name(common_name: str, organization: str = ORGANIZATION) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def ca_certificate(
    subject: x509.Name,
    public_key: CertificatePublicKeyTypes,
    signing_key: CertificateIssuerPrivateKeyTypes,
    parent: x509.Certificate | None = None,
    *,
    path_length: int | None = None,
    days: int = 3650,
    eku: list[x509.ObjectIdentifier] | None = None,
) -> x509.Certificate:
    """A CA certificate: self-signed when `parent` is None, else issued by `parent` (whose key
    is `signing_key`); `eku` None leaves out extendedKeyUsage (an intermediate's EKU
    constrains what it may issue, as the CA/B Forum profiles have it)."""
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(parent.subject if parent else subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(CA_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if parent is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()),
            critical=False,
        )
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def tsa_certificate(
    public_key: CertificatePublicKeyTypes,
    subject: x509.Name,
    issuer: x509.Certificate,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    *,
    eku_critical: bool | None = True,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> x509.Certificate:
    """A timestamping leaf; RFC 3161 wants its timeStamping EKU critical (`eku_critical`
    False or None make the broken variants a TSA client must refuse)."""
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(days=1))
        .not_valid_after(not_after or now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(TSA_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if eku_critical is not None:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=eku_critical
        )
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass
class LocalCA:
    """A root CA (optionally with one intermediate) that issues code-signing certificates."""

    name: str = "Sealgate Local Root CA"
    with_intermediate: bool = False
    organization: str = ORGANIZATION
    root_key: ec.EllipticCurvePrivateKey = field(init=False, repr=False)
    root: x509.Certificate = field(init=False)
    issuer_key: ec.EllipticCurvePrivateKey = field(init=False, repr=False)
    issuer: x509.Certificate = field(init=False)

    def __post_init__(self) -> None:
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        subject = pki_name(self.name, self.organization)
        self.root = ca_certificate(subject, self.root_key.public_key(), self.root_key)
        self.issuer_key, self.issuer = self.root_key, self.root
        if self.with_intermediate:
            self.issuer_key = ec.generate_private_key(ec.SECP256R1())
            self.issuer = self.intermediate(f"{self.name} Intermediate", self.issuer_key)

    def intermediate(
        self,
        common_name: str,
        key: ec.EllipticCurvePrivateKey,
        *,
        path_length: int | None = None,
        days: int = 3650,
        eku: list[x509.ObjectIdentifier] | None = None,
    ) -> x509.Certificate:
        """A CA certificate under the root for `key` (which stays with the caller)."""
        return ca_certificate(
            pki_name(common_name, self.organization), key.public_key(), self.root_key, self.root,
            path_length=path_length, days=days, eku=eku,
        )  # fmt: skip

    def issue(
        self,
        public_key: CertificatePublicKeyTypes,
        common_name: str = "Sealgate release signer",
        *,
        eku: list[x509.ObjectIdentifier] | None = None,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        email: str | None = None,
    ) -> x509.Certificate:
        """A leaf certificate for a key held elsewhere; code signing EKU unless `eku` says otherwise."""
        now = _now()
        usages = [ExtendedKeyUsageOID.CODE_SIGNING] if eku is None else eku
        builder = (
            x509.CertificateBuilder()
            .subject_name(pki_name(common_name, self.organization))
            .issuer_name(self.issuer.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - dt.timedelta(hours=1))
            .not_valid_after(not_after or now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.issuer_key.public_key()),
                critical=False,
            )
        )
        if usages:
            builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        if email:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False
            )
        return builder.sign(self.issuer_key, hashes.SHA256())

    def chain(self) -> list[x509.Certificate]:
        """The certificates between a leaf and the root, root excluded."""
        return [self.issuer] if self.with_intermediate else []


def write_pem(path: Path, *certs: x509.Certificate) -> Path:
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
    return path


def write_private_key(path: Path, key: PrivateKeyTypes) -> Path:
    """PKCS#8 PEM, mode 0600 from the start: for tools such as `openssl ts -reply` that read
    key files (only into folders the caller owns, never the repository)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return path
