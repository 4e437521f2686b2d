"""Vault / OpenBao transit keys: `hashivault://KEY[/VERSION]`.

Only digests (or, for Ed25519, the small signed attributes) travel to the server; the
private key never leaves it. The key version is fixed when the key is opened and sent with
every request, so a rotation in the middle of a run cannot mix versions, and each signature
matches the public key that went into the certificate.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from collections.abc import Sequence
from typing import Any, Final, Self
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from signer.algorithms import KeyKind, SignatureScheme, key_kind
from signer.errors import BackendUnavailableError, ConfigError
from signer.http import HttpClient, HttpFailedError, HttpResponse, HttpUnavailableError, RetryPolicy
from signer.keys.base import RemoteKey
from signer.keys.settings import kms_timeout
from signer.redact import redact_url

__all__ = ["VaultTransitKey", "parse_uri"]

URI_PREFIX: Final = "hashivault://"

#: Transit key types Sealgate signs with, and the RSA size each implies.
_KEY_TYPES: Final[dict[str, tuple[KeyKind, int | None]]] = {
    "ecdsa-p256": (KeyKind.EC_P256, None),
    "ecdsa-p384": (KeyKind.EC_P384, None),
    "rsa-2048": (KeyKind.RSA, 2048),
    "rsa-3072": (KeyKind.RSA, 3072),
    "rsa-4096": (KeyKind.RSA, 4096),
    "ed25519": (KeyKind.ED25519, None),
}
_HASH_PATHS: Final = {"sha256": "sha2-256", "sha384": "sha2-384", "sha512": "sha2-512"}

#: Digests per batch request: large enough to amortise the round trip, small enough that
#: one request stays well inside the read timeout even for RSA-4096.
BATCH_SIZE: Final = 500

#: The retry policy (signer.http): attempts, first backoff bound, and the least total budget
#: in seconds (twice the per-request timeout when that is longer).
_ATTEMPTS: Final = 4
_FIRST_BACKOFF: Final = 0.25
_RETRY_BUDGET: Final = 20.0

_KEY_NAME: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]*")
_MOUNT: Final = re.compile(r"[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*")
_SIGNATURE: Final = re.compile(r"vault:v([0-9]+):([A-Za-z0-9+/=]+)")


def parse_uri(uri: str) -> tuple[str, int | None]:
    """Split `hashivault://KEY[/VERSION]` into the key name and the pinned version, if any."""
    if not uri.startswith(URI_PREFIX):
        raise ConfigError(
            f"{uri!r} is not a hashivault:// key URI", code="bad-key-uri", field="key"
        )
    parts = uri[len(URI_PREFIX) :].split("/")
    if len(parts) > 2 or not _KEY_NAME.fullmatch(parts[0]):
        raise ConfigError(
            f"malformed key URI {uri!r}",
            hint="use hashivault://KEY or hashivault://KEY/VERSION (the mount comes from "
            "SEALGATE_VAULT_TRANSIT_MOUNT)",
            code="bad-key-uri",
            field="key",
        )
    if len(parts) == 1:
        return parts[0], None
    if not parts[1].isdigit() or int(parts[1]) < 1:
        raise ConfigError(
            f"malformed key version {parts[1]!r} in {uri!r}",
            hint="a version is a number from 1",
            code="bad-key-uri",
            field="key",
        )
    return parts[0], int(parts[1])


def _first_env(*names: str) -> tuple[str, str] | None:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return name, value
    return None


class VaultTransitKey(RemoteKey):
    """A transit key on Vault or OpenBao, signing digests over the HTTP API."""

    #: The key version every signature of this object is made with.
    key_version: int

    def __init__(self, uri: str) -> None:
        self.name, self.pinned_version = parse_uri(uri)
        suffix = f"/{self.pinned_version}" if self.pinned_version else ""
        self.display_uri = f"{URI_PREFIX}{self.name}{suffix}"

        found = _first_env("VAULT_ADDR", "BAO_ADDR")
        if found is None:
            raise ConfigError(
                f"{self.display_uri}: no Vault/OpenBao address",
                hint="set VAULT_ADDR (or BAO_ADDR), e.g. https://vault.example.com:8200",
                code="no-kms-address",
                field="key",
            )
        address = found[1].rstrip("/")
        try:
            parts = urlsplit(address)
            valid = parts.scheme in {"http", "https"} and bool(parts.hostname)
            _ = parts.port  # raises ValueError on a malformed port
        except ValueError:
            valid = False
        if not valid:
            # The value itself is not echoed: a misplaced token must not reach the log.
            raise ConfigError(
                f"{found[0]} is not an http(s) URL",
                hint="e.g. https://vault.example.com:8200",
                code="bad-kms-address",
            )
        if "@" in parts.netloc or parts.query or parts.fragment:
            # Credentials travel in headers (X-Vault-Token), never in the URL: a URL is logged
            # by proxies and servers. The value is not echoed, so the secret stays out of logs.
            raise ConfigError(
                f"{found[0]} carries credentials or parameters (user info, ?query or #fragment)",
                hint=f"set {found[0]} to the bare address, e.g. https://vault.example.com:8200, "
                "and the token in VAULT_TOKEN (or BAO_TOKEN)",
                code="credentials-in-url",
            )
        self.address = redact_url(address)  # bare by now; shown only through the redactor
        token = _first_env("VAULT_TOKEN", "BAO_TOKEN")
        if token is None:
            raise ConfigError(
                f"{self.display_uri}: no Vault/OpenBao token",
                hint="set VAULT_TOKEN (or BAO_TOKEN)",
                code="no-kms-token",
                field="key",
            )
        self._token = token[1]
        mount = os.environ.get("SEALGATE_VAULT_TRANSIT_MOUNT", "").strip().strip("/") or "transit"
        if not _MOUNT.fullmatch(mount):
            raise ConfigError(
                f"SEALGATE_VAULT_TRANSIT_MOUNT={mount!r} is not a mount path", code="bad-setting"
            )
        self.mount = mount
        timeout = kms_timeout()
        self._base = f"{address}/v1/{mount}"

        headers = {"X-Vault-Token": self._token}
        namespace = _first_env("VAULT_NAMESPACE", "BAO_NAMESPACE")
        if namespace:
            headers["X-Vault-Namespace"] = namespace[1]
        # Passed per request: requests lets REQUESTS_CA_BUNDLE override a session's `verify`.
        ca_file = _first_env("VAULT_CACERT", "BAO_CACERT")
        self._http = HttpClient(
            RetryPolicy(
                attempts=_ATTEMPTS,
                backoff=_FIRST_BACKOFF,
                timeout=timeout,
                budget=max(_RETRY_BUDGET, 2 * timeout),
            ),
            headers=headers,
            verify=ca_file[1] if ca_file else True,
        )
        try:
            self._open()
        except BaseException:
            self._http.close()
            raise

    # -- reading the key --------------------------------------------------------------------

    def _open(self) -> None:
        """Read the key once: its type, the version to sign with, and that version's public key."""
        data = _data(self._call("GET", f"keys/{self.name}", action="read"))
        key_type = data.get("type")
        if key_type not in _KEY_TYPES:
            raise ConfigError(
                f"transit key {self.name!r} has type {key_type!r}, which Sealgate does not "
                "sign with",
                hint=f"use one of {', '.join(_KEY_TYPES)}",
                code="unsupported-key",
                field="key",
            )
        self.key_type: str = key_type
        self.kind, rsa_bits = _KEY_TYPES[key_type]
        if data.get("supports_signing") is False:
            raise ConfigError(
                f"transit key {self.name!r} does not support signing",
                code="key-unusable",
                field="key",
            )
        if data.get("derived"):
            raise ConfigError(
                f"transit key {self.name!r} is a derived key",
                hint="derived keys need a per-request context; create the key without derived=true",
                code="key-unusable",
                field="key",
            )
        try:
            latest = int(data["latest_version"])
            versions: dict[str, Any] = dict(data["keys"])
            min_signing = int(data.get("min_encryption_version") or 0)
        except (KeyError, TypeError, ValueError):
            raise BackendUnavailableError(
                f"{self.address} returned an unreadable description of transit key {self.name!r}",
                code="kms-bad-response",
                field="key",
            ) from None
        version = self.pinned_version or latest
        entry = versions.get(str(version))
        if not isinstance(entry, dict):
            available = ", ".join(sorted(versions, key=lambda v: int(v) if v.isdigit() else 0))
            raise ConfigError(
                f"transit key {self.name!r} has no version {version}",
                hint=f"available versions: {available or 'none'}; latest is {latest}",
                code="key-version-missing",
                field="key",
            )
        if version < min_signing:
            raise ConfigError(
                f"transit key {self.name!r} version {version} is below the key's minimum "
                f"signing version {min_signing}",
                hint="pin a newer version, or lower min_encryption_version",
                code="key-unusable",
                field="key",
            )
        self.key_version = version
        self._public_key = self._load_public_key(entry.get("public_key"), rsa_bits)

    def _load_public_key(self, encoded: object, rsa_bits: int | None) -> PublicKeyTypes:
        """Transit gives PEM for ECDSA and RSA, but base64 raw bytes for Ed25519."""
        if not isinstance(encoded, str) or not encoded:
            raise BackendUnavailableError(
                f"{self.address} returned no public key for transit key {self.name!r} "
                f"version {self.key_version}",
                code="kms-bad-response",
                field="key",
            )
        try:
            public_key: PublicKeyTypes
            if self.kind is KeyKind.ED25519:
                public_key = ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(encoded))
            else:
                public_key = serialization.load_pem_public_key(encoded.encode())
            matches = key_kind(public_key) is self.kind and (
                rsa_bits is None
                or (isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size == rsa_bits)
            )
        except (ValueError, binascii.Error, ConfigError):
            matches = False
        if not matches:
            raise BackendUnavailableError(
                f"{self.address} returned a public key for transit key {self.name!r} that is not "
                f"a {self.key_type} key",
                code="kms-bad-response",
                field="key",
            )
        return public_key

    def __enter__(self) -> Self:
        return self

    def public_key(self) -> PublicKeyTypes:
        return self._public_key

    # -- signing ----------------------------------------------------------------------------

    def sign_digest(self, digest: bytes, scheme: SignatureScheme) -> bytes:
        if not scheme.signs_digest:
            raise ConfigError(
                f"{self.display_uri}: {scheme.describe()} signs messages, not digests",
                code="unsupported-scheme",
            )
        return self._sign_inputs([digest], scheme)[0]

    def sign_message(self, message: bytes, scheme: SignatureScheme) -> bytes:
        if scheme.signs_digest:
            raise ConfigError(
                f"{self.display_uri}: {scheme.describe()} signs a digest", code="unsupported-scheme"
            )
        return self._sign_inputs([message], scheme)[0]

    def sign_many(self, payloads: Sequence[bytes], scheme: SignatureScheme) -> list[bytes]:
        """Hash locally, then sign up to BATCH_SIZE inputs per request with `batch_input`."""
        inputs = [
            hashlib.new(scheme.hash_name, payload).digest() if scheme.signs_digest else payload
            for payload in payloads
        ]
        signatures: list[bytes] = []
        for start in range(0, len(inputs), BATCH_SIZE):
            signatures += self._sign_inputs(inputs[start : start + BATCH_SIZE], scheme)
        return signatures

    def _sign_inputs(self, inputs: Sequence[bytes], scheme: SignatureScheme) -> list[bytes]:
        """One request: `input` for a single item, `batch_input` for several."""
        if not inputs:
            return []
        self._check_scheme(scheme)
        if scheme.signs_digest and any(len(d) != scheme.digest_size for d in inputs):
            raise ConfigError(
                f"{self.display_uri}: a {scheme.hash_name} digest must be "
                f"{scheme.digest_size} bytes",
                code="digest-length",
                field="digest",
            )
        body: dict[str, Any] = {"key_version": self.key_version}
        path = f"sign/{self.name}"
        if scheme.signs_digest:
            path += f"/{_HASH_PATHS[scheme.hash_name]}"
            body |= {"prehashed": True, "marshaling_algorithm": "asn1"}
            if self.kind is KeyKind.RSA:
                body["signature_algorithm"] = scheme.rsa_padding or "pkcs1v15"
                if scheme.rsa_padding == "pss":
                    # Transit's default PSS salt is the maximum; CMS (RFC 4055) declares the
                    # digest length, so ask for exactly that.
                    body["salt_length"] = "hash"
        encoded = [base64.b64encode(item).decode("ascii") for item in inputs]
        if len(encoded) == 1:
            body["input"] = encoded[0]
        else:
            body["batch_input"] = [
                {"input": item, "reference": str(i)} for i, item in enumerate(encoded)
            ]

        reply = self._call("POST", path, body, action="sign with")
        self._check_warnings(reply)
        data = _data(reply)
        if len(encoded) == 1:
            return [self._signature_of(data, 0)]
        results = data.get("batch_results")
        if not isinstance(results, list) or len(results) != len(encoded):
            raise BackendUnavailableError(
                f"{self.address} answered a batch of {len(encoded)} for transit key "
                f"{self.name!r} with {len(results) if isinstance(results, list) else 'no'} results",
                code="kms-bad-response",
                field="key",
            )
        return [self._signature_of(result, i) for i, result in enumerate(results)]

    def _check_scheme(self, scheme: SignatureScheme) -> None:
        if scheme.kind is not self.kind:
            raise ConfigError(
                f"{self.display_uri} is a {self.key_type} key and cannot sign with "
                f"{scheme.describe()}",
                code="unsupported-scheme",
            )

    def _check_warnings(self, reply: dict[str, Any]) -> None:
        """An older server ignores parameters it does not know (salt_length): refuse, since
        the signature would not be what CMS declares."""
        for warning in reply.get("warnings") or ():
            if isinstance(warning, str) and "unrecognized parameters" in warning:
                raise ConfigError(
                    f"{self.address} ignored signing parameters for transit key "
                    f"{self.name!r}: {self._redact(warning)}",
                    hint="upgrade Vault/OpenBao, or use PKCS#1 v1.5 padding",
                    code="kms-ignored-parameters",
                    field="key",
                )

    def _signature_of(self, result: object, index: int) -> bytes:
        """Decode `vault:vN:BASE64`, checking it came from the version we pinned."""
        if not isinstance(result, dict):
            raise BackendUnavailableError(
                f"{self.address} returned a malformed signing result",
                code="kms-bad-response",
                field="key",
            )
        if result.get("error"):
            raise BackendUnavailableError(
                f"transit key {self.name!r}: signing item {index} failed on {self.address}: "
                f"{self._redact(str(result['error']))}",
                code="kms-error",
                field="key",
            )
        reference = result.get("reference")
        if reference not in (None, "", str(index)):
            raise BackendUnavailableError(
                f"{self.address} returned batch results out of order for transit key {self.name!r}",
                code="kms-bad-response",
                field="key",
            )
        match = _SIGNATURE.fullmatch(str(result.get("signature", "")))
        if match is None:
            raise BackendUnavailableError(
                f"{self.address} returned no readable signature for transit key {self.name!r}",
                code="kms-bad-response",
                field="key",
            )
        if int(match.group(1)) != self.key_version:
            raise BackendUnavailableError(
                f"transit key {self.name!r} signed with version {match.group(1)}, "
                f"not the requested version {self.key_version}",
                code="key-version-mismatch",
                field="key",
            )
        try:
            return base64.b64decode(match.group(2), validate=True)
        except binascii.Error:
            raise BackendUnavailableError(
                f"{self.address} returned a signature that is not base64",
                code="kms-bad-response",
                field="key",
            ) from None

    # -- HTTP -------------------------------------------------------------------------------

    def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, action: str
    ) -> dict[str, Any]:
        """One API call through the shared HTTP layer (retries on transport errors, 408, 429
        and 5xx, within the time budget)."""
        try:
            response = self._http.request(method, f"{self._base}/{path}", json=body)
        except HttpFailedError as exc:
            if exc.kind == "tls":
                raise ConfigError(
                    f"TLS to {self.address} failed",
                    hint="set VAULT_CACERT to the CA bundle that signed the server's certificate",
                    code="tls-error",
                    field="key",
                ) from None
            raise BackendUnavailableError(
                f"cannot call {self.address} for transit key {self.name!r}: {exc.reason}",
                code="kms-bad-response",
                field="key",
            ) from None
        except HttpUnavailableError as exc:
            detail = f": {self._errors(exc.last)}" if exc.last is not None else ""
            raise BackendUnavailableError(
                f"Vault/OpenBao at {self.address} unavailable for transit key {self.name!r}: "
                f"{exc.problem}{detail} ({exc.attempts} attempt{'s' if exc.attempts != 1 else ''})",
                hint="check that the server is up and unsealed; SEALGATE_KMS_TIMEOUT sets the "
                "per-request timeout",
                code="kms-unreachable",
                field="key",
            ) from None
        return self._answer(response, action)

    def _answer(self, response: HttpResponse, action: str) -> dict[str, Any]:
        """Map an HTTP answer to its JSON body, or to a typed error naming the key."""
        status = response.status
        if 200 <= status < 300:
            try:
                reply = json.loads(response.body) if response.body else {}
            except ValueError:
                reply = None
            if not isinstance(reply, dict):
                raise BackendUnavailableError(
                    f"{self.address} answered with something other than JSON",
                    code="kms-bad-response",
                )
            return reply
        errors = self._errors(response)
        if status in (401, 403):
            raise ConfigError(
                f"permission denied for transit key {self.name!r} on {self.address}",
                hint=f"the token is invalid or expired, or its policy lacks read on "
                f"{self.mount}/keys/{self.name} and update on {self.mount}/sign/{self.name}/*",
                code="kms-permission-denied",
                field="key",
            )
        if status == 404 and "no handler for route" in errors:
            raise ConfigError(
                f"no transit engine mounted at {self.mount!r} on {self.address}",
                hint="set SEALGATE_VAULT_TRANSIT_MOUNT to the transit mount path",
                code="kms-no-transit-mount",
                field="key",
            )
        if status == 404 or (status == 400 and "not found" in errors):
            raise ConfigError(
                f"transit key {self.name!r} not found at mount {self.mount!r} on {self.address}",
                code="key-not-found",
                field="key",
            )
        if 400 <= status < 500:
            raise ConfigError(
                f"{self.address} refused to {action} transit key {self.name!r}: "
                f"HTTP {status}: {errors}",
                code="kms-refused",
                field="key",
            )
        raise BackendUnavailableError(
            f"{self.address} failed to {action} transit key {self.name!r}: HTTP {status}: {errors}",
            code="kms-error",
            field="key",
        )

    def _errors(self, response: HttpResponse) -> str:
        """The server's `errors` list as one short line, with the token redacted."""
        try:
            reply = json.loads(response.body)
        except ValueError:
            reply = None
        items = reply.get("errors") if isinstance(reply, dict) else None
        if isinstance(items, list) and items:
            text = "; ".join(" ".join(str(item).split()) for item in items)
        else:
            text = response.reason or "no details"
        return self._redact(text[:300])

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "[token]") if self._token else text

    def close(self) -> None:
        self._http.close()


def _data(reply: dict[str, Any]) -> dict[str, Any]:
    data = reply.get("data")
    return data if isinstance(data, dict) else {}
