"""Signature schemes: which digest and padding a key uses, and how each is named in CMS."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import Enum
from typing import Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)

from signer.errors import BackendUnavailableError, ConfigError

HashName = Literal["sha256", "sha384", "sha512"]
HASH_NAMES: tuple[HashName, ...] = ("sha256", "sha384", "sha512")
RsaPadding = Literal["pkcs1v15", "pss"]


class KeyKind(Enum):
    """The key families Sealgate signs with."""

    EC_P256 = "ecdsa-p256"
    EC_P384 = "ecdsa-p384"
    RSA = "rsa"
    ED25519 = "ed25519"


@dataclass(frozen=True)
class SignatureScheme:
    """A key kind plus the digest (and, for RSA, the padding) used to sign with it."""

    kind: KeyKind
    hash_name: HashName
    rsa_padding: RsaPadding | None = None
    #: RSASSA-PSS salt length as the signature declares it (RFC 4055); None: the digest size.
    pss_salt_length: int | None = None

    @property
    def digest_size(self) -> int:
        return hashlib.new(self.hash_name).digest_size

    @property
    def hash_algorithm(self) -> hashes.HashAlgorithm:
        return {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}[
            self.hash_name
        ]

    @property
    def signs_digest(self) -> bool:
        """Ed25519 signs the (small) signed attributes themselves; the others sign a digest."""
        return self.kind is not KeyKind.ED25519

    def describe(self) -> str:
        if self.kind is KeyKind.RSA:
            return f"rsa-{self.rsa_padding}-{self.hash_name}"
        if self.kind is KeyKind.ED25519:
            return "ed25519"
        return f"{self.kind.value}-{self.hash_name}"


def key_kind(public_key: PublicKeyTypes) -> KeyKind:
    """Classify a public key, refusing what Sealgate does not sign with."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if isinstance(public_key.curve, ec.SECP256R1):
            return KeyKind.EC_P256
        if isinstance(public_key.curve, ec.SECP384R1):
            return KeyKind.EC_P384
        raise ConfigError(
            f"unsupported EC curve {public_key.curve.name}: use P-256 or P-384",
            code="unsupported-key",
            field="key",
        )
    if isinstance(public_key, rsa.RSAPublicKey):
        if not 2048 <= public_key.key_size <= 4096:
            raise ConfigError(
                f"unsupported RSA key size {public_key.key_size}: use 2048 to 4096 bits",
                code="unsupported-key",
                field="key",
            )
        return KeyKind.RSA
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return KeyKind.ED25519
    raise ConfigError(
        f"unsupported key type {type(public_key).__name__}", code="unsupported-key", field="key"
    )


def scheme_for(
    public_key: PublicKeyTypes,
    *,
    rsa_digest: HashName = "sha256",
    rsa_padding: RsaPadding = "pkcs1v15",
) -> SignatureScheme:
    """The scheme a key signs with: the digest follows the curve; RSA takes the caller's choice."""
    kind = key_kind(public_key)
    if kind is KeyKind.EC_P256:
        return SignatureScheme(kind, "sha256")
    if kind is KeyKind.EC_P384:
        return SignatureScheme(kind, "sha384")
    if kind is KeyKind.ED25519:
        return SignatureScheme(kind, "sha512")
    if rsa_digest not in HASH_NAMES:
        raise ConfigError(
            f"unsupported digest {rsa_digest!r}: use one of {', '.join(HASH_NAMES)}",
            code="unknown-digest-algorithm",
            field="digest",
        )
    return SignatureScheme(kind, rsa_digest, rsa_padding)


def ecdsa_raw_to_der(raw: bytes) -> bytes:
    """PKCS#11 returns ECDSA as r||s; CMS and X.509 want the DER SEQUENCE of two INTEGERs."""
    if not raw or len(raw) % 2:
        # what an HSM returned, not a file a user gave: the backend misbehaved
        raise BackendUnavailableError(
            f"malformed raw ECDSA signature of {len(raw)} bytes", code="backend-bad-signature"
        )
    half = len(raw) // 2
    return encode_dss_signature(
        int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
    )


def ecdsa_der_to_raw(der: bytes, field_bytes: int) -> bytes:
    r, s = decode_dss_signature(der)
    return r.to_bytes(field_bytes, "big") + s.to_bytes(field_bytes, "big")


def verify_signature(
    public_key: PublicKeyTypes, signature: bytes, tbs: bytes, scheme: SignatureScheme
) -> None:
    """Check a backend's signature over `tbs` (or its digest): fail closed on a misbehaving HSM/KMS.

    Raises cryptography's InvalidSignature when the signature does not verify.
    """
    if scheme.signs_digest:
        digest = hashlib.new(scheme.hash_name, tbs).digest()
        verify_digest_signature(public_key, signature, digest, scheme)
    elif isinstance(public_key, ed25519.Ed25519PublicKey):
        public_key.verify(signature, tbs)
    else:
        raise ConfigError(f"{scheme.describe()} needs an Ed25519 key", code="unsupported-scheme")


def verify_digest_signature(
    public_key: PublicKeyTypes, signature: bytes, digest: bytes, scheme: SignatureScheme
) -> None:
    prehashed = Prehashed(scheme.hash_algorithm)
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        public_key.verify(signature, digest, ec.ECDSA(prehashed))
    elif isinstance(public_key, rsa.RSAPublicKey):
        public_key.verify(signature, digest, rsa_padding_for(scheme), prehashed)
    else:
        raise ConfigError(f"{scheme.describe()} does not sign a digest", code="unsupported-scheme")


def max_pss_salt_length(public_key: rsa.RSAPublicKey, hash_name: str) -> int:
    """The longest salt a PSS signature with this key and hash can hold (RFC 8017 9.1.1)."""
    em_len = (public_key.key_size - 1 + 7) // 8
    return em_len - hashlib.new(hash_name).digest_size - 2


def rsa_padding_for(scheme: SignatureScheme) -> padding.AsymmetricPadding:
    if scheme.rsa_padding == "pss":
        # Salt as long as the digest unless the signature says otherwise: RFC 4055 recommends
        # it and every HSM/KMS produces it; OpenSSL signs with the longest salt by default.
        salt = scheme.digest_size if scheme.pss_salt_length is None else scheme.pss_salt_length
        return padding.PSS(mgf=padding.MGF1(scheme.hash_algorithm), salt_length=salt)
    return padding.PKCS1v15()
