"""OpenPGP commit-signature checks done in-process with pysequoia (no gpg per commit).

pysequoia raises bare ``RuntimeError``s whose text carries a Rust backtrace when
``RUST_BACKTRACE`` is set, and says only "no valid signatures found" for every
verification failure.  This module turns those into the typed errors of
:mod:`integrity.errors`, finds the issuer itself (so an unknown key is told
apart from a bad signature) and adds a best-effort reason for the failure.
"""

from __future__ import annotations

import base64
import binascii
import tomllib
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import pysequoia

from integrity.errors import (
    InputError,
    PolicyError,
    SignatureError,
    UnknownKeyError,
    UnsupportedSignatureError,
)

__all__ = [
    "MAX_SIGNATURE_BYTES",
    "SEQUOIA_RIGHTS",
    "OpenPgpKey",
    "OpenPgpKeyring",
    "PolicyAuthorization",
    "SignaturePacket",
    "load_openpgp_key",
    "load_openpgp_keys",
    "parse_sequoia_policy",
    "read_signature_packet",
]

#: The boolean capabilities a sequoia-git ``[authorization.NAME]`` table may grant.
SEQUOIA_RIGHTS: frozenset[str] = frozenset(
    {"sign_commit", "sign_tag", "sign_archive", "add_user", "retire_user", "audit"}
)

# Interpreter-level exceptions that must never be swallowed as "bad input".
_NEVER_WRAP = (KeyboardInterrupt, SystemExit, GeneratorExit)

# Armor headers of signatures git can carry that are not OpenPGP.
_FOREIGN_ARMOR = {
    b"-----BEGIN SSH SIGNATURE-----": "an SSH signature (gpg.format=ssh)",
    b"-----BEGIN SIGNED MESSAGE-----": "an X.509/CMS signature (gpgsm or gitsign)",
    b"-----BEGIN PKCS7-----": "an X.509/CMS signature (gpgsm or gitsign)",
}


def _first_line(exc: BaseException) -> str:
    """pysequoia appends a Rust backtrace to its messages; keep only the useful first line."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass(frozen=True)
class OpenPgpKey:
    """A public certificate parsed once; ``cert`` is the pysequoia handle used to verify."""

    fingerprint: str
    user_ids: tuple[str, ...]
    armored: str
    cert: pysequoia.Cert = field(repr=False, compare=False)
    subkey_fingerprints: tuple[str, ...] = ()

    def __str__(self) -> str:
        uid = f" {self.user_ids[0]}" if self.user_ids else ""
        return f"{self.fingerprint}{uid}"


@dataclass
class _Component:
    """One key of a certificate as its packets state it (read once, for checks and hints)."""

    fingerprint: str  # lower-case hex
    key_id: str  # lower-case hex
    primary: bool
    bound: bool = False  # a subkey binding (for the primary: a self-signature) is present
    signing: bool = False  # some binding or self-signature grants the signing flag
    revoked: bool = False  # a revocation signature for this (sub)key is present


def _components(cert: pysequoia.Cert) -> list[_Component]:
    """The primary key and every subkey, with what their signatures say (not re-verified)."""
    kinds = pysequoia.packet.SignatureType
    tags = pysequoia.packet.Tag
    self_sigs = (  # a tuple: the enum is not hashable
        kinds.PositiveCertification, kinds.CasualCertification, kinds.PersonaCertification,
        kinds.GenericCertification, kinds.DirectKey,
    )  # fmt: skip
    out: list[_Component] = []
    for packet in pysequoia.packet.PacketPile.from_bytes(bytes(cert)):
        tag = packet.tag
        if tag in (tags.PublicKey, tags.PublicSubkey, tags.SecretKey, tags.SecretSubkey):
            fpr, key_id = packet.fingerprint, packet.key_id
            if fpr is not None and key_id is not None:
                primary = tag in (tags.PublicKey, tags.SecretKey)
                out.append(_Component(fpr.lower(), key_id.lower(), primary))
        elif tag == tags.Signature and out:
            current = out[-1]
            kind = packet.signature_type
            revocation = kinds.KeyRevocation if current.primary else kinds.SubkeyRevocation
            if kind == revocation:
                current.revoked = True
            elif kind == kinds.SubkeyBinding or (current.primary and kind in self_sigs):
                current.bound = True
                flags = packet.key_flags
                current.signing = current.signing or bool(flags is not None and flags.signing)
    return out


def _key_packets(cert: pysequoia.Cert) -> list[tuple[str, str]]:
    """(fingerprint, key id) of the primary key and every subkey, both lower-case hex."""
    return [(c.fingerprint, c.key_id) for c in _components(cert)]


def _has_secrets(cert: pysequoia.Cert) -> bool:
    """`has_secret_keys` works but is deprecated in 0.1.35 (warns even on public certs)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return bool(cert.has_secret_keys)


