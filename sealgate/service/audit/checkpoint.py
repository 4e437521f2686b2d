"""Checkpoints: a C2SP `tlog-checkpoint` body inside a C2SP `signed-note`, signed by the audit key.

    sealgate.local/audit            <- origin (also the note key name)
    1042                            <- tree size
    3q2+7w...=                      <- base64 RFC 6962 root over the records' hashes
                                    <- blank line
    — sealgate.local/audit BASE64(key ID || signature)

Ed25519 audit keys sign with the standard type 0x01 (key ID = SHA-256(name || 0x0A || 0x01 ||
32-byte key)[:4]). ECDSA P-256 keys use type 0x02 as transparency-dev/witness does: ASN.1 DER
ECDSA-SHA256 over the note text, key ID = SHA-256(DER SubjectPublicKeyInfo)[:4]. Other key types
are refused: no tool could check their notes. The optional RFC 3161 token is over the raw
signature bytes (after the key ID) and travels next to the note, never inside it.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from sealgate.service.audit.records import format_time
from sealgate.service.errors import AuditIntegrityError, ServiceConfigError, ServiceError
from sealgate.service.signing import NoteKey, verify_timestamp
from sealgate.service.store.base import StoredCheckpoint

SIG_ED25519 = 0x01
SIG_ECDSA = 0x02
EM_DASH = "\u2014"
#: A checkpoint is three short lines and a few signatures: anything bigger is not one.
MAX_NOTE = 64 * 1024
#: The signed-note spec: accept at least 16 signatures (witness cosignatures), bound the rest.
MAX_SIGNATURES = 64
_SIZE = re.compile(r"0|[1-9][0-9]{0,18}")
_MAX_TREE_SIZE = (1 << 63) - 1

PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
#: Given the raw signature bytes, an RFC 3161 token (DER) over them.
Stamper = Callable[[bytes], bytes]


def _broken(message: str, code: str, where: str) -> AuditIntegrityError:
    return AuditIntegrityError(f"{where}: {message}", code=code, field="checkpoint")


def valid_key_name(name: str) -> bool:
    """Note key names: non-empty, no Unicode spaces, no `+` (the vkey separator)."""
    return (
        bool(name)
        and "+" not in name
        and not any(c.isspace() for c in name)
        and all(c.isprintable() for c in name)
    )


@dataclass(frozen=True)
class Checkpoint:
    """The three mandatory lines of a tlog-checkpoint."""

    origin: str
    tree_size: int
    root_hash: bytes

    def text(self) -> str:
        return f"{self.origin}\n{self.tree_size}\n{base64.b64encode(self.root_hash).decode()}\n"

    @classmethod
    def parse(cls, text: str, where: str) -> Checkpoint:
        """The strict reading: decimal without leading zeros, canonical base64 of 32 bytes;
        extension lines (opaque, non-empty) are allowed and carry no meaning here."""
        if not text.endswith("\n"):
            raise _broken("the checkpoint text does not end in a newline", MALFORMED_CODE, where)
        lines = text[:-1].split("\n")
        if len(lines) < 3 or any(not line for line in lines):
            raise _broken(
                "a checkpoint is at least three non-empty lines (origin, size, root)",
                MALFORMED_CODE,
                where,
            )
        origin, size_text, root_text = lines[:3]
        if not _SIZE.fullmatch(size_text) or int(size_text) > _MAX_TREE_SIZE:
            raise _broken(
                f"tree size {size_text[:40]!r} is not a decimal size", MALFORMED_CODE, where
            )
        try:
            root_hash = base64.b64decode(root_text, validate=True)
        except (binascii.Error, ValueError):
            root_hash = b""
        if len(root_hash) != 32 or base64.b64encode(root_hash).decode() != root_text:
            raise _broken(
                f"root hash {root_text[:60]!r} is not the base64 of 32 bytes", MALFORMED_CODE, where
            )
        return cls(origin, int(size_text), root_hash)


MALFORMED_CODE = "audit-checkpoint-malformed"
SIGNATURE_CODE = "audit-checkpoint-signature"
TIMESTAMP_CODE = "audit-checkpoint-timestamp"
MISMATCH_CODE = "audit-checkpoint-mismatch"
ORIGIN_CODE = "audit-checkpoint-origin"


def _key_bytes(public_key: PublicKey) -> tuple[int, bytes]:
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return SIG_ED25519, raw
    if isinstance(public_key.curve, ec.SECP256R1):
        der = public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return SIG_ECDSA, der
    raise ServiceConfigError(
        f"audit key: {public_key.curve.name} ECDSA cannot sign checkpoints "
        "(Ed25519, or ECDSA P-256 as signed-note type 0x02)",
        code="audit-key-unsupported",
        field="audit.key",
    )


def key_id(name: str, sig_type: int, key: bytes) -> bytes:
    """The 4-byte key ID of signed-note: Ed25519 hashes name, type and key; type 0x02 (as
    transparency-dev/witness defines it) hashes the SPKI DER alone."""
    if sig_type == SIG_ECDSA:
        return hashlib.sha256(key).digest()[:4]
    return hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + key).digest()[:4]


@dataclass(frozen=True)
class NoteVerifier:
    """One trusted note key: its name, key ID and public key (`vkey` is the text form)."""

    name: str
    key_id: bytes
    sig_type: int
    public_key: PublicKey

    @classmethod
    def from_public_key(cls, name: str, public_key: object) -> NoteVerifier:
        if not valid_key_name(name):
            raise ServiceError(
                f"note key name {name[:80]!r}: empty, or holds a space or '+'",
                code="bad-vkey",
                field="origin",
            )
        if not isinstance(public_key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey):
            raise ServiceConfigError(
                f"audit key: a {type(public_key).__name__} cannot sign checkpoints "
                "(Ed25519, or ECDSA P-256)",
                code="audit-key-unsupported",
                field="audit.key",
            )
        sig_type, key = _key_bytes(public_key)
        return cls(name, key_id(name, sig_type, key), sig_type, public_key)

    @classmethod
    def from_vkey(cls, text: str) -> NoteVerifier:
        """`name+hash+base64(type || key)`, the form Go's note package and witnesses print."""
        parts = text.strip().split("+", 2)

        def bad(why: str) -> ServiceError:
            return ServiceError(f"vkey {text.strip()[:120]!r}: {why}", code="bad-vkey",
                                field="vkey")  # fmt: skip

        if len(parts) != 3 or not valid_key_name(parts[0]):
            raise bad("not NAME+HASH+BASE64KEY")
        name, hash_text, key_text = parts
        if not re.fullmatch(r"[0-9a-f]{8}", hash_text):
            raise bad("the key hash is not 8 hex digits")
        try:
            blob = base64.b64decode(key_text, validate=True)
        except (binascii.Error, ValueError):
            raise bad("the key is not base64") from None
        if not blob:
            raise bad("the key is empty")
        sig_type, key = blob[0], blob[1:]
        public_key: PublicKey
        try:
            if sig_type == SIG_ED25519 and len(key) == 32:
                public_key = ed25519.Ed25519PublicKey.from_public_bytes(key)
            elif sig_type == SIG_ECDSA:
                loaded = serialization.load_der_public_key(key)
                if not isinstance(loaded, ec.EllipticCurvePublicKey) or not isinstance(
                    loaded.curve, ec.SECP256R1
                ):
                    raise bad("type 0x02 holds no ECDSA P-256 key")
                public_key = loaded
            else:
                raise bad(f"signature type 0x{sig_type:02x} is not Ed25519 (0x01) or ECDSA (0x02)")
        except ValueError:
            raise bad("the public key does not parse") from None
        verifier = cls.from_public_key(name, public_key)
        if verifier.key_id.hex() != hash_text:
            raise bad(f"the key hash should be {verifier.key_id.hex()} for this name and key")
        return verifier

    @property
    def vkey(self) -> str:
        _, key = _key_bytes(self.public_key)
        blob = base64.b64encode(bytes([self.sig_type]) + key).decode()
        return f"{self.name}+{self.key_id.hex()}+{blob}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            if isinstance(self.public_key, ed25519.Ed25519PublicKey):
                self.public_key.verify(signature, message)
            else:
                self.public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            return False
        return True


