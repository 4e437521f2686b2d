"""The service's one door to the signer: keys opened from their URIs and kept in a bounded pool
of sessions, `sign_digests()` for a request's batch, and the audit key's note signatures and
timestamps. Signer errors become ServiceErrors here: input faults 422, backend faults 503."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from sealgate.service.config import KeyConfig, ServiceConfig
from sealgate.service.errors import ServiceConfigError, ServiceError
from sealgate.service.protocol import ArtifactDigest
from signer.algorithms import KeyKind, SignatureScheme, scheme_for
from signer.certificates import load_certificate, load_certificates
from signer.chain import load_trust_roots
from signer.errors import SignerError
from signer.files import read_capped
from signer.keys import RemoteKey, open_key
from signer.sign import DigestToSign, SignedBatch, SignOptions, sign_digests
from signer.timestamp import TimestampClient, TimestampToken, TsaSettings, verify_token

__all__ = [
    "KeyPool",
    "NoteKey",
    "SignedBatch",
    "Signer",
    "TimestampToken",
    "load_tsa_settings",
    "read_capped_file",
    "service_error",
    "timestamp_bytes",
    "verify_timestamp",
]

_T = TypeVar("_T")
#: Every PKCS#11 call of the process goes through this lock: python-pkcs11 initialises modules
#: with C_Initialize(NULL), which promises that no two threads call in at once, and SoftHSM
#: then runs without its own locks (two threads signing at once corrupt its heap).
_PKCS11_LOCK = threading.RLock()

#: Signer reason codes that mean "the request is wrong", not "the backend is".
_INPUT_CODES = frozenset(
    {"nothing-to-sign", "bad-name", "duplicate-name", "unknown-digest-algorithm",
     "digest-algorithm-mismatch", "bad-digest", "digest-length"}
)  # fmt: skip


def service_error(exc: SignerError) -> ServiceError:
    """A signer failure as the service answers it: 422 for the request's fault, else 503."""
    status = 422 if exc.code in _INPUT_CODES else 503
    return ServiceError(exc.message, status=status, code=exc.code, field=exc.field,
                        exit_code=exc.exit_code)  # fmt: skip


def read_capped_file(path: Path, *, what: str, limit: int) -> bytes:
    """A regular file of at most `limit` bytes (the signer's capped reader: FIFOs, devices,
    folders and oversized files refused at once), its refusals as ServiceConfigErrors."""
    try:
        return read_capped(path, what=what, limit=limit)
    except SignerError as exc:
        raise ServiceConfigError(exc.message, code=exc.code, field=exc.field) from None


def load_tsa_settings(urls: Sequence[str], roots: Sequence[Path]) -> TsaSettings | None:
    if not urls:
        return None
    trusted: list[x509.Certificate] = []
    for path in roots:
        trusted += load_trust_roots(path, "TSA")
    return TsaSettings(urls=tuple(urls), roots=tuple(trusted))


class _Serialised(RemoteKey):
    """A PKCS#11 key whose every call holds the process-wide PKCS#11 lock."""

    def __init__(self, key: RemoteKey) -> None:
        self._key = key
        self.display_uri = key.display_uri

    @staticmethod
    def _locked(call: Callable[[], _T]) -> _T:
        with _PKCS11_LOCK:
            return call()

    def public_key(self) -> PublicKeyTypes:
        return self._locked(self._key.public_key)

    def certificate(self) -> x509.Certificate | None:
        return self._locked(self._key.certificate)

    def sign_digest(self, digest: bytes, scheme: SignatureScheme) -> bytes:
        return self._locked(lambda: self._key.sign_digest(digest, scheme))

    def sign_message(self, message: bytes, scheme: SignatureScheme) -> bytes:
        return self._locked(lambda: self._key.sign_message(message, scheme))

    def sign_many(self, payloads: Sequence[bytes], scheme: SignatureScheme) -> list[bytes]:
        return self._locked(lambda: self._key.sign_many(payloads, scheme))

    def sign(self, tbs: bytes, scheme: SignatureScheme) -> bytes:
        return self._locked(lambda: self._key.sign(tbs, scheme))

    def check_signature(self, signature: bytes, tbs: bytes, scheme: SignatureScheme) -> None:
        self._locked(lambda: self._key.check_signature(signature, tbs, scheme))

    def close(self) -> None:  # RemoteKey's __exit__ calls this
        self._locked(self._key.close)