def _from_cert(cert: pysequoia.Cert) -> OpenPgpKey:
    packets = _key_packets(cert)
    primary = cert.fingerprint.lower()
    return OpenPgpKey(
        fingerprint=primary.upper(),
        user_ids=tuple(str(uid) for uid in cert.user_ids),
        armored=str(cert),
        subkey_fingerprints=tuple(fpr.upper() for fpr, _ in packets if fpr != primary),
        cert=cert,
    )


def _as_bytes(text_or_bytes: str | bytes) -> bytes:
    if isinstance(text_or_bytes, str):
        return text_or_bytes.encode("utf-8", "surrogatepass")  # "\ud800" from YAML: bad input
    return bytes(text_or_bytes)


def load_openpgp_keys(text_or_bytes: str | bytes, *, where: str) -> list[OpenPgpKey]:
    """Every certificate of an armored (or binary) keyring; empty input gives ``[]``.

    Secret keys are refused so that a policy file never ends up holding private material.
    """
    data = _as_bytes(text_or_bytes)
    if not data.strip():
        return []
    if b"PRIVATE KEY BLOCK" in data:
        raise PolicyError(f"{where}: is a secret key; give the public key")
    try:
        certs = pysequoia.Cert.split_bytes(data)
        keys = []
        for cert in certs:
            if _has_secrets(cert):
                raise PolicyError(f"{where}: is a secret key; give the public key")
            keys.append(_from_cert(cert))
    except InputError:
        raise
    except _NEVER_WRAP:
        raise
    except BaseException as exc:  # pysequoia: RuntimeError, or pyo3's PanicException
        raise PolicyError(
            f"{where}: not an OpenPGP public key: {_first_line(exc)}",
            hint="export it with `gpg --armor --export FINGERPRINT`",
        ) from None
    if not keys:
        raise PolicyError(f"{where}: holds no OpenPGP certificate")
    return keys


def load_openpgp_key(text_or_bytes: str | bytes, *, where: str) -> OpenPgpKey:
    """Exactly one armored public certificate (primary key with its subkeys and user IDs)."""
    keys = load_openpgp_keys(text_or_bytes, where=where)
    if not keys:
        raise PolicyError(f"{where}: holds no OpenPGP certificate")
    if len(keys) > 1:
        raise PolicyError(
            f"{where}: holds {len(keys)} certificates; give exactly one",
            hint=", ".join(key.fingerprint for key in keys),
        )
    return keys[0]


