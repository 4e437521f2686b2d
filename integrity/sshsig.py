"""In-process OpenSSH SSHSIG verification and allowed-signers parsing.

`sealgate commits` verifies thousands of commit signatures; spawning `ssh-keygen -Y verify`
per commit is too slow, so the format of OpenSSH's PROTOCOL.sshsig (and PROTOCOL.u2f for
security-key signatures) is checked here with `cryptography`. Parsing is strict on purpose:
non-minimal integers, trailing bytes, a non-empty reserved field and non-canonical base64 are
rejected so one signature has exactly one encoding and one signer fingerprint.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from integrity.errors import PolicyError, SignatureError, UnsupportedSignatureError

__all__ = [
    "KEY_TYPES",
    "MAX_SIGNATURE_BYTES",
    "AllowedSigner",
    "CryptographyPublicKey",
    "SshPublicKey",
    "parse_allowed_signers",
    "parse_public_key",
    "verify_sshsig",
]

CryptographyPublicKey = Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey

_ED25519: Final = "ssh-ed25519"
_RSA: Final = "ssh-rsa"
_SK_ED25519: Final = "sk-ssh-ed25519@openssh.com"
_SK_ECDSA: Final = "sk-ecdsa-sha2-nistp256@openssh.com"
# key type -> (curve name inside the blob, curve, hash the signature uses)
_ECDSA: Final[dict[str, tuple[str, ec.EllipticCurve, hashes.HashAlgorithm]]] = {
    "ecdsa-sha2-nistp256": ("nistp256", ec.SECP256R1(), hashes.SHA256()),
    "ecdsa-sha2-nistp384": ("nistp384", ec.SECP384R1(), hashes.SHA384()),
    "ecdsa-sha2-nistp521": ("nistp521", ec.SECP521R1(), hashes.SHA512()),
}
KEY_TYPES: Final[frozenset[str]] = frozenset({_ED25519, _RSA, _SK_ED25519, _SK_ECDSA, *_ECDSA})
_RSA_SIG_HASHES: Final[dict[str, hashes.HashAlgorithm]] = {
    "rsa-sha2-256": hashes.SHA256(),
    "rsa-sha2-512": hashes.SHA512(),
}
_RSA_MIN_BITS: Final = 2048
_SK_USER_PRESENT: Final = 0x01

#: An SSHSIG with an RSA-16384 key is under 5 KiB; anything far larger is not a signature.
MAX_SIGNATURE_BYTES: Final = 64 * 1024
_MAGIC: Final = b"SSHSIG"
_ARMOR_BEGIN: Final = b"-----BEGIN SSH SIGNATURE-----"
_ARMOR_END: Final = b"-----END SSH SIGNATURE-----"
_SSHSIG_HASHES: Final = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}


class _MalformedError(ValueError):
    """Internal: a wire-format problem; converted to the caller's error type at the boundary."""


class _UnsupportedError(ValueError):
    """Internal: well-formed but outside what Sealgate verifies (certificates, DSA, ...)."""


