"""DSSE envelopes: sign any payload with an HSM/KMS key, and verify one against trusted keys.

The signature covers PAE(payloadType, payload), never the JSON, so the envelope's encoding
can change without breaking it while its type and bytes cannot. ECDSA signatures are DER,
as in the other DSSE implementations; RSA uses PKCS#1 v1.5 with SHA-256 and Ed25519 signs
the PAE bytes themselves (`scheme_for`'s defaults), so a verifier derives the scheme from
the key alone.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asn1crypto import pem
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from signer.algorithms import SignatureScheme, scheme_for, verify_signature
from signer.errors import ConfigError, VerificationError
from signer.files import CERTIFICATE_LIMIT, read_capped
from signer.keys.base import RemoteKey

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"


def PAE(payload_type: str, payload: bytes) -> bytes:  # noqa: N802 - the DSSE spec's name
    """Pre-Authentication Encoding: "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body."""
    encoded_type = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(encoded_type), encoded_type, len(payload), payload)


def keyid_for(public_key: PublicKeyTypes) -> str:
    """SHA-256 of the SubjectPublicKeyInfo DER, hex: stable across backends for one key."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64decode(text: object, what: str) -> bytes:
    """Standard or URL-safe base64 (the spec allows both), padded or not, but canonical.

    A non-canonical encoding (stray trailing bits, mixed alphabets) is refused so that one
    envelope has one meaning.
    """
    if not isinstance(text, str):
        raise VerificationError(
            f"{what}: expected a base64 string, got {type(text).__name__}",
            code="malformed-envelope",
        )
    url_safe = "-" in text or "_" in text
    if url_safe and ("+" in text or "/" in text):
        raise VerificationError(
            f"{what}: mixes standard and URL-safe base64", code="malformed-envelope"
        )
    body = text.rstrip("=")
    padding = len(text) - len(body)
    if padding and (len(text) % 4 or padding != -len(body) % 4):
        raise VerificationError(
            f"{what}: is not valid base64 (bad padding)", code="malformed-envelope"
        )
    altchars = b"-_" if url_safe else None
    try:
        raw = base64.b64decode(body + "=" * (-len(body) % 4), altchars=altchars, validate=True)
    except ValueError:
        raise VerificationError(f"{what}: is not valid base64", code="malformed-envelope") from None
    if base64.b64encode(raw, altchars=altchars).decode("ascii").rstrip("=") != body:
        raise VerificationError(f"{what}: is not canonical base64", code="malformed-envelope")
    return raw


def sign_envelope(
    key: RemoteKey, payload: bytes, payload_type: str = IN_TOTO_PAYLOAD_TYPE
) -> dict[str, Any]:
    """Sign PAE(payload_type, payload) with the key and check the result before returning it."""
    public = key.public_key()
    scheme = scheme_for(public)
    tbs = PAE(payload_type, payload)
    signature = key.sign(tbs, scheme)
    key.check_signature(signature, tbs, scheme)  # a misbehaving HSM/KMS never emits an envelope
    return {
        "payloadType": payload_type,
        "payload": _b64encode(payload),
        "signatures": [{"keyid": keyid_for(public), "sig": _b64encode(signature)}],
    }


def envelope_bytes(envelope: Mapping[str, Any]) -> bytes:
    """The envelope as written to disk: sorted keys, one trailing newline."""
    return (json.dumps(envelope, sort_keys=True, indent=2) + "\n").encode("utf-8")


@dataclass(frozen=True)
class VerifiedEnvelope:
    """What a verified envelope says, and which trusted key vouched for it."""

    payload_type: str
    payload: bytes
    keyid: str


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise VerificationError(f"envelope: duplicate field {key!r}", code="malformed-envelope")
        result[key] = value
    return result


def _no_constant(token: str) -> Any:
    raise VerificationError(
        f"envelope: holds {token}, which is not JSON", code="malformed-envelope"
    )


def load_envelope(envelope: Mapping[str, Any] | bytes | str) -> Mapping[str, Any]:
    """The envelope as one JSON object; duplicate fields and NaN are refused, so no two
    readers of one file can see two envelopes."""
    if isinstance(envelope, bytes | str):
        try:
            envelope = json.loads(
                envelope, object_pairs_hook=_no_duplicates, parse_constant=_no_constant
            )
        except (ValueError, RecursionError, TypeError):  # incl. ints over 4300 digits
            raise VerificationError("envelope: malformed JSON", code="malformed-envelope") from None
    if not isinstance(envelope, Mapping):
        raise VerificationError("envelope: expected an object", code="malformed-envelope")
    return envelope


def _trusted(
    public_keys: Sequence[PublicKeyTypes],
) -> list[tuple[str, PublicKeyTypes, SignatureScheme]]:
    if not public_keys:
        raise ConfigError("no trusted public key was given", code="no-trusted-key")
    return [(keyid_for(k), k, scheme_for(k)) for k in public_keys]


def open_envelope(
    envelope: Mapping[str, Any] | bytes | str,
    public_keys: Sequence[PublicKeyTypes],
    *,
    expected_type: str | None = None,
) -> VerifiedEnvelope:
    """Verify an envelope; on success say which trusted key signed it.

    A signature entry with a keyid is tried only with the trusted key of that keyid (the
    keyid is an unauthenticated hint, so a mismatch never widens what is accepted); one
    without a keyid is tried with every trusted key. One good signature is enough.
    """
    trusted = _trusted(public_keys)
    document = load_envelope(envelope)
    payload_type = document.get("payloadType")
    if not isinstance(payload_type, str):
        raise VerificationError(
            "envelope: payloadType is missing or not a string", code="malformed-envelope"
        )
    if expected_type is not None and payload_type != expected_type:
        raise VerificationError(
            f"envelope: payloadType {payload_type!r} is not the expected {expected_type!r}",
            code="payload-type-mismatch",
        )
    if "payload" not in document:
        raise VerificationError("envelope: payload is missing", code="malformed-envelope")
    payload = _b64decode(document["payload"], "envelope: payload")
    signatures = document.get("signatures")
    if not isinstance(signatures, list):
        raise VerificationError(
            "envelope: signatures is missing or not a list", code="malformed-envelope"
        )
    if not signatures:
        raise VerificationError("envelope: has no signatures", code="unsigned")
    try:
        tbs = PAE(payload_type, payload)
    except UnicodeEncodeError:  # JSON allows lone surrogates (\ud800); UTF-8 does not
        raise VerificationError(
            "envelope: payloadType is not valid Unicode", code="malformed-envelope"
        ) from None
    problems: list[str] = []
    untrusted: list[str] = []
    for index, entry in enumerate(signatures):
        if not isinstance(entry, Mapping):
            problems.append(f"signature {index}: not an object")
            continue
        keyid = entry.get("keyid") or ""
        if not isinstance(keyid, str):
            problems.append(f"signature {index}: keyid is not a string")
            continue
        try:
            signature = _b64decode(entry.get("sig"), f"signature {index}")
        except VerificationError as exc:
            problems.append(exc.message)
            continue
        candidates = [t for t in trusted if t[0] == keyid] if keyid else trusted
        if not candidates:
            untrusted.append(keyid)
            continue
        for candidate_id, public_key, scheme in candidates:
            try:
                verify_signature(public_key, signature, tbs, scheme)
            except (InvalidSignature, UnsupportedAlgorithm, ValueError):
                continue
            return VerifiedEnvelope(payload_type, payload, candidate_id)
        problems.append(
            f"signature {index}"
            + (f" (keyid {keyid[:16]}…)" if keyid else "")
            + " does not verify over payloadType and payload"
        )
    if problems:
        raise VerificationError(
            "no signature verifies: " + "; ".join(problems),
            hint="the payload, payloadType or signature was changed after signing",
            code="bad-signature",
        )
    raise VerificationError(
        f"no signature by a trusted key: envelope keyid(s) {', '.join(k[:16] + '…' for k in untrusted)}",
        hint=f"trusted keyid(s) {', '.join(t[0][:16] + '…' for t in trusted)}",
        code="untrusted-key",
    )


def verify_envelope(
    envelope: Mapping[str, Any] | bytes | str,
    public_keys: Sequence[PublicKeyTypes],
    *,
    expected_type: str | None = None,
) -> tuple[str, bytes]:
    """(payloadType, payload) of an envelope at least one trusted key signed; else VerificationError."""
    verified = open_envelope(envelope, public_keys, expected_type=expected_type)
    return verified.payload_type, verified.payload


def public_keys_from_pem(path: Path) -> list[PublicKeyTypes]:
    """The trusted keys in a PEM file: each CERTIFICATE's key and each PUBLIC KEY.

    A certificate here only carries a key: DSSE has no signing time, so its validity and
    chain are not judged. Private keys are refused: a verifier never needs one.
    """
    data = read_capped(path, what="public key file", limit=CERTIFICATE_LIMIT)
    keys: list[PublicKeyTypes] = []
    try:
        blocks = list(pem.unarmor(data, multiple=True)) if pem.detect(data) else []
    except (ValueError, TypeError):  # asn1crypto raises both on odd armor
        raise ConfigError(f"{path}: malformed PEM", code="malformed-key-file") from None
    for label, _headers, der in blocks:
        if "PRIVATE KEY" in label:
            raise ConfigError(
                f"{path}: holds a private key; give a certificate or public key",
                code="private-key-given",
            )
        try:
            if label == "CERTIFICATE":
                keys.append(x509.load_der_x509_certificate(der).public_key())
            elif label == "PUBLIC KEY":
                keys.append(serialization.load_der_public_key(der))
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise ConfigError(
                f"{path}: malformed {label} block", code="malformed-key-file"
            ) from None
    if not keys:
        raise ConfigError(
            f"{path}: holds no PEM CERTIFICATE or PUBLIC KEY block", code="malformed-key-file"
        )
    return keys
