"""`awskms://` keys against moto's KMS server: REQUEST FLOW ONLY.

There is no real local KMS. moto speaks the API, but it is not KMS: for
`MessageType=DIGEST` it hashes the digest a second time (it signs the 32/48/64 digest
bytes as if they were the message), and it signs RSA-PSS with the maximum salt length
instead of the digest length. So its signatures are NOT what real KMS returns, and the
checks below verify them the way moto makes them (the digest treated as the message),
to prove the digest we sent is what got signed. Error mapping that moto cannot produce
(AccessDenied, disabled keys, throttling) is driven through botocore's Stubber.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from signer.algorithms import (
    KeyKind,
    SignatureScheme,
    scheme_for,
    verify_digest_signature,
)
from signer.errors import BackendUnavailableError, ConfigError
from signer.keys import open_key
from signer.keys.awskms import AwsKmsKey, parse_uri
from tests.components.moto_server import CREDENTIALS, REGION, MotoServer, moto_server
from tests.components.openbao import free_port

_AWS_VARS = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_KMS",
    "SEALGATE_KMS_TIMEOUT",
)


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    with moto_server() as server:
        yield server


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Dummy credentials only; no profile, config file or instance metadata can leak in."""
    for name in _AWS_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def kms(moto: MotoServer, aws_env: None) -> Any:
    """A boto3 KMS client on moto, to create keys the way an administrator would."""
    return boto3.client("kms", endpoint_url=moto.endpoint_url, region_name=REGION)


def _create(kms: Any, key_spec: str, usage: str = "SIGN_VERIFY") -> str:
    key_id: str = kms.create_key(KeySpec=key_spec, KeyUsage=usage)["KeyMetadata"]["KeyId"]
    return key_id


def _der(public: PublicKeyTypes) -> bytes:
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _record_sign_params(key: AwsKmsKey) -> list[dict[str, Any]]:
    """Capture the parameters of every Sign call the key makes (botocore event hook)."""
    seen: list[dict[str, Any]] = []

    def hook(params: dict[str, Any], **_: Any) -> None:
        seen.append(dict(params))

    key._client.meta.events.register("provide-client-params.kms.Sign", hook)  # type: ignore[attr-defined]
    return seen


@pytest.mark.parametrize(
    ("key_spec", "key_class", "size"),
    [
        ("ECC_NIST_P256", ec.EllipticCurvePublicKey, 256),
        ("ECC_NIST_P384", ec.EllipticCurvePublicKey, 384),
        ("RSA_3072", rsa.RSAPublicKey, 3072),
    ],
)
def test_public_key_type_by_id_and_alias(
    moto: MotoServer, kms: Any, key_spec: str, key_class: type, size: int
) -> None:
    key_id = _create(kms, key_spec)
    alias = f"alias/release-{key_id[:8]}"
    kms.create_alias(AliasName=alias, TargetKeyId=key_id)
    expected = kms.get_public_key(KeyId=key_id)["PublicKey"]
    for uri in (f"awskms://{moto.netloc}/{key_id}", f"awskms://{moto.netloc}/{alias}"):
        with AwsKmsKey(uri) as key:
            public = key.public_key()
            assert isinstance(public, key_class)
            assert public.key_size == size  # type: ignore[union-attr]
            assert _der(public) == expected
            assert key.key_spec == key_spec
            assert key.display_uri == uri