def open_service_key(uri: str) -> RemoteKey:
    """`open_key`, with PKCS#11 keys serialised process-wide (see _PKCS11_LOCK)."""
    if not uri.startswith("pkcs11:"):
        return open_key(uri)
    with _PKCS11_LOCK:
        return _Serialised(open_key(uri))


class KeyPool:
    """Up to `size` open handles to one key: each has its own HSM session or KMS connection, so
    concurrent requests never share one, and the backend sees at most `size` calls at a time."""

    def __init__(self, config: KeyConfig) -> None:
        self.config = config
        self._idle: queue.LifoQueue[RemoteKey] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(max(1, config.pool_size))
        self._lock = threading.Lock()
        self._closed = False
        cert = load_certificate(config.certificate) if config.certificate else None
        chain: list[x509.Certificate] = []
        for path in config.chain:
            chain += load_certificates(path, "certificate chain")
        self.options = SignOptions(
            cert=cert,
            chain=tuple(chain),
            cert_source=str(config.certificate or "the certificate on the token"),
            tsa=load_tsa_settings(config.tsa_urls, config.tsa_roots),
        )
        with self.handle() as key:  # fail at start-up, not at the first request
            self.scheme: SignatureScheme = scheme_for(key.public_key())

    @contextlib.contextmanager
    def handle(self) -> Iterator[RemoteKey]:
        with self._slots:
            try:
                key = self._idle.get_nowait()
            except queue.Empty:
                try:
                    key = open_service_key(self.config.uri)
                except SignerError as exc:
                    raise service_error(exc) from None
            try:
                yield key
            except SignerError as exc:
                if exc.code in _INPUT_CODES:  # a refused request leaves the session sound
                    self._give_back(key)
                else:
                    key.close()  # a key that failed mid-call may hold a broken session
                raise
            except BaseException:
                key.close()
                raise
            self._give_back(key)

    def _give_back(self, key: RemoteKey) -> None:
        with self._lock:
            if self._closed:
                key.close()
            else:
                self._idle.put(key)

    def sign(self, artifacts: Sequence[ArtifactDigest]) -> SignedBatch:
        items = [DigestToSign(a.name, a.digest_algorithm, a.digest) for a in artifacts]
        try:
            with self.handle() as key:
                return sign_digests(key, items, self.options)
        except SignerError as exc:
            raise service_error(exc) from None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            while True:
                try:
                    self._idle.get_nowait().close()
                except queue.Empty:
                    break


class Signer:
    """Every configured key's pool, opened at start-up."""

    def __init__(self, config: ServiceConfig) -> None:
        self.pools: dict[str, KeyPool] = {}
        try:
            for name, key in config.keys.items():
                self.pools[name] = KeyPool(key)
        except BaseException:
            self.close()
            raise

    def sign(self, key_name: str, artifacts: Sequence[ArtifactDigest]) -> SignedBatch:
        return self.pools[key_name].sign(artifacts)

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()


@dataclass
class NoteKey:
    """The audit log's own key (never a release key): signs checkpoint notes."""

    uri: str

    def __post_init__(self) -> None:
        try:
            self._key = open_service_key(self.uri)
            self.public_key: PublicKeyTypes = self._key.public_key()
            self.scheme = scheme_for(self.public_key)
        except SignerError as exc:
            raise service_error(exc) from None
        self._lock = threading.Lock()

    @property
    def is_ed25519(self) -> bool:
        return self.scheme.kind is KeyKind.ED25519

    def sign(self, message: bytes) -> bytes:
        """A signature over `message` (Ed25519 signs it whole; ECDSA returns DER)."""
        try:
            with self._lock:
                signature = self._key.sign(message, self.scheme)
                self._key.check_signature(signature, message, self.scheme)
                return signature
        except SignerError as exc:
            raise service_error(exc) from None

    def close(self) -> None:
        self._key.close()


def timestamp_bytes(settings: TsaSettings, data: bytes) -> TimestampToken:
    """An RFC 3161 token over `data` (a checkpoint's signature), SHA-256 imprint."""
    try:
        with TimestampClient(settings) as client:
            return client.stamp(data, "sha256")
    except SignerError as exc:
        raise service_error(exc) from None


def verify_timestamp(
    token_der: bytes, data: bytes, roots: Sequence[x509.Certificate], where: str
) -> TimestampToken:
    """Check a token over `data` against `roots`; a ServiceError (the signer's code) says why
    not, so the audit verifier, which may not import signer, can catch it."""
    try:
        return verify_token(token_der, signed_value=data, roots=roots, where=where)
    except SignerError as exc:
        raise service_error(exc) from None