class _Reader:
    """Cursor over SSH wire data (RFC 4251 section 5) that refuses to read past the end."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def take(self, n: int, what: str) -> bytes:
        end = self._pos + n
        if end > len(self._data):
            raise _MalformedError(f"truncated {what}")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u32(self, what: str) -> int:
        return int.from_bytes(self.take(4, what), "big")

    def string(self, what: str) -> bytes:
        return self.take(self.u32(what), what)

    def text(self, what: str) -> str:
        raw = self.string(what)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise _MalformedError(f"{what} is not ASCII") from None

    def mpint(self, what: str) -> int:
        """A non-negative, minimally encoded mpint; other encodings would alias the same key."""
        raw = self.string(what)
        if raw and raw[0] & 0x80:
            raise _MalformedError(f"{what} is negative")
        if raw[:1] == b"\x00" and (len(raw) == 1 or not raw[1] & 0x80):
            raise _MalformedError(f"{what} is not minimally encoded")
        return int.from_bytes(raw, "big")

    def end(self, what: str) -> None:
        if self._pos != len(self._data):
            raise _MalformedError(f"trailing bytes after {what}")


@dataclass(frozen=True, slots=True)
class _Loaded:
    key_type: str
    key: CryptographyPublicKey
    application: bytes  # security keys only: the FIDO application the key is bound to


@functools.lru_cache(maxsize=4096)
def _load_blob(blob: bytes) -> _Loaded:
    """Decode and validate a public key blob once; commits by one signer share the result."""
    r = _Reader(blob)
    key_type = r.text("key type")
    key: CryptographyPublicKey
    application = b""
    if key_type in (_ED25519, _SK_ED25519):
        raw = r.string("Ed25519 key")
        if len(raw) != 32:
            raise _MalformedError("Ed25519 key is not 32 bytes")
        key = Ed25519PublicKey.from_public_bytes(raw)
    elif key_type in _ECDSA or key_type == _SK_ECDSA:
        curve_name, curve, _ = _ECDSA["ecdsa-sha2-nistp256" if key_type == _SK_ECDSA else key_type]
        if r.text("curve name") != curve_name:
            raise _MalformedError(f"curve name does not match key type {key_type}")
        try:
            key = ec.EllipticCurvePublicKey.from_encoded_point(curve, r.string("EC point"))
        except ValueError:
            raise _MalformedError("EC point is not on the curve") from None
    elif key_type == _RSA:
        e = r.mpint("RSA exponent")
        n = r.mpint("RSA modulus")
        if n.bit_length() < _RSA_MIN_BITS:
            raise _UnsupportedError(
                f"RSA key of {n.bit_length()} bits is too small (minimum {_RSA_MIN_BITS})"
            )
        try:
            key = rsa.RSAPublicNumbers(e, n).public_key()
        except ValueError as exc:
            raise _MalformedError(f"invalid RSA key: {exc}") from None
    elif "-cert-v01@openssh.com" in key_type:
        raise _UnsupportedError(f"SSH certificates ({key_type}) are not supported")
    else:
        raise _UnsupportedError(f"unsupported SSH key type {key_type!r}")
    if key_type in (_SK_ED25519, _SK_ECDSA):
        application = r.string("security key application")
    r.end("public key")
    return _Loaded(key_type, key, application)


def _fingerprint(blob: bytes) -> str:
    digest = base64.b64encode(hashlib.sha256(blob).digest()).rstrip(b"=")
    return "SHA256:" + digest.decode("ascii")


@dataclass(frozen=True)
class SshPublicKey:
    """An SSH public key; equality ignores the comment so signature and policy keys compare."""

    key_type: str
    blob: bytes
    comment: str = field(default="", compare=False)

    @property
    def fingerprint(self) -> str:
        """`SHA256:...` exactly as `ssh-keygen -lf` prints it."""
        return _fingerprint(self.blob)

    def openssh_line(self) -> str:
        """The `TYPE BASE64 [comment]` line, as in a .pub or allowed-signers file."""
        line = f"{self.key_type} {base64.b64encode(self.blob).decode('ascii')}"
        return f"{line} {self.comment}" if self.comment else line

    def to_cryptography(self) -> CryptographyPublicKey:
        """The `cryptography` key (for security keys: the underlying Ed25519/P-256 key)."""
        try:
            return _load_blob(self.blob).key
        except ValueError as exc:
            raise PolicyError(f"invalid SSH public key blob: {exc}") from None


def _b64decode_canonical(text: bytes) -> bytes:
    """Strict base64: any alphabet error or non-canonical padding bit is a different input."""
    decoded = base64.b64decode(text, validate=True)
    if base64.b64encode(decoded) != text:
        raise binascii.Error("non-canonical base64")
    return decoded


def _key_from_fields(key_type: str, b64: str, comment: str) -> SshPublicKey:
    """Build a key from the fields of a key line; raises ValueError with a readable reason."""
    if key_type not in KEY_TYPES:
        if "-cert-v01@openssh.com" in key_type:
            raise ValueError(f"SSH certificates ({key_type}) are not supported; list the key")
        raise ValueError(
            f"unsupported key type {key_type!r} (expected one of {', '.join(sorted(KEY_TYPES))})"
        )
    try:
        blob = _b64decode_canonical(b64.encode("ascii"))
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError("the key is not valid base64") from None
    loaded = _load_blob(blob)
    if loaded.key_type != key_type:
        raise ValueError(f"line says {key_type} but the key data is {loaded.key_type}")
    return SshPublicKey(key_type, blob, comment)


def _split_key_line(rest: str) -> tuple[str, str, str]:
    parts = rest.split(None, 2)
    if len(parts) < 2:
        raise ValueError("expected 'KEYTYPE BASE64 [comment]'")
    return parts[0], parts[1], parts[2].strip() if len(parts) == 3 else ""


def parse_public_key(line: str, *, where: str) -> SshPublicKey:
    """Parse one OpenSSH public key line (`TYPE BASE64 [comment]`); InputError names `where`."""
    try:
        return _key_from_fields(*_split_key_line(line.strip()))
    except ValueError as exc:
        raise PolicyError(f"{where}: invalid SSH public key: {exc}") from None


# --- SSHSIG ---------------------------------------------------------------------------------


def _dearmor(armored: bytes) -> bytes:
    lines = armored.removesuffix(b"\n").split(b"\n")
    if len(lines) < 3 or lines[0] != _ARMOR_BEGIN or lines[-1] != _ARMOR_END:
        raise _MalformedError("not an armored SSH signature (BEGIN/END SSH SIGNATURE lines)")
    try:
        return _b64decode_canonical(b"".join(lines[1:-1]))
    except binascii.Error:
        raise _MalformedError("SSH signature armor is not valid base64") from None


def _verify_raw(loaded: _Loaded, sig_blob: bytes, data: bytes) -> None:
    """Check one SSH signature blob (RFC 8709/5656/8332, PROTOCOL.u2f) over `data`."""
    r = _Reader(sig_blob)
    sig_type = r.text("signature type")
    key_type = loaded.key_type
    key = loaded.key
    if key_type == _RSA:
        if sig_type == "ssh-rsa":
            raise SignatureError("SHA-1 RSA signatures are not accepted")
        if sig_type not in _RSA_SIG_HASHES:
            raise SignatureError(f"signature type {sig_type} does not match key type {key_type}")
    elif sig_type != key_type:
        raise SignatureError(f"signature type {sig_type} does not match key type {key_type}")
    raw = r.string("signature")
    if key_type in (_SK_ED25519, _SK_ECDSA):
        flags = r.u8("security key flags")
        counter = r.take(4, "security key counter")
        if not flags & _SK_USER_PRESENT:
            raise SignatureError("security key signature was made without user presence")
        data = (
            hashlib.sha256(loaded.application).digest()
            + bytes([flags])
            + counter
            + hashlib.sha256(data).digest()
        )
    r.end("signature")
    try:
        if isinstance(key, Ed25519PublicKey):
            key.verify(raw, data)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            inner = _Reader(raw)
            r_int, s_int = inner.mpint("ECDSA r"), inner.mpint("ECDSA s")
            inner.end("ECDSA signature")
            curve_hash = hashes.SHA256() if key_type == _SK_ECDSA else _ECDSA[key_type][2]
            key.verify(encode_dss_signature(r_int, s_int), data, ec.ECDSA(curve_hash))
        else:
            size = (key.key_size + 7) // 8
            if len(raw) > size:
                raise _MalformedError("RSA signature is longer than the modulus")
            key.verify(
                raw.rjust(size, b"\x00"), data, padding.PKCS1v15(), _RSA_SIG_HASHES[sig_type]
            )
    except InvalidSignature:
        raise SignatureError("SSH signature does not verify") from None


def verify_sshsig(armored: bytes, message: bytes, *, namespace: str = "git") -> SshPublicKey:
    """Verify an armored SSHSIG over `message`; return the signer's key (not yet trusted!).

    The caller still has to check the key against the policy: a valid signature only proves
    that whoever holds this key signed the message in `namespace`.
    """
    if len(armored) > MAX_SIGNATURE_BYTES:
        raise SignatureError(
            f"malformed SSH signature: {len(armored)} bytes, more than {MAX_SIGNATURE_BYTES}"
        )
    try:
        r = _Reader(_dearmor(armored))
        if r.take(6, "magic") != _MAGIC:
            raise _MalformedError("SSH signature does not start with SSHSIG")
        version = r.u32("version")
        if version != 1:
            raise UnsupportedSignatureError(f"SSH signature version {version} is not supported")
        key_blob = r.string("public key")
        sig_namespace = r.string("namespace")
        reserved = r.string("reserved")
        hash_name = r.string("hash algorithm")
        sig_blob = r.string("signature")
        r.end("SSH signature")
        if sig_namespace != namespace.encode("utf-8"):
            shown = sig_namespace.decode("utf-8", "replace")
            raise SignatureError(f"SSH signature namespace is {shown!r}, not {namespace!r}")
        if reserved:  # OpenSSH ignores it; a field with no meaning yet is a second encoding
            raise SignatureError(
                f"SSH signature reserved field is not empty ({len(reserved)} bytes)"
            )
        hasher = _SSHSIG_HASHES.get(hash_name.decode("ascii", "replace"))
        if hasher is None:
            raise SignatureError(f"SSH signature hash {hash_name!r} is not sha256 or sha512")
        loaded = _load_blob(key_blob)

        def string(value: bytes) -> bytes:
            return len(value).to_bytes(4, "big") + value

        signed = (
            _MAGIC
            + string(sig_namespace)
            + string(reserved)
            + string(hash_name)
            + string(hasher(message).digest())
        )
        _verify_raw(loaded, sig_blob, signed)
    except _UnsupportedError as exc:
        raise UnsupportedSignatureError(str(exc)) from None
    except (ValueError, IndexError, OverflowError, TypeError) as exc:
        raise SignatureError(f"malformed SSH signature: {exc}") from None
    return SshPublicKey(loaded.key_type, key_blob)


# --- allowed signers (ssh-keygen(1), ALLOWED SIGNERS) ---------------------------------------


@dataclass(frozen=True)
class AllowedSigner:
    """One line of a git `gpg.ssh.allowedSignersFile`; times are timezone-aware."""

    principals: tuple[str, ...]
    key: SshPublicKey
    namespaces: tuple[str, ...] | None
    valid_after: datetime | None
    valid_before: datetime | None
    cert_authority: bool
    line: int


_TIME_RE: Final = re.compile(r"(\d{8}|\d{12}|\d{14})(z|utc)?", re.IGNORECASE)
_OPTION_NAMES: Final = ("cert-authority", "namespaces", "valid-after", "valid-before")


def _parse_time(value: str, option: str) -> datetime:
    """ssh-keygen's parse_absolute_time: YYYYMMDD[HHMM[SS]], UTC with Z/UTC, else local time."""
    m = _TIME_RE.fullmatch(value)
    if m is None:
        raise ValueError(f"{option} must be YYYYMMDD[HHMM[SS]][Z], not {value!r}")
    digits = m.group(1).ljust(14, "0")
    try:
        naive = datetime.strptime(digits, "%Y%m%d%H%M%S")
    except ValueError:
        raise ValueError(f"{option} is not a real date/time: {value!r}") from None
    return naive.replace(tzinfo=UTC) if m.group(2) else naive.astimezone()


