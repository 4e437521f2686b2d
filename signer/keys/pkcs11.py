"""PKCS#11 keys (`pkcs11:` URIs, RFC 7512): a local HSM module, or a remote one through p11-kit-client.

One session and one login serve a whole batch. A session the token drops
(CKR_SESSION_HANDLE_INVALID, CKR_DEVICE_REMOVED, ...) is re-opened and the call retried once.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote_to_bytes

import pkcs11
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import load_der_public_key
from pkcs11 import MGF, Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11e
from pkcs11.util.ec import encode_ec_public_key

from signer.algorithms import KeyKind, SignatureScheme, ecdsa_raw_to_der
from signer.errors import BackendUnavailableError, ConfigError, SignerError
from signer.files import file_kind, path_error, read_capped
from signer.keys.base import RemoteKey

PIN_ENV = "SEALGATE_PKCS11_PIN"
MODULE_ENV = "SEALGATE_PKCS11_MODULE"
#: A PIN file holds a PIN and a newline; anything much larger is not one.
PIN_FILE_LIMIT = 4096

#: DER DigestInfo prefixes (RFC 8017 §9.2, note 1): RSA PKCS#1 v1.5 signs prefix || digest.
_DIGEST_INFO_PREFIX = {
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}
_PSS_PARAMS = {
    "sha256": (Mechanism.SHA256, MGF.SHA256, 32),
    "sha384": (Mechanism.SHA384, MGF.SHA384, 48),
    "sha512": (Mechanism.SHA512, MGF.SHA512, 64),
}

#: The token lost our session: re-open and retry once.
_SESSION_LOST = (
    p11e.SessionHandleInvalid,
    p11e.SessionClosed,
    p11e.DeviceRemoved,
    p11e.TokenNotPresent,
    p11e.UserNotLoggedIn,
    p11e.ObjectHandleInvalid,
    p11e.KeyHandleInvalid,
)
#: The device or its transport failed: an infrastructure problem (exit 3).
_DEVICE_FAILED = (p11e.DeviceError, p11e.DeviceMemory, p11e.GeneralError, p11e.FunctionFailed)

T = TypeVar("T")


@dataclass(frozen=True)
class Pkcs11Uri:
    """The parts of an RFC 7512 URI that select a module, token, key and PIN."""

    token: str | None = None
    object: str | None = None
    id: bytes | None = None
    slot_id: int | None = None
    serial: str | None = None
    module_path: str | None = None
    pin_source: str | None = None
    pin_value: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, uri: str) -> Pkcs11Uri:
        if not uri.lower().startswith("pkcs11:"):
            raise ConfigError(f"{uri!r} is not a pkcs11: URI", code="bad-key-uri", field="key")
        path, _, query = uri[len("pkcs11:") :].partition("?")
        attrs = _split(path, ";", uri)
        params = _split(query, "&", uri)
        unknown_query = set(params) - {"module-path", "module-name", "pin-source", "pin-value"}
        if unknown_query:
            raise ConfigError(
                f"pkcs11 URI: unknown query attribute {sorted(unknown_query)[0]!r}",
                code="bad-key-uri",
                field="key",
            )
        slot_id = None
        if "slot-id" in attrs:
            try:
                slot_id = int(attrs["slot-id"].decode())
            except ValueError:
                raise ConfigError(
                    f"pkcs11 URI: slot-id must be a number, got {attrs['slot-id'].decode()!r}",
                    code="bad-key-uri",
                    field="key",
                ) from None
        text = {k: v.decode("utf-8", "replace") for k, v in {**attrs, **params}.items()}
        return cls(
            token=text.get("token"),
            object=text.get("object"),
            id=attrs.get("id"),
            slot_id=slot_id,
            serial=text.get("serial"),
            module_path=text.get("module-path"),
            pin_source=text.get("pin-source"),
            pin_value=text.get("pin-value"),
        )

    def display(self) -> str:
        """The URI without the PIN, for messages and reports."""
        parts = [f"token={self.token}"] if self.token else []
        if self.object:
            parts.append(f"object={self.object}")
        if self.id is not None:
            parts.append("id=" + "".join(f"%{b:02x}" for b in self.id))
        if self.slot_id is not None:
            parts.append(f"slot-id={self.slot_id}")
        return "pkcs11:" + ";".join(parts)


def _split(text: str, sep: str, uri: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for item in filter(None, text.split(sep)):
        name, eq, value = item.partition("=")
        if not eq:
            raise ConfigError(
                f"pkcs11 URI: attribute {name!r} has no value", code="bad-key-uri", field="key"
            )
        out[name.strip().lower()] = unquote_to_bytes(value)
    return out


def read_pin(uri: Pkcs11Uri) -> str:
    """The user PIN: pin-value, then pin-source (a file), then $SEALGATE_PKCS11_PIN."""
    if uri.pin_value is not None:
        return uri.pin_value
    if uri.pin_source:
        source = uri.pin_source.removeprefix("file:").removeprefix("//")
        data = read_capped(
            Path(source), what="pkcs11 pin-source", limit=PIN_FILE_LIMIT, field="key"
        )
        try:
            return data.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise ConfigError(
                f"pkcs11 pin-source {source}: not UTF-8 text", code="bad-pin-file", field="key"
            ) from None
    pin = os.environ.get(PIN_ENV)
    if pin is None:
        raise ConfigError(
            f"{uri.display()}: no PIN given",
            hint=f"set {PIN_ENV}, or add pin-source=file:/path to the URI",
            code="no-pin",
            field="key",
        )
    return pin


def check_module(module: str) -> str:
    """`module` when it names a regular file; otherwise a ConfigError naming it and why."""
    try:
        info = os.stat(module)
    except FileNotFoundError:
        raise ConfigError(
            f"PKCS#11 module {module} does not exist",
            hint="install the HSM vendor's PKCS#11 module, or fix module-path",
            code="pkcs11-module-missing",
            field="key",
        ) from None
    except OSError as exc:
        raise path_error(f"PKCS#11 module {module}", exc, "load it", field="key") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(
            f"PKCS#11 module {module}: {file_kind(info.st_mode)}, not a PKCS#11 library",
            code="not-a-pkcs11-module",
            field="key",
        )
    return module


def _load_failure(text: str, module: str) -> str | None:
    """The loader's reason when python-pkcs11 could not load the file as a library at all
    ("OS exception while loading PATH: PATH: undefined symbol: C_GetFunctionList")."""
    marker = f"OS exception while loading {module}: "
    if not text.startswith(marker):
        return None
    reason = text.removeprefix(marker).removeprefix(f"{module}: ")
    return " ".join(reason.split())[:200] or "it cannot be loaded"


class Pkcs11Key(RemoteKey):
    """A private key object in a PKCS#11 token."""

    def __init__(self, uri: str) -> None:
        self.uri = Pkcs11Uri.parse(uri)
        self.display_uri = self.uri.display()
        if not (self.uri.object or self.uri.id is not None):
            raise ConfigError(
                f"{self.display_uri}: name the key with object=LABEL or id=%NN",
                code="bad-key-uri",
                field="key",
            )
        module = self.uri.module_path or os.environ.get(MODULE_ENV)
        if not module:
            raise ConfigError(
                f"{self.display_uri}: no PKCS#11 module",
                hint=f"add ?module-path=/path/to/module.so to the URI or set {MODULE_ENV}",
                code="pkcs11-module-missing",
                field="key",
            )
        self.module_path = check_module(module)
        self._pin = read_pin(self.uri)
        self._session: Any = None
        self._private: Any = None
        self._public: PublicKeyTypes | None = None
        self._cert: x509.Certificate | None = None
        self._cert_loaded = False

    # -- session handling ------------------------------------------------------------

    def _token(self) -> Any:
        try:
            library = pkcs11.lib(self.module_path)
        except (OSError, RuntimeError, p11e.PKCS11Error) as exc:
            reason = _load_failure(str(exc), self.module_path)
            if reason is not None:  # the loader refused the file: configuration, not the HSM
                raise ConfigError(
                    f"PKCS#11 module {self.module_path}: not a PKCS#11 library ({reason})",
                    hint="module-path must name the HSM vendor's PKCS#11 module (.so)",
                    code="not-a-pkcs11-module",
                    field="key",
                ) from None
            raise self._device_failure(
                f"cannot load PKCS#11 module {self.module_path}", exc
            ) from None
        selector: dict[str, Any] = {}
        if self.uri.token:
            selector["token_label"] = self.uri.token
        if self.uri.serial:
            selector["token_serial"] = self.uri.serial.encode()
        try:
            if self.uri.slot_id is not None:
                for slot in library.get_slots(token_present=True):
                    if slot.slot_id == self.uri.slot_id:
                        token = slot.get_token()
                        if self.uri.token and token.label != self.uri.token:
                            break
                        return token
                raise p11e.NoSuchToken()
            return library.get_token(**selector)
        except p11e.NoSuchToken:
            labels = self._token_labels(library)
            if self._remote() and not labels:
                raise BackendUnavailableError(
                    f"{self.display_uri}: the remote HSM at {os.environ['P11_KIT_SERVER_ADDRESS']} "
                    "offers no token",
                    hint="is `p11-kit server` running and exporting this token?",
                    code="hsm-unavailable",
                    field="key",
                ) from None
            raise ConfigError(
                f"{self.display_uri}: no such token in {self.module_path}",
                hint="tokens present: " + (", ".join(labels) if labels else "none"),
                code="token-not-found",
                field="key",
            ) from None
        except p11e.MultipleTokensReturned:
            raise ConfigError(
                f"{self.display_uri}: several tokens match; add token= or slot-id= to the URI",
                code="token-ambiguous",
                field="key",
            ) from None
        except _DEVICE_FAILED as exc:
            raise self._device_failure(f"{self.display_uri}: token unavailable", exc) from None

    def _remote(self) -> bool:
        return "p11-kit-client" in Path(self.module_path).name and bool(
            os.environ.get("P11_KIT_SERVER_ADDRESS")
        )

    @staticmethod
    def _token_labels(library: Any) -> list[str]:
        """The labels of the initialized tokens (a free slot's token has an empty label)."""
        try:
            labels = [slot.get_token().label for slot in library.get_slots(token_present=True)]
        except p11e.PKCS11Error:
            return []
        return [" ".join(str(label).split()) for label in labels if str(label).strip()]

    def _device_failure(self, what: str, exc: BaseException) -> SignerError:
        detail = type(exc).__name__ if not str(exc) else f"{type(exc).__name__}: {exc}"
        return BackendUnavailableError(f"{what} ({detail})", code="hsm-unavailable", field="key")

    def _open(self) -> Any:
        token = self._token()
        try:
            session = token.open(user_pin=self._pin)
        except p11e.UserAlreadyLoggedIn:
            # Login state belongs to the process, not the session: another key of this
            # process is logged in to the token, and a new session shares that login.
            session = token.open()
        except p11e.PinIncorrect:
            raise ConfigError(
                f"{self.display_uri}: PIN rejected by token {token.label!r}",
                code="wrong-pin",
                field="key",
            ) from None
        except p11e.PinLocked:
            raise ConfigError(
                f"{self.display_uri}: the user PIN of token {token.label!r} is locked",
                code="pin-locked",
                field="key",
            ) from None
        except (p11e.PinInvalid, p11e.PinLenRange):
            raise ConfigError(
                f"{self.display_uri}: the PIN has an invalid format", code="wrong-pin", field="key"
            ) from None
        except _DEVICE_FAILED as exc:
            raise self._device_failure(f"{self.display_uri}: cannot open a session", exc) from None
        self._session = session
        self._private = self._find_private_key(session)
        return session

    def _find_private_key(self, session: Any) -> Any:
        matches = list(session.get_objects(self._selector(ObjectClass.PRIVATE_KEY)))
        if not matches:
            raise ConfigError(
                f"{self.display_uri}: no private key with this object/id in the token",
                code="key-not-found",
                field="key",
            )
        if len(matches) > 1:
            raise ConfigError(
                f"{self.display_uri}: {len(matches)} private keys match; add id= to the URI",
                code="key-ambiguous",
                field="key",
            )
        return matches[0]

    def _selector(self, object_class: ObjectClass) -> dict[Attribute, Any]:
        attrs: dict[Attribute, Any] = {Attribute.CLASS: object_class}
        if self.uri.object:
            attrs[Attribute.LABEL] = self.uri.object
        if self.uri.id is not None:
            attrs[Attribute.ID] = self.uri.id
        return attrs

    def _call(self, action: Callable[[Any], T]) -> T:
        """Run `action(session)`; on a lost session re-open and retry exactly once."""
        if self._session is None:
            self._open()
        try:
            return action(self._session)
        except _SESSION_LOST:
            self._drop_session()
            self._open()
            try:
                return action(self._session)
            except _SESSION_LOST as exc:
                raise self._device_failure(f"{self.display_uri}: session lost twice", exc) from None
        except _DEVICE_FAILED as exc:
            raise self._device_failure(f"{self.display_uri}: the token failed", exc) from None

    def _drop_session(self) -> None:
        session, self._session, self._private = self._session, None, None
        if session is not None:
            try:
                session.close()
            except p11e.PKCS11Error:
                pass  # the session is already gone: that is why we are here

    def close(self) -> None:
        self._drop_session()

    # -- the RemoteKey interface ----------------------------------------------------

    def public_key(self) -> PublicKeyTypes:
        if self._public is None:
            self._public = self._call(self._read_public_key)
        return self._public

    def _read_public_key(self, session: Any) -> PublicKeyTypes:
        objects = list(session.get_objects(self._selector(ObjectClass.PUBLIC_KEY)))
        if objects:
            return _public_key_from_object(objects[0])
        cert = self.certificate()
        if cert is not None:
            return cert.public_key()
        raise ConfigError(
            f"{self.display_uri}: the token holds neither a public key nor a certificate for "
            "this key",
            code="public-key-missing",
            field="key",
        )

    def certificate(self) -> x509.Certificate | None:
        if not self._cert_loaded:
            self._cert = self._call(self._read_certificate)
            self._cert_loaded = True
        return self._cert

    def _read_certificate(self, session: Any) -> x509.Certificate | None:
        selectors: list[dict[Attribute, Any]] = []
        if self.uri.id is not None:
            selectors.append({Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.ID: self.uri.id})
        if self.uri.object:
            selectors.append(
                {Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.LABEL: self.uri.object}
            )
        if self.uri.id is None and self._private is not None:
            key_id = self._private[Attribute.ID]
            if key_id:
                selectors.insert(
                    0, {Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.ID: key_id}
                )
        for selector in selectors:
            for obj in session.get_objects(selector):
                return x509.load_der_x509_certificate(bytes(obj[Attribute.VALUE]))
        return None

    def sign_digest(self, digest: bytes, scheme: SignatureScheme) -> bytes:
        if scheme.kind in (KeyKind.EC_P256, KeyKind.EC_P384):
            raw = self._call(lambda _s: self._private.sign(digest, mechanism=Mechanism.ECDSA))
            return ecdsa_raw_to_der(bytes(raw))
        if scheme.kind is KeyKind.RSA and scheme.rsa_padding == "pss":
            params = _PSS_PARAMS[scheme.hash_name]
            return bytes(
                self._call(
                    lambda _s: self._private.sign(
                        digest, mechanism=Mechanism.RSA_PKCS_PSS, mechanism_param=params
                    )
                )
            )
        if scheme.kind is KeyKind.RSA:
            info = _DIGEST_INFO_PREFIX[scheme.hash_name] + digest
            return bytes(
                self._call(lambda _s: self._private.sign(info, mechanism=Mechanism.RSA_PKCS))
            )
        raise ConfigError(
            f"{self.display_uri}: {scheme.describe()} does not sign a digest",
            code="unsupported-scheme",
        )

    def sign_message(self, message: bytes, scheme: SignatureScheme) -> bytes:
        if scheme.kind is not KeyKind.ED25519:
            raise ConfigError(
                f"{self.display_uri}: {scheme.describe()} signs a digest", code="unsupported-scheme"
            )
        return bytes(self._call(lambda _s: self._private.sign(message, mechanism=Mechanism.EDDSA)))


def _public_key_from_object(obj: Any) -> PublicKeyTypes:
    key_type = obj[Attribute.KEY_TYPE]
    if key_type == KeyType.RSA:
        modulus = int.from_bytes(bytes(obj[Attribute.MODULUS]), "big")
        exponent = int.from_bytes(bytes(obj[Attribute.PUBLIC_EXPONENT]), "big")
        return rsa.RSAPublicNumbers(exponent, modulus).public_key()
    if key_type == KeyType.EC:
        return load_der_public_key(encode_ec_public_key(obj))
    if key_type == KeyType.EC_EDWARDS:
        point = bytes(obj[Attribute.EC_POINT])
        # EC_POINT is a DER OCTET STRING (04 20 || key) in most tokens, the raw 32 bytes in some.
        raw = point[2:] if len(point) == 34 and point[:2] == b"\x04\x20" else point
        return ed25519.Ed25519PublicKey.from_public_bytes(raw)
    raise ConfigError(f"unsupported PKCS#11 key type {key_type!r}", code="unsupported-key")