def test_endpoint_from_aws_endpoint_url(
    moto: MotoServer, kms: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`awskms:///alias/NAME` takes the endpoint from AWS_ENDPOINT_URL, like the SDKs."""
    key_id = _create(kms, "ECC_NIST_P256")
    kms.create_alias(AliasName="alias/by-env", TargetKeyId=key_id)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.endpoint_url)
    with open_key("awskms:///alias/by-env") as key:
        assert isinstance(key, AwsKmsKey)
        assert key.endpoint_url == moto.endpoint_url
        assert _der(key.public_key()) == kms.get_public_key(KeyId=key_id)["PublicKey"]


@pytest.mark.parametrize(
    ("key_spec", "hash_name", "algorithm"),
    [("ECC_NIST_P256", "sha256", "ECDSA_SHA_256"), ("ECC_NIST_P384", "sha384", "ECDSA_SHA_384")],
)
def test_ecdsa_sign_digest_request_flow(
    moto: MotoServer, kms: Any, key_spec: str, hash_name: str, algorithm: str
) -> None:
    """REQUEST FLOW ONLY. We send MessageType=DIGEST with the digest; moto then hashes that
    digest again, so its signature verifies with the digest *as the message*
    (`ec.ECDSA(SHA-x)` over the digest bytes), not as a prehashed digest the way a real
    KMS signature would."""
    key_id = _create(kms, key_spec)
    with AwsKmsKey(f"awskms://{moto.netloc}/{key_id}") as key:
        sent = _record_sign_params(key)
        public = key.public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey)
        scheme = scheme_for(public)
        assert scheme.hash_name == hash_name
        digest = hashlib.new(hash_name, b"signed attributes").digest()
        signature = key.sign_digest(digest, scheme)

    assert len(sent) == 1
    assert sent[0]["MessageType"] == "DIGEST"
    assert sent[0]["Message"] == digest
    assert sent[0]["SigningAlgorithm"] == algorithm
    assert key_id in sent[0]["KeyId"]
    assert signature[:1] == b"\x30"  # DER-encoded ECDSA, as CMS wants it
    # moto's behaviour: the digest was signed as a message (hashed once more).
    public.verify(signature, digest, ec.ECDSA(scheme.hash_algorithm))
    # ...which is why it is not a valid signature over the digest, as real KMS's would be.
    with pytest.raises(InvalidSignature):
        verify_digest_signature(public, signature, digest, scheme)


@pytest.mark.parametrize("hash_name", ["sha256", "sha384", "sha512"])
@pytest.mark.parametrize("rsa_padding", ["pkcs1v15", "pss"])
def test_rsa_sign_digest_request_flow(
    moto: MotoServer, kms: Any, hash_name: Any, rsa_padding: Any
) -> None:
    """REQUEST FLOW ONLY. moto hashes the DIGEST message again and, for PSS, uses the
    maximum salt length (real KMS uses salt = digest length), so the check below treats the
    digest as the message and lets cryptography detect the salt length."""
    key_id = _create(kms, "RSA_3072")
    with AwsKmsKey(f"awskms://{moto.netloc}/{key_id}") as key:
        sent = _record_sign_params(key)
        public = key.public_key()
        assert isinstance(public, rsa.RSAPublicKey)
        scheme = scheme_for(public, rsa_digest=hash_name, rsa_padding=rsa_padding)
        digest = hashlib.new(hash_name, b"signed attributes").digest()
        signature = key.sign_digest(digest, scheme)

    suffix = {"sha256": "SHA_256", "sha384": "SHA_384", "sha512": "SHA_512"}[hash_name]
    expected = f"RSASSA_PSS_{suffix}" if rsa_padding == "pss" else f"RSASSA_PKCS1_V1_5_{suffix}"
    assert sent[0]["SigningAlgorithm"] == expected
    assert sent[0]["MessageType"] == "DIGEST"
    assert sent[0]["Message"] == digest
    assert len(signature) == 3072 // 8
    algorithm = scheme.hash_algorithm
    pad: padding.AsymmetricPadding = (
        padding.PSS(mgf=padding.MGF1(algorithm), salt_length=padding.PSS.AUTO)
        if rsa_padding == "pss"
        else padding.PKCS1v15()
    )
    public.verify(signature, digest, pad, algorithm)  # moto: digest signed as a message


def test_sign_many_signs_each_payload(moto: MotoServer, kms: Any) -> None:
    key_id = _create(kms, "ECC_NIST_P256")
    payloads = [f"p{i}".encode() for i in range(5)]
    with AwsKmsKey(f"awskms://{moto.netloc}/{key_id}") as key:
        sent = _record_sign_params(key)
        scheme = scheme_for(key.public_key())
        signatures = key.sign_many(payloads, scheme)
    assert [p["Message"] for p in sent] == [hashlib.sha256(p).digest() for p in payloads]
    assert len(signatures) == 5


# -- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key_ref",
    [
        "0b2c1f53-0000-4000-8000-000000000000",
        "alias/does-not-exist",
        "arn:aws:kms:us-east-1:123456789012:key/0b2c1f53-0000-4000-8000-000000000000",
    ],
)
def test_unknown_key_is_a_config_error(moto: MotoServer, aws_env: None, key_ref: str) -> None:
    with pytest.raises(ConfigError) as caught:
        AwsKmsKey(f"awskms://{moto.netloc}/{key_ref}")
    assert f"AWS KMS key {key_ref!r} not found" in caught.value.message
    assert caught.value.exit_code == 2
    assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in caught.value.diagnostics()


def test_unreachable_endpoint_is_backend_unavailable(aws_env: None) -> None:
    port = free_port()  # nothing listens there
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError) as caught:
        AwsKmsKey(f"awskms://127.0.0.1:{port}/alias/anything")
    assert time.monotonic() - started < 15
    assert caught.value.exit_code == 3
    assert f"http://127.0.0.1:{port}" in caught.value.message
    assert "unreachable" in caught.value.message


@pytest.mark.parametrize(
    ("key_spec", "usage"),
    [
        ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT"),
        ("ECC_SECG_P256K1", "SIGN_VERIFY"),
        ("ECC_NIST_P521", "SIGN_VERIFY"),
        ("RSA_2048", "ENCRYPT_DECRYPT"),
    ],
)
def test_unsupported_keys_are_refused(
    moto: MotoServer, kms: Any, key_spec: str, usage: str
) -> None:
    key_id = _create(kms, key_spec, usage)
    with pytest.raises(ConfigError) as caught:
        AwsKmsKey(f"awskms://{moto.netloc}/{key_id}")
    assert key_id in caught.value.message
    assert (key_spec in caught.value.message) or (usage in caught.value.message)


@pytest.mark.parametrize(
    ("code", "status", "error", "fragment"),
    [
        ("AccessDeniedException", 400, ConfigError, "permission denied for AWS KMS key"),
        ("DisabledException", 400, ConfigError, "DisabledException"),
        ("KMSInvalidStateException", 400, ConfigError, "KMSInvalidStateException"),
        ("NotFoundException", 400, ConfigError, "not found"),
        ("InvalidKeyUsageException", 400, ConfigError, "InvalidKeyUsageException"),
        ("UnrecognizedClientException", 400, ConfigError, "credentials"),
        ("ThrottlingException", 400, BackendUnavailableError, "ThrottlingException"),
        ("KMSInternalException", 500, BackendUnavailableError, "KMSInternalException"),
    ],
)
def test_sign_errors_are_typed(
    moto: MotoServer,
    kms: Any,
    code: str,
    status: int,
    error: type[Exception],
    fragment: str,
) -> None:
    """Errors moto does not produce (it even signs with a disabled key) are stubbed."""
    key_id = _create(kms, "ECC_NIST_P256")
    with AwsKmsKey(f"awskms://{moto.netloc}/{key_id}") as key:
        scheme = scheme_for(key.public_key())
        with Stubber(key._client) as stub:  # type: ignore[arg-type]
            stub.add_client_error("sign", service_error_code=code, http_status_code=status)
            with pytest.raises(error) as caught:
                key.sign_digest(hashlib.sha256(b"x").digest(), scheme)
    assert fragment in str(caught.value)
    assert key_id in str(caught.value)


def test_scheme_checks(moto: MotoServer, kms: Any) -> None:
    key_id = _create(kms, "ECC_NIST_P256")
    with AwsKmsKey(f"awskms://{moto.netloc}/{key_id}") as key:
        with pytest.raises(ConfigError, match="does not support ECDSA_SHA_384"):
            key.sign_digest(
                hashlib.sha384(b"x").digest(), SignatureScheme(KeyKind.EC_P256, "sha384")
            )
        with pytest.raises(ConfigError, match="cannot sign with"):
            key.sign_digest(
                hashlib.sha256(b"x").digest(), SignatureScheme(KeyKind.RSA, "sha256", "pss")
            )
        with pytest.raises(ConfigError):
            key.sign(b"x", SignatureScheme(KeyKind.ED25519, "sha512"))
        with pytest.raises(ConfigError, match="32 bytes"):
            key.sign_digest(b"short", SignatureScheme(KeyKind.EC_P256, "sha256"))


def test_missing_boto3_names_the_extra(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # makes `import boto3` fail
    with pytest.raises(ConfigError) as caught:
        AwsKmsKey("awskms:///alias/anything")
    assert "pip install 'sealgate[aws]'" in caught.value.diagnostics()


def test_missing_region_is_a_config_error(
    moto: MotoServer, aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    with pytest.raises(ConfigError, match="no AWS region"):
        AwsKmsKey(f"awskms://{moto.netloc}/alias/anything")


def test_missing_credentials_is_a_config_error(
    moto: MotoServer, aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    with pytest.raises(ConfigError, match="no usable AWS credentials"):
        AwsKmsKey(f"awskms://{moto.netloc}/alias/anything")


@pytest.mark.parametrize(
    ("uri", "endpoint", "key_id"),
    [
        ("awskms:///alias/release", None, "alias/release"),
        (
            "awskms:///arn:aws:kms:eu-west-1:111122223333:key/abcd",
            None,
            "arn:aws:kms:eu-west-1:111122223333:key/abcd",
        ),
        ("awskms://localhost:4566/k1", "http://localhost:4566", "k1"),
        ("awskms://127.0.0.1:4566/alias/a", "http://127.0.0.1:4566", "alias/a"),
        ("awskms://kms.eu-west-1.amazonaws.com/k1", "https://kms.eu-west-1.amazonaws.com", "k1"),
    ],
)
def test_parse_uri(uri: str, endpoint: str | None, key_id: str) -> None:
    assert parse_uri(uri) == (endpoint, key_id)


@pytest.mark.parametrize(
    "uri", ["awskms://", "awskms:///", "awskms://host:notaport/k", "awskms://u:p@host/k"]
)
def test_malformed_uris(uri: str) -> None:
    with pytest.raises(ConfigError):
        parse_uri(uri)