def _dequote(text: str, pos: int, option: str) -> tuple[str, int]:
    """OpenSSH opt_dequote: a double-quoted value in which only \\" is an escape."""
    if pos >= len(text) or text[pos] != '"':
        raise ValueError(f'{option} value must be double-quoted, e.g. {option}="..."')
    out: list[str] = []
    pos += 1
    while pos < len(text) and text[pos] != '"':
        if text[pos] == "\\" and text[pos + 1 : pos + 2] == '"':
            pos += 1
        out.append(text[pos])
        pos += 1
    if pos >= len(text):
        raise ValueError(f"{option} value is missing its closing quote")
    return "".join(out), pos + 1


def _split_options(rest: str) -> tuple[str, str]:
    """Split `options keytype ...` at the first whitespace outside double quotes."""
    in_quote = False
    i = 0
    while i < len(rest):
        c = rest[i]
        if c == "\\" and in_quote and rest[i + 1 : i + 2] == '"':
            i += 2
            continue
        if c == '"':
            in_quote = not in_quote
        elif not in_quote and c in " \t":
            return rest[:i], rest[i:].lstrip(" \t")
        i += 1
    if in_quote:
        raise ValueError("unterminated quote in options")
    return rest, ""


def _parse_options(
    opts: str,
) -> tuple[tuple[str, ...] | None, datetime | None, datetime | None, bool]:
    namespaces: tuple[str, ...] | None = None
    after: datetime | None = None
    before: datetime | None = None
    cert_authority = False
    seen: set[str] = set()
    pos = 0
    while True:
        name = next((n for n in _OPTION_NAMES if opts[pos:].lower().startswith(n)), None)
        wants_value = name != "cert-authority"
        if name is None or wants_value != (opts[pos + len(name) : pos + len(name) + 1] == "="):
            word = re.split(r'[,="]', opts[pos:], maxsplit=1)[0]
            raise ValueError(
                f"unknown option {word!r} (known: {', '.join(_OPTION_NAMES)}); "
                "or an unsupported key type"
            )
        if name in seen:
            raise ValueError(f"option {name} given twice")
        seen.add(name)
        pos += len(name)
        if name == "cert-authority":
            cert_authority = True
        else:
            value, pos = _dequote(opts, pos + 1, name)
            if name == "namespaces":
                namespaces = tuple(value.split(","))
            elif name == "valid-after":
                after = _parse_time(value, name)
            else:
                before = _parse_time(value, name)
        if pos == len(opts):
            break
        if opts[pos] != ",":
            raise ValueError(f"expected ',' after option {name}")
        pos += 1
    if after is not None and before is not None and before <= after:
        raise ValueError("valid-before is not after valid-after")
    return namespaces, after, before, cert_authority


