"""The one small interface every key backend implements: a public key, and signing a digest."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from types import TracebackType

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from signer.algorithms import SignatureScheme, verify_signature
from signer.errors import BackendUnavailableError, ConfigError


class RemoteKey(ABC):
    """A private key that lives in an HSM or KMS; only digests (or, for Ed25519, the small
    signed attributes) are sent to it, never the artifact."""

    #: The URI as it may be shown to users: secrets (PINs, tokens) removed.
    display_uri: str

    @abstractmethod
    def public_key(self) -> PublicKeyTypes:
        """The public half, read from the backend."""

    def certificate(self) -> x509.Certificate | None:
        """A certificate stored next to the key (HSM tokens can hold one); None when there is none."""
        return None

    @abstractmethod
    def sign_digest(self, digest: bytes, scheme: SignatureScheme) -> bytes:
        """Sign a precomputed digest; ECDSA signatures are returned DER-encoded."""

    def sign_message(self, message: bytes, scheme: SignatureScheme) -> bytes:
        """Sign a message whole (Ed25519, which has no prehashed form)."""
        raise ConfigError(
            f"{self.display_uri}: this backend cannot sign with {scheme.describe()}",
            code="unsupported-scheme",
        )

    def sign_many(self, payloads: Sequence[bytes], scheme: SignatureScheme) -> list[bytes]:
        """Sign several to-be-signed payloads; backends with a batch API override this."""
        return [self.sign(payload, scheme) for payload in payloads]

    def sign(self, tbs: bytes, scheme: SignatureScheme) -> bytes:
        """Sign `tbs` the way `scheme` says, hashing locally when the scheme signs a digest."""
        if scheme.signs_digest:
            return self.sign_digest(hashlib.new(scheme.hash_name, tbs).digest(), scheme)
        return self.sign_message(tbs, scheme)

    def check_signature(self, signature: bytes, tbs: bytes, scheme: SignatureScheme) -> None:
        """Verify what the backend returned before anything is written: never emit a bad signature."""
        try:
            verify_signature(self.public_key(), signature, tbs, scheme)
        except InvalidSignature:
            raise BackendUnavailableError(
                f"{self.display_uri}: the signature returned by the backend does not verify "
                "against its public key",
                hint="the HSM/KMS misbehaved or the key changed during signing; nothing was written",
                code="backend-bad-signature",
                field="key",
            ) from None

    def public_key_der(self) -> bytes:
        return self.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def close(self) -> None:  # noqa: B027 - an optional hook; most backends hold nothing
        """Release sessions and connections."""

    def __enter__(self) -> RemoteKey:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
