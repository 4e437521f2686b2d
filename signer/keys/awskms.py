"""AWS KMS asymmetric keys: `awskms:///ARN-or-alias` and `awskms://ENDPOINT/KEY`.

boto3 is imported only when such a key is opened, so it is needed only by those who sign
with AWS (the `aws` extra). KMS signs the digest we send (`MessageType='DIGEST'`); the key
never leaves it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol, Self, cast
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from signer.algorithms import KeyKind, SignatureScheme, key_kind
from signer.errors import BackendUnavailableError, ConfigError
from signer.keys.base import RemoteKey
from signer.keys.settings import kms_timeout
from signer.redact import redact_text

__all__ = ["AwsKmsKey", "parse_uri"]

URI_PREFIX: Final = "awskms://"
_CONNECT_TIMEOUT: Final = 3.0
_TOTAL_ATTEMPTS: Final = 3  # botocore's standard mode backs off between them

_KEY_SPECS: Final[dict[str, tuple[KeyKind, int | None]]] = {
    "ECC_NIST_P256": (KeyKind.EC_P256, None),
    "ECC_NIST_P384": (KeyKind.EC_P384, None),
    "RSA_2048": (KeyKind.RSA, 2048),
    "RSA_3072": (KeyKind.RSA, 3072),
    "RSA_4096": (KeyKind.RSA, 4096),
}
_HASH_SUFFIX: Final = {"sha256": "SHA_256", "sha384": "SHA_384", "sha512": "SHA_512"}
_LOCAL_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1"})

#: Error codes that mean "this key or these credentials cannot work as configured".
_NOT_FOUND: Final = frozenset({"NotFoundException", "InvalidArnException"})
_DENIED: Final = frozenset({"AccessDeniedException", "AccessDenied"})
_UNUSABLE: Final = frozenset(
    {"DisabledException", "KMSInvalidStateException", "InvalidKeyUsageException"}
)
_BAD_CREDENTIALS: Final = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "ExpiredTokenException",
        "IncompleteSignature",
    }
)
#: Error codes that mean "KMS is busy or failing": worth failing with exit 3.
_TRANSIENT: Final = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",
        "LimitExceededException",
        "KMSInternalException",
        "DependencyTimeoutException",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
    }
)


class _KmsClient(Protocol):
    """The two KMS calls Sealgate makes (boto3's client is untyped without extra stubs)."""

    def get_public_key(self, *, KeyId: str) -> Mapping[str, Any]: ...  # noqa: N803

    def sign(
        self,
        *,
        KeyId: str,  # noqa: N803
        Message: bytes,  # noqa: N803
        MessageType: str,  # noqa: N803
        SigningAlgorithm: str,  # noqa: N803
    ) -> Mapping[str, Any]: ...


def parse_uri(uri: str) -> tuple[str | None, str]:
    """Split an awskms URI into (endpoint URL or None, key id / ARN / alias)."""
    if not uri.startswith(URI_PREFIX):
        raise ConfigError(f"{uri!r} is not an awskms:// key URI", code="bad-key-uri", field="key")
    endpoint, _, key_id = uri[len(URI_PREFIX) :].partition("/")
    if not key_id or "?" in key_id or "#" in key_id or any(c.isspace() for c in key_id):
        raise ConfigError(
            f"malformed key URI {uri!r}",
            hint="use awskms:///ARN-or-alias/NAME or awskms://HOST:PORT/KEY",
            code="bad-key-uri",
            field="key",
        )
    if not endpoint:
        return None, key_id
    try:
        parts = urlsplit(f"//{endpoint}")
        _ = parts.port  # raises ValueError on a malformed port
        host = parts.hostname
    except ValueError:
        host = None
    if not host or "@" in endpoint:
        raise ConfigError(
            f"malformed endpoint {endpoint!r} in key URI {uri!r}", code="bad-key-uri", field="key"
        )
    scheme = "http" if host in _LOCAL_HOSTS else "https"
    return f"{scheme}://{endpoint}", key_id


def _carries_credentials(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return True  # unparsable: do not show it
    return "@" in parts.netloc or bool(parts.query) or bool(parts.fragment)


def _region_of(key_id: str) -> str | None:
    """A key ARN names its region (arn:PARTITION:kms:REGION:ACCOUNT:key/ID); use it."""
    parts = key_id.split(":")
    if len(parts) >= 6 and parts[0] == "arn" and parts[2] == "kms" and parts[3]:
        return parts[3]
    return None


class AwsKmsKey(RemoteKey):
    """An asymmetric SIGN_VERIFY key in AWS KMS (or a KMS-compatible endpoint)."""

    def __init__(self, uri: str) -> None:
        self.endpoint_url, self.key_id = parse_uri(uri)
        if self.endpoint_url is None:
            configured = os.environ.get("AWS_ENDPOINT_URL_KMS") or os.environ.get(
                "AWS_ENDPOINT_URL"
            )
            self.endpoint_url = configured.strip() if configured and configured.strip() else None
            if self.endpoint_url is not None and _carries_credentials(self.endpoint_url):
                # AWS signs requests with keys from the environment; a URL holding a secret
                # would be logged everywhere it is shown, so it is refused and not echoed.
                raise ConfigError(
                    f"{uri}: AWS_ENDPOINT_URL(_KMS) carries credentials or parameters "
                    "(user info, ?query or #fragment)",
                    hint="give the bare endpoint, e.g. https://kms.eu-west-1.amazonaws.com",
                    code="credentials-in-url",
                )
        self.display_uri = uri
        try:
            import boto3  # optional: imported on use
            from botocore import exceptions as boto_errors
            from botocore.config import Config
        except ImportError:
            raise ConfigError(
                f"{uri}: boto3 is not installed",
                hint="install the `aws` extra: pip install 'sealgate[aws]'",
                code="missing-extra",
                field="key",
            ) from None
        timeout = kms_timeout()
        config = Config(
            connect_timeout=min(_CONNECT_TIMEOUT, timeout),
            read_timeout=timeout,
            retries={"total_max_attempts": _TOTAL_ATTEMPTS, "mode": "standard"},
            user_agent_extra="sealgate",
        )
        try:
            session = boto3.session.Session()
            region = (
                _region_of(self.key_id)
                or session.region_name
                or os.environ.get("AWS_REGION", "").strip()  # the SDKs' newer name
            )
            if not region:
                raise ConfigError(
                    f"{uri}: no AWS region",
                    hint="set AWS_REGION (or AWS_DEFAULT_REGION), or name the key by its ARN",
                    code="no-region",
                    field="key",
                )
            self._client = cast(
                _KmsClient,
                session.client(
                    "kms", region_name=region, endpoint_url=self.endpoint_url, config=config
                ),
            )
        except boto_errors.BotoCoreError as exc:
            raise ConfigError(
                f"{uri}: cannot set up the AWS KMS client: {redact_text(str(exc))}",
                code="kms-setup-failed",
                field="key",
            ) from None
        self._where = self.endpoint_url or f"AWS KMS in {region}"
        self._open()

    def _open(self) -> None:
        """Read the public key and key spec once; later calls use the resolved key ARN, so an
        alias moved to another key mid-run cannot change which key signs."""
        reply = self._call("read", lambda: self._client.get_public_key(KeyId=self.key_id))
        usage = reply.get("KeyUsage")
        if usage not in (None, "SIGN_VERIFY"):
            raise ConfigError(
                f"AWS KMS key {self.key_id!r} has KeyUsage {usage}, not SIGN_VERIFY",
                hint="create an asymmetric signing key (aws kms create-key --key-usage SIGN_VERIFY)",
                code="key-unusable",
                field="key",
            )
        spec = reply.get("KeySpec") or reply.get("CustomerMasterKeySpec")
        if spec not in _KEY_SPECS:
            raise ConfigError(
                f"AWS KMS key {self.key_id!r} has KeySpec {spec}, which Sealgate does not sign with",
                hint=f"use one of {', '.join(_KEY_SPECS)}",
                code="unsupported-key",
                field="key",
            )
        self.key_spec: str = spec
        self.kind, rsa_bits = _KEY_SPECS[spec]
        self.signing_algorithms: tuple[str, ...] = tuple(reply.get("SigningAlgorithms") or ())
        resolved = reply.get("KeyId")
        self.key_arn: str = resolved if isinstance(resolved, str) and resolved else self.key_id
        try:
            public_key = serialization.load_der_public_key(bytes(reply["PublicKey"]))
            matches = key_kind(public_key) is self.kind and (
                rsa_bits is None
                or (isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size == rsa_bits)
            )
        except (KeyError, TypeError, ValueError, ConfigError):
            matches = False
        if not matches:
            raise BackendUnavailableError(
                f"{self._where} returned a public key for {self.key_id!r} that is not {spec}",
                code="kms-bad-response",
                field="key",
            )
        self._public_key = public_key

    def __enter__(self) -> Self:
        return self

    def public_key(self) -> PublicKeyTypes:
        return self._public_key

    def signing_algorithm(self, scheme: SignatureScheme) -> str:
        """The KMS SigningAlgorithm name for a scheme."""
        suffix = _HASH_SUFFIX[scheme.hash_name]
        if scheme.kind is not self.kind:
            raise ConfigError(
                f"{self.display_uri} is a {self.key_spec} key and cannot sign with "
                f"{scheme.describe()}",
                code="unsupported-scheme",
            )
        if self.kind is KeyKind.RSA:
            padding = scheme.rsa_padding or "pkcs1v15"
            return f"RSASSA_PSS_{suffix}" if padding == "pss" else f"RSASSA_PKCS1_V1_5_{suffix}"
        return f"ECDSA_{suffix}"

    def sign_digest(self, digest: bytes, scheme: SignatureScheme) -> bytes:
        if not scheme.signs_digest:
            raise ConfigError(
                f"{self.display_uri}: AWS KMS cannot sign with {scheme.describe()}",
                code="unsupported-scheme",
            )
        algorithm = self.signing_algorithm(scheme)
        if self.signing_algorithms and algorithm not in self.signing_algorithms:
            raise ConfigError(
                f"AWS KMS key {self.key_id!r} does not support {algorithm}",
                hint=f"it supports {', '.join(self.signing_algorithms)}",
                code="unsupported-scheme",
            )
        if len(digest) != scheme.digest_size:
            raise ConfigError(
                f"{self.display_uri}: a {scheme.hash_name} digest must be "
                f"{scheme.digest_size} bytes",
                code="digest-length",
                field="digest",
            )
        reply = self._call(
            "sign with",
            lambda: self._client.sign(
                KeyId=self.key_arn,
                Message=digest,
                MessageType="DIGEST",
                SigningAlgorithm=algorithm,
            ),
        )
        signature = reply.get("Signature")
        if not isinstance(signature, bytes | bytearray) or not signature:
            raise BackendUnavailableError(
                f"{self._where} returned no signature for {self.key_id!r}",
                code="kms-bad-response",
                field="key",
            )
        # KMS returns ECDSA signatures DER-encoded already, as CMS wants them.
        return bytes(signature)

    def _call(self, action: str, call: Callable[[], Mapping[str, Any]]) -> Mapping[str, Any]:
        """Run one KMS call, turning botocore's exceptions into typed Sealgate errors."""
        from botocore import exceptions as boto_errors

        key = self.key_id
        try:
            reply = call()
        except boto_errors.ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            message = " ".join(str(error.get("Message", "")).split())[:300]
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if code in _DENIED:
                raise ConfigError(
                    f"permission denied for AWS KMS key {key!r}",
                    hint="the caller needs kms:GetPublicKey and kms:Sign on it",
                    code="kms-permission-denied",
                    field="key",
                ) from None
            if code in _NOT_FOUND:
                raise ConfigError(
                    f"AWS KMS key {key!r} not found at {self._where}",
                    hint="check the key id, alias (alias/NAME) or ARN, and the region",
                    code="key-not-found",
                    field="key",
                ) from None
            if code in _UNUSABLE:
                raise ConfigError(
                    f"AWS KMS key {key!r} is not usable to {action}: {code}: {message}",
                    hint="the key is disabled, pending deletion or not a signing key",
                    code="key-unusable",
                    field="key",
                ) from None
            if code in _BAD_CREDENTIALS:
                raise ConfigError(
                    f"AWS rejected the credentials used for key {key!r}: {code}",
                    hint="check AWS_PROFILE / AWS_ACCESS_KEY_ID and the session token",
                    code="kms-bad-credentials",
                    field="key",
                ) from None
            if code in _TRANSIENT or status >= 500:
                raise BackendUnavailableError(
                    f"{self._where} failed to {action} key {key!r} after retries: {code}",
                    code="kms-error",
                    field="key",
                ) from None
            raise ConfigError(
                f"{self._where} refused to {action} key {key!r}: {code}: {message}",
                code="kms-refused",
                field="key",
            ) from None
        except (boto_errors.NoCredentialsError, boto_errors.PartialCredentialsError):
            raise ConfigError(
                f"no usable AWS credentials for key {key!r}",
                hint="set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or use a role",
                code="kms-no-credentials",
                field="key",
            ) from None
        except (boto_errors.ConnectionError, boto_errors.HTTPClientError) as exc:
            raise BackendUnavailableError(
                f"{self._where} unreachable for key {key!r}: {type(exc).__name__} after "
                f"{_TOTAL_ATTEMPTS} attempts",
                hint="check the endpoint and network; SEALGATE_KMS_TIMEOUT sets the timeout",
                code="kms-unreachable",
                field="key",
            ) from None
        except boto_errors.BotoCoreError as exc:
            raise BackendUnavailableError(
                f"{self._where} failed to {action} key {key!r}: {type(exc).__name__}",
                code="kms-error",
                field="key",
            ) from None
        return reply