def _parse_signer_line(text: str, number: int) -> AllowedSigner:
    if text.startswith('"'):
        end = text.find('"', 1)
        if end < 0:
            raise ValueError("principals have an opening quote but no closing quote")
        if text[end + 1 : end + 2] not in ("", " ", "\t"):
            raise ValueError('quote the whole principals list: "a b,c@example.com"')
        principals_text, rest = text[1:end], text[end + 1 :].lstrip(" \t")
    else:
        split = text.split(None, 1)
        principals_text, rest = split[0], split[1] if len(split) == 2 else ""
    principals = tuple(principals_text.split(","))
    if not principals_text or "" in principals:
        raise ValueError("empty principal")
    if not rest:
        raise ValueError("missing key after the principals")
    namespaces: tuple[str, ...] | None = None
    after = before = None
    cert_authority = False
    first = rest.split(None, 1)[0]
    if first not in KEY_TYPES and "-cert-v01@openssh.com" not in first:
        opts, rest = _split_options(rest)
        namespaces, after, before, cert_authority = _parse_options(opts)
        if not rest:
            raise ValueError("missing key after the options")
    key = _key_from_fields(*_split_key_line(rest))
    return AllowedSigner(principals, key, namespaces, after, before, cert_authority, number)


def parse_allowed_signers(text: str, *, source: str) -> list[AllowedSigner]:
    """Parse git's allowed-signers file as ssh-keygen does; InputError names source and line."""
    signers: list[AllowedSigner] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip(" \t\r")
        if not line or line.startswith("#"):
            continue
        try:
            signers.append(_parse_signer_line(line, number))
        except ValueError as exc:
            raise PolicyError(f"{source} line {number}: {exc}") from None
    return signers