class OpenPgpKeyring:
    """Certificates indexed by every key fingerprint and key ID, for many quick verifications.

    Each certificate is parsed once (in :func:`load_openpgp_key`); a verification
    is one signature parse plus one pysequoia call offered only the certificate(s)
    that the signature names as issuer.  Copies of the same certificate are merged,
    so a revocation carried by either copy applies.

    Before pysequoia sees a signature, :func:`read_signature_packet` refuses what is never
    valid on a commit or tag: more than one packet, v3 packets, signature types other than
    binary data (0x00; a text-mode 0x01 signature also fits the payload with other line
    ends), MD5/SHA-1/RIPEMD-160 whatever date they claim (sequoia accepts SHA-1 dated
    before 2023, and the date is the signer's), unknown armor headers and data after the
    armor.  Any revocation of the certificate or of the signing subkey voids every
    signature, whatever its reason or date, for the same reason.

    What pysequoia enforces (sequoia's StandardPolicy, judged at the signature's
    creation time): the signing (sub)key must be validly bound, signing-capable and
    not expired then, so a signature made while the key was valid stays valid after
    it expires (tested).  Expiry is therefore no defence against the key's holder, who
    can date a signature back; retiring a key is done by removing it from the policy,
    which follows the commit graph.  Too-weak algorithms and signatures dated in the
    future are refused as well; all of it surfaces as one :class:`SignatureError`.
    """

    def __init__(self, keys: Iterable[OpenPgpKey]) -> None:
        merged: dict[str, OpenPgpKey] = {}
        for key in keys:
            old = merged.get(key.fingerprint)
            if old is None:
                merged[key.fingerprint] = key
            else:
                try:
                    merged[key.fingerprint] = _from_cert(old.cert.merge(key.cert))
                except _NEVER_WRAP:
                    raise
                except BaseException as exc:
                    raise PolicyError(
                        f"cannot merge two copies of {key.fingerprint}: {_first_line(exc)}"
                    ) from None
        self._by_primary: dict[str, OpenPgpKey] = {k.lower(): v for k, v in merged.items()}
        self._by_fpr: dict[str, list[OpenPgpKey]] = {}
        self._by_key_id: dict[str, list[OpenPgpKey]] = {}
        self._parts: dict[str, list[_Component]] = {}  # primary fingerprint -> its keys
        self._revoked: set[str] = set()  # primary fingerprints of revoked certificates
        for key in merged.values():
            primary = key.fingerprint.lower()
            try:
                self._parts[primary] = _components(key.cert)
                revoked = bool(key.cert.is_revoked)
            except _NEVER_WRAP:
                raise
            except BaseException as exc:
                raise PolicyError(f"cannot read {key.fingerprint}: {_first_line(exc)}") from None
            if revoked:
                self._revoked.add(primary)
            for part in self._parts[primary]:
                self._by_fpr.setdefault(part.fingerprint, []).append(key)
                self._by_key_id.setdefault(part.key_id, []).append(key)

    @property
    def keys(self) -> tuple[OpenPgpKey, ...]:
        return tuple(self._by_primary.values())

    def __len__(self) -> int:
        return len(self._by_primary)

    def __contains__(self, fingerprint: object) -> bool:
        return isinstance(fingerprint, str) and fingerprint.lower() in self._by_primary

    def verify(self, signature: bytes, payload: bytes) -> OpenPgpKey:
        """The certificate whose (sub)key made the valid detached ``signature`` over ``payload``.

        Raises only :class:`SignatureError` or its subclasses: ``UnknownKeyError`` when the
        issuer is not in the keyring (even if the rest of the signature does not parse),
        ``UnsupportedSignatureError`` for SSH/X.509 signatures.
        """
        packet = read_signature_packet(signature)
        issuer, candidates = self._candidates(packet)
        if packet.problem is not None:
            raise SignatureError(f"signature by {issuer} {packet.problem}")
        live = [key for key in candidates if self._revocation(key, packet) is None]
        if not live:
            reason = self._revocation(candidates[0], packet)
            raise SignatureError(
                f"signature by {issuer} does not verify: {reason}",
                hint="a revoked key signs nothing valid, whatever date the signature claims",
            )
        sig = self._parse(packet.packet)
        try:
            result = pysequoia.verify(
                bytes=payload, store=lambda _ids: [key.cert for key in live], signature=sig
            )
            valid = [str(v.certificate).lower() for v in result.valid_sigs]
        except _NEVER_WRAP:
            raise
        except BaseException as exc:
            raise SignatureError(
                f"signature by {issuer} does not verify: {_first_line(exc)}",
                hint=self._why_not(sig, packet, live),
            ) from None
        for fpr in valid:
            key = self._by_primary.get(fpr)
            if key is not None and key in live:
                return key
        raise SignatureError(
            f"signature by {issuer} does not verify", hint=self._why_not(sig, packet, live)
        )

    def _issuing(self, key: OpenPgpKey, packet: SignaturePacket) -> _Component | None:
        """The key of ``key``'s certificate that the signature names as its issuer."""
        fprs = {f.lower() for f in packet.issuer_fingerprints}
        ids = {k.lower() for k in packet.issuer_key_ids}
        for part in self._parts.get(key.fingerprint.lower(), []):
            if part.fingerprint in fprs or (not fprs and part.key_id in ids):
                return part
        return None

    def _revocation(self, key: OpenPgpKey, packet: SignaturePacket) -> str | None:
        """Why ``key`` may not sign at all: any revocation counts, whatever its reason or date.

        sequoia would accept a signature dated before a "soft" revocation, but that date is
        the signer's own claim; the policy in force is what says until when a key was valid.
        """
        if key.fingerprint.lower() in self._revoked:
            return f"certificate {key.fingerprint} is revoked"
        part = self._issuing(key, packet)
        if part is not None and part.revoked:
            return f"subkey {part.fingerprint.upper()} of {key.fingerprint} is revoked"
        return None

    def _why_not(
        self, sig: pysequoia.Sig, packet: SignaturePacket, candidates: Sequence[OpenPgpKey]
    ) -> str:
        """pysequoia only says "no valid signatures found"; guess the likeliest cause."""
        for key in candidates:
            part = self._issuing(key, packet)
            if part is not None and not part.primary and not part.bound:
                return (
                    f"subkey {part.fingerprint.upper()} has no binding signature from "
                    f"{key.fingerprint}, so it is not part of that certificate"
                )
            if part is not None and not part.signing:
                which = "primary key" if part.primary else "subkey"
                return f"{which} {part.fingerprint.upper()} is not marked for signing"
        try:
            made: datetime | None = sig.created
            for key in candidates:
                expires = key.cert.expiration
                if made is not None and expires is not None and made >= expires:
                    return (
                        f"certificate {key.fingerprint} expired {expires.isoformat()}, "
                        f"before the signature ({made.isoformat()})"
                    )
        except _NEVER_WRAP:
            raise
        except BaseException:  # noqa: S110 - the hint is best effort; the error is raised anyway
            pass
        return (
            "the signed content changed, or the key was not valid for signing at signature time "
            "(expired subkey, bad binding signature, too weak a key)"
        )

    @staticmethod
    def _parse(packet: bytes) -> pysequoia.Sig:
        try:
            return pysequoia.Sig.from_bytes(packet)
        except _NEVER_WRAP:
            raise
        except BaseException as exc:
            raise SignatureError(f"malformed OpenPGP signature: {_first_line(exc)}") from None

    def _candidates(self, packet: SignaturePacket) -> tuple[str, list[OpenPgpKey]]:
        """The issuer as named by the signature, and the certificates that hold that key."""
        candidates: list[OpenPgpKey] = []
        for fpr in packet.issuer_fingerprints:
            candidates += self._by_fpr.get(fpr.lower(), [])
        if not packet.issuer_fingerprints:
            for key_id in packet.issuer_key_ids:
                candidates += self._by_key_id.get(key_id.lower(), [])
        if packet.issuer_fingerprints:
            issuer = packet.issuer_fingerprints[0]
        elif packet.issuer_key_ids:
            issuer = f"key ID {packet.issuer_key_ids[0]}"
        else:
            raise SignatureError("OpenPGP signature names no issuer key")
        if not candidates:
            raise UnknownKeyError(
                f"signed by {issuer}, which is not an allowed key",
                hint="add its public certificate to the policy if it should be trusted",
            )
        return issuer, list(dict.fromkeys(candidates))