def split_note(note: str, where: str) -> tuple[str, list[tuple[str, bytes]]]:
    """The note text (with its final newline) and its (key name, key ID || signature) lines."""
    if len(note.encode("utf-8", "surrogatepass")) > MAX_NOTE:
        raise _broken(f"a signed note over {MAX_NOTE} bytes", MALFORMED_CODE, where)
    if any(ord(c) < 0x20 and c != "\n" for c in note) or not _utf8(note):
        raise _broken(
            "a signed note holds control characters or is not UTF-8", MALFORMED_CODE, where
        )
    cut = note.rfind("\n\n")
    if cut < 0 or not note.endswith("\n"):
        raise _broken("not a signed note (no blank line before signatures)", MALFORMED_CODE, where)
    text, tail = note[: cut + 1], note[cut + 2 :]
    lines = tail[:-1].split("\n")
    if not lines or len(lines) > MAX_SIGNATURES:
        raise _broken(f"a signed note needs 1 to {MAX_SIGNATURES} signature lines", MALFORMED_CODE,
                      where)  # fmt: skip
    signatures: list[tuple[str, bytes]] = []
    for number, line in enumerate(lines, start=1):
        match = re.fullmatch(rf"{EM_DASH} (\S+) ([A-Za-z0-9+/=]+)", line)
        blob = b""
        if match:
            try:
                blob = base64.b64decode(match.group(2), validate=True)
            except (binascii.Error, ValueError):
                blob = b""
        if not match or len(blob) < 5:
            raise _broken(f"signature line {number} is not '— NAME BASE64'", MALFORMED_CODE, where)
        signatures.append((match.group(1), blob))
    return text, signatures


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def open_note(note: str, verifier: NoteVerifier, where: str) -> tuple[Checkpoint, bytes]:
    """The checkpoint a note holds and the raw signature by `verifier`, checked; signatures of
    other keys are ignored (witness cosignatures), a bad one by our key refuses the note."""
    text, signatures = split_note(note, where)
    ours = [blob[4:] for name, blob in signatures
            if name == verifier.name and blob[:4] == verifier.key_id]  # fmt: skip
    if not ours:
        raise _broken(f"no signature by the audit key {verifier.name}+{verifier.key_id.hex()}",
                      SIGNATURE_CODE, where)  # fmt: skip
    for signature in ours:
        if not verifier.verify(text.encode(), signature):
            raise _broken(
                f"the signature by {verifier.name}+{verifier.key_id.hex()} does not verify "
                "(a forged or altered checkpoint)",
                SIGNATURE_CODE,
                where,
            )
    checkpoint = Checkpoint.parse(text, where)
    if checkpoint.origin != verifier.name:
        raise _broken(
            f"origin {checkpoint.origin[:80]!r} is not the audit key's name {verifier.name!r}",
            ORIGIN_CODE,
            where,
        )
    return checkpoint, ours[0]


