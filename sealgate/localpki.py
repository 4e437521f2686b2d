"""A throwaway local CA for the embedded demo and the tests.

Its private key lives only in this process's memory and is never written anywhere: only
certificates leave it. Production certificates come from the organisation's CA through
`sealgate keys csr`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
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


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Sealgate local PKI"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


@dataclass
class LocalCA:
    """A root CA (optionally with one intermediate) that issues code-signing certificates."""

    name: str = "Sealgate Local Root CA"
    with_intermediate: bool = False
    root_key: ec.EllipticCurvePrivateKey = field(init=False, repr=False)
    root: x509.Certificate = field(init=False)
    issuer_key: ec.EllipticCurvePrivateKey = field(init=False, repr=False)
    issuer: x509.Certificate = field(init=False)

    def __post_init__(self) -> None:
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = self._ca_cert(self.name, self.root_key, self.root_key.public_key(), None)
        self.issuer_key, self.issuer = self.root_key, self.root
        if self.with_intermediate:
            self.issuer_key = ec.generate_private_key(ec.SECP256R1())
            self.issuer = self._ca_cert(
                f"{self.name} Intermediate", self.root_key, self.issuer_key.public_key(), self.root
            )

    def _ca_cert(
        self,
        common_name: str,
        signing_key: ec.EllipticCurvePrivateKey,
        public_key: ec.EllipticCurvePublicKey,
        parent: x509.Certificate | None,
    ) -> x509.Certificate:
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(parent.subject if parent else _name(common_name))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                CA_KEY_USAGE,
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        )
        return builder.sign(signing_key, hashes.SHA256())

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
            .subject_name(_name(common_name))
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