# --- the signature packet walker ------------------------------------------------------------
#
# pysequoia refuses a v4 signature whose MPI declares more bits than its value has ("Not a
# signature"); GitHub's web-flow signatures are written that way most of the time, and GnuPG
# and RNP accept them (RFC 9580 section 3.2 makes the check mandatory for v6 only).  This
# walker reads the one signature packet git stores, refuses what Sealgate never accepts
# (v3 packets, text-mode and non-data signatures, SHA-1), finds the issuer without pysequoia
# and, for v4 only, re-encodes each MPI with its real bit count.  The MPIs are not part of the
# hashed data, so the verdict cannot change.  It is total (only typed errors), bounded and
# iterative.

#: A git signature is one packet of well under 2 KiB; RSA-16384 would still fit in 4 KiB.
MAX_SIGNATURE_BYTES: int = 64 * 1024
_MAX_PACKETS = 16
_ARMOR_BEGIN = b"-----BEGIN PGP SIGNATURE-----"
_ARMOR_END = b"-----END PGP SIGNATURE-----"
# Informational armor headers (RFC 9580 section 6.2.2.1); anything else is refused.
_ARMOR_HEADERS = frozenset({b"version", b"comment", b"charset"})
_TAG_SIGNATURE = 2
_PACKET_NAMES = {
    1: "public-key encrypted session key", 3: "symmetric-key encrypted session key",
    4: "one-pass signature", 5: "secret key", 6: "public key", 7: "secret subkey",
    8: "compressed data", 9: "symmetrically encrypted data", 10: "marker", 11: "literal data",
    12: "trust", 13: "user ID", 14: "public subkey", 17: "user attribute",
    18: "encrypted data", 21: "padding",
}  # fmt: skip
# v4 public-key algorithm -> number of MPIs in the signature (RFC 9580 section 5.2.3).
_SIG_MPIS = {1: 1, 3: 1, 17: 2, 19: 2, 22: 2}
_WEAK_HASHES = {1: "MD5", 2: "SHA-1", 3: "RIPEMD-160"}
_HASHES = {8: "SHA-256", 9: "SHA-384", 10: "SHA-512", 11: "SHA-224", 12: "SHA3-256", 14: "SHA3-512"}
_SUB_ISSUER_KEY_ID = 16
_SUB_ISSUER_FPR = 33
_FPR_LENGTH = {4: 20, 5: 32, 6: 32}