def read_unsigned(note: str, where: str) -> Checkpoint:
    """The checkpoint in a note whose signature nobody can check here (no key given)."""
    text, _ = split_note(note, where)
    return Checkpoint.parse(text, where)


def note_verifier(key: NoteKey, origin: str) -> NoteVerifier:
    return NoteVerifier.from_public_key(origin, key.public_key)


def sign_checkpoint(checkpoint: Checkpoint, key: NoteKey) -> tuple[str, bytes]:
    """The signed note and the raw signature (what a timestamp covers)."""
    verifier = note_verifier(key, checkpoint.origin)
    text = checkpoint.text()
    signature = key.sign(text.encode())
    line = base64.b64encode(verifier.key_id + signature).decode()
    return f"{text}\n{EM_DASH} {verifier.name} {line}\n", signature


def make_checkpoint(
    checkpoint: Checkpoint,
    key: NoteKey,
    *,
    stamp: Stamper | None = None,
    now: dt.datetime | None = None,
) -> StoredCheckpoint:
    note, signature = sign_checkpoint(checkpoint, key)
    return StoredCheckpoint(
        tree_size=checkpoint.tree_size,
        root_hash=checkpoint.root_hash,
        note=note,
        timestamp=None if stamp is None else stamp(signature),
        time=format_time(now or dt.datetime.now(dt.UTC)),
    )


