"""OpenPGP commit-signature checks done in-process with pysequoia (no gpg per commit).

pysequoia raises bare ``RuntimeError``s whose text carries a Rust backtrace when
``RUST_BACKTRACE`` is set, and says only "no valid signatures found" for every
verification failure.  This module turns those into the typed errors of
:mod:`integrity.errors`, finds the issuer itself (so an unknown key is told
apart from a bad signature) and adds a best-effort reason for the failure.
"""

from __future__ import annotations

import tomllib
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import pysequoia

from integrity.errors import (
    InputError,
    SignatureError,
    UnknownKeyError,
    UnsupportedSignatureError,
)

__all__ = [
    "SEQUOIA_RIGHTS",
    "OpenPgpKey",
    "OpenPgpKeyring",
    "PolicyAuthorization",
    "load_openpgp_key",
    "load_openpgp_keys",
    "parse_sequoia_policy",
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


def _key_packets(cert: pysequoia.Cert) -> list[tuple[str, str]]:
    """(fingerprint, key id) of the primary key and every subkey, both lower-case hex."""
    out: list[tuple[str, str]] = []
    for packet in pysequoia.packet.PacketPile.from_bytes(bytes(cert)):
        fpr = packet.fingerprint
        key_id = packet.key_id
        if fpr is not None and key_id is not None:
            out.append((fpr.lower(), key_id.lower()))
    return out


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
        return text_or_bytes.encode("utf-8")
    return bytes(text_or_bytes)


def load_openpgp_keys(text_or_bytes: str | bytes, *, where: str) -> list[OpenPgpKey]:
    """Every certificate of an armored (or binary) keyring; empty input gives ``[]``.

    Secret keys are refused so that a policy file never ends up holding private material.
    """
    data = _as_bytes(text_or_bytes)
    if not data.strip():
        return []
    if b"PRIVATE KEY BLOCK" in data:
        raise InputError(f"{where}: is a secret key; give the public key")
    try:
        certs = pysequoia.Cert.split_bytes(data)
        keys = []
        for cert in certs:
            if _has_secrets(cert):
                raise InputError(f"{where}: is a secret key; give the public key")
            keys.append(_from_cert(cert))
    except InputError:
        raise
    except _NEVER_WRAP:
        raise
    except BaseException as exc:  # pysequoia: RuntimeError, or pyo3's PanicException
        raise InputError(
            f"{where}: not an OpenPGP public key: {_first_line(exc)}",
            hint="export it with `gpg --armor --export FINGERPRINT`",
        ) from None
    if not keys:
        raise InputError(f"{where}: holds no OpenPGP certificate")
    return keys


def load_openpgp_key(text_or_bytes: str | bytes, *, where: str) -> OpenPgpKey:
    """Exactly one armored public certificate (primary key with its subkeys and user IDs)."""
    keys = load_openpgp_keys(text_or_bytes, where=where)
    if not keys:
        raise InputError(f"{where}: holds no OpenPGP certificate")
    if len(keys) > 1:
        raise InputError(
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

    What pysequoia enforces (sequoia's StandardPolicy, judged at the signature's
    creation time): the signing (sub)key must be validly bound, signing-capable and
    not expired then, so a signature made while the key was valid stays valid after
    it expires (tested); a revoked certificate is refused (tested with gpg's default,
    "hard" revocation, which voids older signatures too).  Per sequoia's policy, weak
    hashes (MD5, SHA-1 data signatures), too-weak algorithms and signatures dated in
    the future are refused as well; all of it surfaces as one :class:`SignatureError`.
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
                    raise InputError(
                        f"cannot merge two copies of {key.fingerprint}: {_first_line(exc)}"
                    ) from None
        self._by_primary: dict[str, OpenPgpKey] = {k.lower(): v for k, v in merged.items()}
        self._by_fpr: dict[str, list[OpenPgpKey]] = {}
        self._by_key_id: dict[str, list[OpenPgpKey]] = {}
        for key in merged.values():
            for fpr, key_id in _key_packets(key.cert):
                self._by_fpr.setdefault(fpr, []).append(key)
                self._by_key_id.setdefault(key_id, []).append(key)

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
        issuer is not in the keyring, ``UnsupportedSignatureError`` for SSH/X.509 signatures.
        """
        sig = self._parse(signature)
        issuer, candidates = self._candidates(sig)
        try:
            result = pysequoia.verify(
                bytes=payload, store=lambda _ids: [key.cert for key in candidates], signature=sig
            )
            valid = [str(v.certificate).lower() for v in result.valid_sigs]
        except _NEVER_WRAP:
            raise
        except BaseException as exc:
            raise SignatureError(
                f"signature by {issuer} does not verify: {_first_line(exc)}",
                hint=_why_not(sig, candidates),
            ) from None
        for fpr in valid:
            key = self._by_primary.get(fpr)
            if key is not None and key in candidates:
                return key
        raise SignatureError(
            f"signature by {issuer} does not verify", hint=_why_not(sig, candidates)
        )

    @staticmethod
    def _parse(signature: bytes) -> pysequoia.Sig:
        head = bytes(signature).lstrip()[:64]
        for armor, what in _FOREIGN_ARMOR.items():
            if head.startswith(armor):
                raise UnsupportedSignatureError(f"{what}, not an OpenPGP signature")
        try:
            return pysequoia.Sig.from_bytes(bytes(signature))
        except _NEVER_WRAP:
            raise
        except BaseException as exc:
            raise SignatureError(f"malformed OpenPGP signature: {_first_line(exc)}") from None

    def _candidates(self, sig: pysequoia.Sig) -> tuple[str, list[OpenPgpKey]]:
        """The issuer as named by the signature, and the certificates that hold that key."""
        try:
            fpr = sig.issuer_fingerprint
            key_id = sig.issuer_key_id
        except _NEVER_WRAP:
            raise
        except BaseException as exc:
            raise SignatureError(f"malformed OpenPGP signature: {_first_line(exc)}") from None
        if fpr:
            issuer = fpr.upper()
            candidates = self._by_fpr.get(fpr.lower(), [])
        elif key_id:
            issuer = f"key ID {key_id.upper()}"
            candidates = self._by_key_id.get(key_id.lower(), [])
        else:
            raise SignatureError("OpenPGP signature names no issuer key")
        if not candidates:
            raise UnknownKeyError(
                f"signed by {issuer}, which is not an allowed key",
                hint="add its public certificate to the policy if it should be trusted",
            )
        return issuer, candidates


def _why_not(sig: pysequoia.Sig, candidates: Sequence[OpenPgpKey]) -> str:
    """pysequoia only says "no valid signatures found"; guess the likeliest cause."""
    try:
        made: datetime | None = sig.created
        for key in candidates:
            cert = key.cert
            if cert.is_revoked:
                return f"certificate {key.fingerprint} is revoked"
            expires = cert.expiration
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
        "(expired/revoked subkey, weak hash, no signing capability)"
    )


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
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{source}: not valid TOML: {exc}") from None
    version = doc.get("version")
    if version != 0 or isinstance(version, bool):
        raise InputError(
            f"{source}: unsupported policy version {version!r}",
            hint="only sequoia-git's `version = 0` is understood",
        )
    goodlist = doc.get("commit_goodlist", [])
    if not isinstance(goodlist, list) or not all(isinstance(c, str) for c in goodlist):
        raise InputError(f"{source}: commit_goodlist must be a list of commit ids")
    unknown_top = sorted(set(doc) - {"version", "commit_goodlist", "authorization"})
    if unknown_top:
        raise InputError(f"{source}: unknown top-level key(s): {', '.join(unknown_top)}")
    tables = doc.get("authorization", {})
    if not isinstance(tables, dict):
        raise InputError(f"{source}: `authorization` must be a table of tables")
    out: list[PolicyAuthorization] = []
    for name, table in tables.items():
        where = f"{source}: authorization.{name}"
        if not isinstance(table, dict):
            raise InputError(f"{where}: must be a table")
        rights: set[str] = set()
        for key, value in table.items():
            if key == "keyring":
                continue
            if key not in SEQUOIA_RIGHTS:
                raise InputError(
                    f"{where}: unknown key {key!r}",
                    hint=f"known rights: {', '.join(sorted(SEQUOIA_RIGHTS))}",
                )
            if not isinstance(value, bool):
                raise InputError(f"{where}: {key} must be true or false")
            if value:
                rights.add(key)
        keyring = table.get("keyring", "")
        if not isinstance(keyring, str):
            raise InputError(f"{where}: keyring must be a string of armored certificates")
        keys = tuple(load_openpgp_keys(keyring, where=f"{where}.keyring"))
        out.append(PolicyAuthorization(name=name, keys=keys, rights=frozenset(rights)))
    return out
