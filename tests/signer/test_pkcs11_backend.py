"""The PKCS#11 backend in-process: URI parsing, one session per batch, and the retry on a lost session."""

from __future__ import annotations

import hashlib

import pytest

from signer.algorithms import KeyKind, SignatureScheme, scheme_for, verify_signature
from signer.errors import ConfigError
from signer.keys import open_key
from signer.keys.pkcs11 import Pkcs11Key, Pkcs11Uri
from tests.components.hsm import HsmFixture


def test_uri_attributes_and_query() -> None:
    uri = Pkcs11Uri.parse(
        "pkcs11:token=My%20Token;object=release;id=%01%ff;slot-id=7"
        "?module-path=/usr/lib/x.so&pin-source=file:/run/pin"
    )
    assert uri.token == "My Token"
    assert uri.object == "release"
    assert uri.id == b"\x01\xff"
    assert uri.slot_id == 7
    assert uri.module_path == "/usr/lib/x.so"
    assert uri.pin_source == "file:/run/pin"
    assert uri.display() == "pkcs11:token=My Token;object=release;id=%01%ff;slot-id=7"


def test_pin_value_never_shows() -> None:
    uri = Pkcs11Uri.parse("pkcs11:token=T;object=k?pin-value=s3cret-1234")
    assert uri.pin_value == "s3cret-1234"
    assert "s3cret" not in uri.display() and "s3cret" not in repr(uri)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pkcs11:token=T;object=k;slot-id=x", "slot-id must be a number"),
        ("pkcs11:token=T;object?module-path=/x.so", "attribute 'object' has no value"),
        ("pkcs11:token=T;object=k?module-paht=/x.so", "unknown query attribute 'module-paht'"),
    ],
)
def test_malformed_uris(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Pkcs11Uri.parse(text)


def test_one_session_for_a_batch(hsm: HsmFixture) -> None:
    with open_key(hsm.uri("ec256")) as key:
        assert isinstance(key, Pkcs11Key)
        scheme = scheme_for(key.public_key())
        payloads = [f"payload {i}".encode() for i in range(50)]
        first = key.sign(payloads[0], scheme)
        session = key._session
        signatures = key.sign_many(payloads, scheme)
        assert key._session is session
    for payload, signature in zip(payloads, [first, *signatures[1:]], strict=True):
        verify_signature(hsm.certs["ec256"].public_key(), signature, payload, scheme)


@pytest.mark.parametrize("label", ["ec256", "rsa2048", "ed25519"])
def test_lost_session_is_reopened_and_the_call_retried_once(hsm: HsmFixture, label: str) -> None:
    with open_key(hsm.uri(label)) as key:
        assert isinstance(key, Pkcs11Key)
        scheme = scheme_for(key.public_key())
        key.sign(b"warm up", scheme)
        lost = key._session
        lost.close()  # the token forgets the handle: the next call gets CKR_SESSION_HANDLE_INVALID
        signature = key.sign(b"after the loss", scheme)
        assert key._session is not lost
    verify_signature(hsm.certs[label].public_key(), signature, b"after the loss", scheme)


def test_rsa_pss_digest_signature(hsm: HsmFixture) -> None:
    scheme = SignatureScheme(KeyKind.RSA, "sha384", "pss")
    with open_key(hsm.uri("rsa3072")) as key:
        digest = hashlib.sha384(b"artifact").digest()
        signature = key.sign_digest(digest, scheme)
    verify_signature(hsm.certs["rsa3072"].public_key(), signature, b"artifact", scheme)


def test_object_by_id(hsm: HsmFixture) -> None:
    with open_key(hsm.uri("ec256")) as key:
        assert isinstance(key, Pkcs11Key)
        key_id = key._call(lambda _s: bytes(key._private[0x102]))  # CKA_ID
        expected = key.public_key_der()
    encoded = "".join(f"%{b:02x}" for b in key_id)
    uri = (
        f"pkcs11:token=sealgate-test;id={encoded}?module-path={hsm.token.module}"
        f"&pin-source=file:{hsm.token.pin_file}"
    )
    with open_key(uri) as by_id, open_key(hsm.uri("ec384")) as other:
        assert by_id.public_key_der() == expected
        assert other.public_key_der() != expected  # a second key of the process shares the login
        cert = by_id.certificate()
        assert cert is not None and cert.serial_number == hsm.certs["ec256"].serial_number