def verify_stored(
    stored: StoredCheckpoint,
    verifier: NoteVerifier | None,
    where: str,
    *,
    tsa_roots: Sequence[x509.Certificate] = (),
) -> tuple[Checkpoint, bool, bool]:
    """The checkpoint, whether its signature and whether its timestamp were verified. The
    note is the authority: stored size and root columns that disagree with it are tampering."""
    if verifier is None:
        checkpoint, signature = read_unsigned(stored.note, where), None
    else:
        checkpoint, signature = open_note(stored.note, verifier, where)
    if (stored.tree_size, stored.root_hash) != (checkpoint.tree_size, checkpoint.root_hash):
        raise _broken(
            f"its size/root columns ({stored.tree_size}) differ from its signed note "
            f"({checkpoint.tree_size})",
            MISMATCH_CODE,
            where,
        )
    stamped = False
    if tsa_roots:
        if stored.timestamp is None:
            raise _broken("no RFC 3161 timestamp, and --tsa-roots asks for one",
                          TIMESTAMP_CODE, where)  # fmt: skip
        if signature is None:
            _, signatures = split_note(stored.note, where)
            signature = signatures[0][1][4:]
        try:
            verify_timestamp(stored.timestamp, signature, tsa_roots, where)
        except ServiceError as exc:
            raise _broken(f"its timestamp does not verify: {exc.message}",
                          TIMESTAMP_CODE, where) from None  # fmt: skip
        stamped = True
    return checkpoint, signature is not None and verifier is not None, stamped


def checkpoint_json(stored: StoredCheckpoint) -> dict[str, Any]:
    """The one JSON form of a checkpoint: the export's lines, `export_dir` files, the API."""
    return {
        "tree_size": stored.tree_size,
        "root_hash": stored.root_hash.hex(),
        "note": stored.note,
        "timestamp": None
        if stored.timestamp is None
        else base64.b64encode(stored.timestamp).decode(),
        "time": stored.time,
    }


_JSON_FIELDS = frozenset({"tree_size", "root_hash", "note", "timestamp", "time"})


def checkpoint_from_json(document: object, where: str) -> StoredCheckpoint:
    if not isinstance(document, dict) or set(document) != _JSON_FIELDS:
        raise _broken(f"a checkpoint is an object of exactly {sorted(_JSON_FIELDS)}", MALFORMED_CODE,
                      where)  # fmt: skip
    size, root_hex, note = document["tree_size"], document["root_hash"], document["note"]
    stamp, time = document["timestamp"], document["time"]
    if (
        not isinstance(size, int)
        or isinstance(size, bool)
        or not 0 <= size <= _MAX_TREE_SIZE
        or not isinstance(root_hex, str)
        or not re.fullmatch(r"[0-9a-f]{64}", root_hex)
        or not isinstance(note, str)
        or not isinstance(time, str)
        or not (stamp is None or isinstance(stamp, str))
    ):
        raise _broken("a checkpoint field has the wrong type or form", MALFORMED_CODE, where)
    try:
        token = None if stamp is None else base64.b64decode(stamp, validate=True)
    except (binascii.Error, ValueError):
        raise _broken("its timestamp is not base64", MALFORMED_CODE, where) from None
    return StoredCheckpoint(size, bytes.fromhex(root_hex), note, token, time)


def parse_checkpoint_file(data: bytes, where: str) -> StoredCheckpoint:
    """A checkpoint file: the JSON form, or a bare signed note (as a witness keeps it)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _broken("not UTF-8", MALFORMED_CODE, where) from None
    if text.lstrip().startswith("{"):
        try:
            document = json.loads(text, parse_constant=_no_constant)
        except ValueError as exc:
            raise _broken(f"not JSON ({exc})", MALFORMED_CODE, where) from None
        return checkpoint_from_json(document, where)
    checkpoint = read_unsigned(text, where)
    return StoredCheckpoint(checkpoint.tree_size, checkpoint.root_hash, text, None, "")


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")