class _MalformedError(ValueError):
    """Internal: the bytes are not one well-formed signature packet (the reason is the text)."""


@dataclass(frozen=True)
class SignaturePacket:
    """What the walker read from a signature, before any cryptography.

    ``problem`` says why the signature is refused although its issuer could be read (so an
    unknown issuer is still reported as such); ``packet`` is the binary packet for pysequoia,
    its MPIs re-encoded with their real bit counts (v4 only).
    """

    version: int
    sig_type: int | None
    hash_algorithm: int | None
    issuer_fingerprints: tuple[str, ...]
    issuer_key_ids: tuple[str, ...]
    problem: str | None
    packet: bytes


def _crc24(data: bytes) -> int:
    """RFC 9580 section 6.1.1."""
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def _dearmor_signature(data: bytes) -> bytes:
    """The binary packets of an armored signature: one block, known headers, nothing after it."""
    lines = [line.rstrip(b" \t\r") for line in data.strip(b" \t\r\n").split(b"\n")]
    if lines[0] != _ARMOR_BEGIN:
        raise _MalformedError("not an armored OpenPGP signature (BEGIN PGP SIGNATURE line)")
    try:
        end = lines.index(_ARMOR_END)
    except ValueError:
        raise _MalformedError("armor has no END PGP SIGNATURE line") from None
    if end != len(lines) - 1:
        raise _MalformedError("data after the END PGP SIGNATURE line")
    pos = 1
    while pos < end and lines[pos]:
        name, sep, _value = lines[pos].partition(b":")
        if not sep:
            raise _MalformedError("armor header line without ':' (no blank line before the body?)")
        if name.lower() not in _ARMOR_HEADERS:
            shown = name[:40].decode("ascii", "replace")
            raise _MalformedError(
                f"unknown armor header {shown!r} (allowed: Version, Comment, Charset)"
            )
        pos += 1
    if pos >= end:
        raise _MalformedError("armor has no blank line before its body")
    body = lines[pos + 1 : end]
    checksum: bytes | None = None
    if body and body[-1].startswith(b"="):
        checksum = body.pop()
    if any(line.startswith(b"=") or line.startswith(b"-") for line in body):
        raise _MalformedError("armor body has a stray '=' or '-' line")
    try:
        binary = base64.b64decode(b"".join(body), validate=True)
        crc = base64.b64decode(checksum[1:], validate=True) if checksum is not None else None
    except (binascii.Error, ValueError):
        raise _MalformedError("armor body is not valid base64") from None
    if crc is not None and (len(crc) != 3 or int.from_bytes(crc, "big") != _crc24(binary)):
        raise _MalformedError("armor checksum does not match its body")
    return binary


def _packets(binary: bytes) -> list[tuple[int, bytes]]:
    """(tag, body) of each packet; partial and indeterminate lengths are refused."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(binary):
        if len(out) >= _MAX_PACKETS:
            raise _MalformedError(f"more than {_MAX_PACKETS} packets")
        first = binary[pos]
        if not first & 0x80:
            raise _MalformedError(f"byte {pos} is not an OpenPGP packet header")
        if first & 0x40:  # new format
            tag = first & 0x3F
            if pos + 1 >= len(binary):
                raise _MalformedError("truncated packet header")
            octet = binary[pos + 1]
            if octet < 192:
                length, head = octet, 2
            elif octet < 224:
                if pos + 2 >= len(binary):
                    raise _MalformedError("truncated packet header")
                length, head = ((octet - 192) << 8) + binary[pos + 2] + 192, 3
            elif octet == 255:
                if pos + 6 > len(binary):
                    raise _MalformedError("truncated packet header")
                length, head = int.from_bytes(binary[pos + 2 : pos + 6], "big"), 6
            else:
                raise _MalformedError("partial body length (not allowed for a signature)")
        else:  # old format
            tag = (first >> 2) & 0x0F
            kind = first & 0x03
            if kind == 3:
                raise _MalformedError("indeterminate packet length (not allowed for a signature)")
            size = 1 << kind
            if pos + 1 + size > len(binary):
                raise _MalformedError("truncated packet header")
            length, head = int.from_bytes(binary[pos + 1 : pos + 1 + size], "big"), 1 + size
        start = pos + head
        if start + length > len(binary):
            raise _MalformedError(f"packet of {length} bytes is truncated")
        if tag == 0:
            raise _MalformedError("packet with the reserved tag 0")
        out.append((tag, binary[start : start + length]))
        pos = start + length
    return out


def _encode_packet(tag: int, body: bytes) -> bytes:
    """A new-format packet header with the shortest definite length."""
    n = len(body)
    if n < 192:
        length = bytes([n])
    elif n < 8384:
        length = bytes([((n - 192) >> 8) + 192, (n - 192) & 0xFF])
    else:
        length = b"\xff" + n.to_bytes(4, "big")
    return bytes([0xC0 | tag]) + length + body


def _subpackets(area: bytes) -> Iterator[tuple[int, bytes]]:
    pos = 0
    while pos < len(area):
        octet = area[pos]
        if octet < 192:
            length, head = octet, 1
        elif octet < 255:
            if pos + 1 >= len(area):
                raise _MalformedError("truncated subpacket length")
            length, head = ((octet - 192) << 8) + area[pos + 1] + 192, 2
        else:
            if pos + 5 > len(area):
                raise _MalformedError("truncated subpacket length")
            length, head = int.from_bytes(area[pos + 1 : pos + 5], "big"), 5
        start = pos + head
        if length == 0 or start + length > len(area):
            raise _MalformedError("subpacket length runs past its area")
        yield area[start] & 0x7F, area[start + 1 : start + length]
        pos = start + length


def _normalise_mpis(data: bytes, count: int) -> bytes:
    """``count`` MPIs re-encoded with their real bit counts; nothing may follow them."""
    out = bytearray()
    pos = 0
    for i in range(count):
        if pos + 2 > len(data):
            raise _MalformedError(f"signature MPI {i + 1} is truncated")
        bits = int.from_bytes(data[pos : pos + 2], "big")
        size = (bits + 7) // 8
        raw = data[pos + 2 : pos + 2 + size]
        if len(raw) != size:
            raise _MalformedError(f"signature MPI {i + 1} is truncated")
        value = int.from_bytes(raw, "big")
        if value.bit_length() > bits:
            raise _MalformedError(f"signature MPI {i + 1} holds more bits than it declares")
        real = value.bit_length()
        out += real.to_bytes(2, "big") + value.to_bytes((real + 7) // 8, "big")
        pos += 2 + size
    if pos != len(data):
        raise _MalformedError("trailing bytes after the signature MPIs")
    return bytes(out)


def _v4_issuers(areas: Iterable[bytes]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    fprs: list[str] = []
    key_ids: list[str] = []
    for area in areas:
        for kind, value in _subpackets(area):
            if kind == _SUB_ISSUER_KEY_ID and len(value) == 8:
                key_ids.append(value.hex().upper())
            elif kind == _SUB_ISSUER_FPR and len(value) == 1 + _FPR_LENGTH.get(value[0], -1):
                fprs.append(value[1:].hex().upper())
    return tuple(dict.fromkeys(fprs)), tuple(dict.fromkeys(key_ids))


def _judge_v4(sig_type: int, hash_algo: int) -> str | None:
    """What Sealgate refuses in a v4/v6 signature before any cryptography."""
    if sig_type == 0x01:
        return (
            "is a text-mode signature (type 0x01); git signs commits and tags as binary data "
            "(type 0x00), and a text signature also fits the payload with other line endings"
        )
    if sig_type != 0x00:
        return f"is a signature of type 0x{sig_type:02x}, not a signature over data (0x00)"
    if hash_algo in _WEAK_HASHES:
        return f"uses {_WEAK_HASHES[hash_algo]}, which is refused whatever date it claims"
    if hash_algo not in _HASHES:
        return f"uses an unknown hash algorithm ({hash_algo})"
    return None


def _read_signature(tag: int, body: bytes) -> SignaturePacket:
    if not body:
        raise _MalformedError("empty signature packet")
    version = body[0]
    if version == 3:
        if len(body) < 19 or body[1] != 5:
            raise _MalformedError("truncated version 3 signature packet")
        return SignaturePacket(
            3, body[2], body[16], (), (body[7:15].hex().upper(),),
            "is a version 3 signature packet, which is refused (obsolete since RFC 4880)",
            _encode_packet(tag, body),
        )  # fmt: skip
    if version not in (4, 6):
        raise _MalformedError(f"unsupported signature packet version {version}")
    size = 2 if version == 4 else 4
    if len(body) < 4 + size:
        raise _MalformedError("truncated signature packet")
    sig_type, pk_algo, hash_algo = body[1], body[2], body[3]
    pos = 4
    areas: list[bytes] = []
    for name in ("hashed", "unhashed"):
        if pos + size > len(body):
            raise _MalformedError(f"truncated {name} subpacket area")
        length = int.from_bytes(body[pos : pos + size], "big")
        pos += size
        if pos + length > len(body):
            raise _MalformedError(f"{name} subpacket area runs past the packet")
        areas.append(body[pos : pos + length])
        pos += length
    fprs, key_ids = _v4_issuers(areas)
    problem = _judge_v4(sig_type, hash_algo)
    packet = _encode_packet(tag, body)
    if version == 4 and problem is None and pk_algo in _SIG_MPIS:
        if pos + 2 > len(body):
            problem = "is truncated before its signature value"
        else:
            try:
                mpis = _normalise_mpis(body[pos + 2 :], _SIG_MPIS[pk_algo])
            except _MalformedError as exc:
                problem = f"is malformed: {exc}"
            else:
                packet = _encode_packet(tag, body[: pos + 2] + mpis)
    return SignaturePacket(version, sig_type, hash_algo, fprs, key_ids, problem, packet)


def read_signature_packet(signature: bytes) -> SignaturePacket:
    """The one signature packet of an armored (or binary) detached OpenPGP signature.

    Raises only :class:`SignatureError` (malformed) or :class:`UnsupportedSignatureError`.
    """
    data = signature.encode("utf-8", "replace") if isinstance(signature, str) else bytes(signature)
    if len(data) > MAX_SIGNATURE_BYTES:
        raise SignatureError(
            f"malformed OpenPGP signature: {len(data)} bytes, more than {MAX_SIGNATURE_BYTES}"
        )
    head = data.lstrip()[:64]
    for armor, what in _FOREIGN_ARMOR.items():
        if head.startswith(armor):
            raise UnsupportedSignatureError(f"{what}, not an OpenPGP signature")
    try:
        binary = data if data[:1] and data[0] & 0x80 else _dearmor_signature(data)
        packets = _packets(binary)
        signatures = [(tag, body) for tag, body in packets if tag == _TAG_SIGNATURE]
        others = sorted({tag for tag, _ in packets if tag != _TAG_SIGNATURE})
        if others:
            names = ", ".join(_PACKET_NAMES.get(t, f"tag {t}") for t in others)
            raise _MalformedError(f"holds a {names} packet; a detached signature is one signature")
        if len(signatures) != 1:
            raise _MalformedError(
                f"holds {len(signatures)} signature packets; git stores exactly one"
            )
        return _read_signature(*signatures[0])
    except _MalformedError as exc:
        raise SignatureError(f"malformed OpenPGP signature: {exc}") from None


@dataclass(frozen=True)
class PolicyAuthorization:
    """One ``[authorization.NAME]`` table of a sequoia-git policy: who holds which rights."""

    name: str
    keys: tuple[OpenPgpKey, ...]
    rights: frozenset[str]


def parse_sequoia_policy(text: str, *, source: str) -> list[PolicyAuthorization]:
    """sequoia-git's ``openpgp-policy.toml`` (version 0) as a list of authorizations.

    Unknown keys in an authorization are refused rather than ignored, so a typo such as
    ``sign_commits`` fails loudly instead of silently granting nothing.
    """
    try:
        doc = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as exc:  # nesting deep enough to recurse
        raise PolicyError(f"{source}: not valid TOML: {exc}") from None
    version = doc.get("version")
    if version != 0 or isinstance(version, bool):
        raise PolicyError(
            f"{source}: unsupported policy version {version!r}",
            hint="only sequoia-git's `version = 0` is understood",
        )
    goodlist = doc.get("commit_goodlist", [])
    if not isinstance(goodlist, list) or not all(isinstance(c, str) for c in goodlist):
        raise PolicyError(f"{source}: commit_goodlist must be a list of commit ids")
    unknown_top = sorted(set(doc) - {"version", "commit_goodlist", "authorization"})
    if unknown_top:
        raise PolicyError(f"{source}: unknown top-level key(s): {', '.join(unknown_top)}")
    tables = doc.get("authorization", {})
    if not isinstance(tables, dict):
        raise PolicyError(f"{source}: `authorization` must be a table of tables")
    out: list[PolicyAuthorization] = []
    for name, table in tables.items():
        where = f"{source}: authorization.{name}"
        if not isinstance(table, dict):
            raise PolicyError(f"{where}: must be a table")
        rights: set[str] = set()
        for key, value in table.items():
            if key == "keyring":
                continue
            if key not in SEQUOIA_RIGHTS:
                raise PolicyError(
                    f"{where}: unknown key {key!r}",
                    hint=f"known rights: {', '.join(sorted(SEQUOIA_RIGHTS))}",
                )
            if not isinstance(value, bool):
                raise PolicyError(f"{where}: {key} must be true or false")
            if value:
                rights.add(key)
        keyring = table.get("keyring", "")
        if not isinstance(keyring, str):
            raise PolicyError(f"{where}: keyring must be a string of armored certificates")
        keys = tuple(load_openpgp_keys(keyring, where=f"{where}.keyring"))
        out.append(PolicyAuthorization(name=name, keys=keys, rights=frozenset(rights)))
    return out
