"""`sign_digests()`: signing (name, algorithm, digest) with no file access, as the service will.

Every refusal is a typed ConfigError with a stable code and the field it is about, raised
before the key signs anything; the CMS it makes verifies with stock OpenSSL against the real
content, and a timestamp is attached when TSA settings are given.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from signer.algorithms import SignatureScheme
from signer.cmsverify import parse_signed_data
from signer.errors import ConfigError
from signer.keys import RemoteKey, open_key
from signer.sign import DigestToSign, SignOptions, sign_digests
from signer.timestamp import TsaSettings
from tests.components.cli import openssl_cms_verify
from tests.components.hsm import HsmFixture
from tests.components.tsa import LocalTsa, TsaPki, openssl_ts_verify_token


class _CountingKey(RemoteKey):
    """The real HSM key, counting what it is asked to sign (a refusal must come first)."""

    def __init__(self, inner: RemoteKey) -> None:
        self.inner = inner
        self.display_uri = inner.display_uri
        self.signed = 0

    def public_key(self) -> PublicKeyTypes:
        return self.inner.public_key()

    def certificate(self) -> x509.Certificate | None:
        return self.inner.certificate()

    def sign_digest(self, digest: bytes, scheme: SignatureScheme) -> bytes:
        self.signed += 1
        return self.inner.sign_digest(digest, scheme)


@pytest.fixture
def ec_key(hsm: HsmFixture, monkeypatch: pytest.MonkeyPatch) -> Iterator[_CountingKey]:
    for name, value in hsm.token.env.items():
        monkeypatch.setenv(name, value)
    with open_key(hsm.uri("ec256")) as key:
        yield _CountingKey(key)


def _options(hsm: HsmFixture, tsa: TsaSettings | None = None) -> SignOptions:
    chain = x509.load_pem_x509_certificates(hsm.chain_pem.read_bytes())
    return SignOptions(cert=hsm.certs["ec256"], chain=chain, tsa=tsa)


def _content(tmp_path: Path, count: int) -> list[Path]:
    paths = []
    for i in range(count):
        path = tmp_path / f"pkg-{i}.whl"
        path.write_bytes(f"wheel {i}\n".encode() * (i + 1) * 1000)
        paths.append(path)
    return paths


def test_a_batch_of_digests_gives_cms_that_openssl_verifies_against_the_content(
    hsm: HsmFixture, ec_key: _CountingKey, tmp_path: Path
) -> None:
    contents = _content(tmp_path, 3)
    # names are labels only: nothing by these names exists, and nothing is read or written
    items = [
        DigestToSign(f"dist/{p.name}", "sha256", hashlib.sha256(p.read_bytes()).digest())
        for p in contents
    ]
    batch = sign_digests(ec_key, items, _options(hsm))
    assert [item.name for item in batch.items] == [f"dist/{p.name}" for p in contents]
    assert batch.scheme.describe() == "ecdsa-p256-sha256"
    assert ec_key.signed == 3
    assert not (tmp_path / "dist").exists()
    for content, item in zip(contents, batch.items, strict=True):
        assert item.timestamp is None
        p7s = tmp_path / f"{content.name}.p7s"
        p7s.write_bytes(item.cms_der)
        assert openssl_cms_verify(p7s, content, hsm.root_pem).returncode == 0
    # control: each signature is bound to its own content, not to another item's
    swapped = tmp_path / "swapped.p7s"
    swapped.write_bytes(batch.items[0].cms_der)
    assert openssl_cms_verify(swapped, contents[1], hsm.root_pem).returncode != 0


def test_a_timestamp_is_attached_when_tsa_settings_are_given(
    hsm: HsmFixture, ec_key: _CountingKey, tsa: LocalTsa, tsa_pki: TsaPki, tmp_path: Path
) -> None:
    [content] = _content(tmp_path, 1)
    roots = tuple(x509.load_pem_x509_certificates(tsa_pki.root_pem.read_bytes()))
    options = _options(hsm, tsa=TsaSettings(urls=(tsa.url,), roots=roots, retries=0))
    digest = hashlib.sha256(content.read_bytes()).digest()
    [item] = sign_digests(ec_key, [DigestToSign("app", "sha256", digest)], options).items
    assert item.timestamp is not None and item.timestamp.url == tsa.url
    p7s = tmp_path / "app.p7s"
    p7s.write_bytes(item.cms_der)
    assert openssl_cms_verify(p7s, content, hsm.root_pem).returncode == 0
    message = parse_signed_data(item.cms_der, "app")
    [token] = message.timestamp_tokens
    verified = openssl_ts_verify_token(token, message.signature, tsa_pki.root_pem)
    assert verified.returncode == 0, verified.stderr


_GOOD = hashlib.sha256(b"content").digest()


@pytest.mark.parametrize(
    ("items", "code", "field", "needle"),
    [
        ([], "nothing-to-sign", "digests", "no digests to sign"),
        ([DigestToSign("a", "sha256", _GOOD[:-1])], "digest-length", "digest", "this one is 31"),
        ([DigestToSign("a", "sha256", _GOOD + b"\0")], "digest-length", "digest", "is 33"),
        ([DigestToSign("a", "sha256", b"")], "digest-length", "digest", "this one is 0"),
        ([DigestToSign("a", "md5", _GOOD[:16])], "unknown-digest-algorithm", "digest_algorithm",
         "unknown digest algorithm 'md5'"),
        ([DigestToSign("a", "SHA256", _GOOD)], "unknown-digest-algorithm", "digest_algorithm",
         "'SHA256'"),
        ([DigestToSign("a", "sha384", hashlib.sha384(b"x").digest())],
         "digest-algorithm-mismatch", "digest_algorithm", "ecdsa-p256-sha256"),
        ([DigestToSign("a", "sha256", _GOOD.hex())],  # type: ignore[arg-type]
         "bad-digest", "digest", "not bytes"),
        ([DigestToSign("", "sha256", _GOOD)], "bad-name", "name", "digest 1: the name is empty"),
        ([DigestToSign("  ", "sha256", _GOOD)], "bad-name", "name", "the name is empty"),
        ([DigestToSign("a\nforged line", "sha256", _GOOD)], "bad-name", "name", "control"),
        ([DigestToSign("app\u202egpj.exe", "sha256", _GOOD)], "bad-name", "name", "formatting"),
        ([DigestToSign("a\u2028b", "sha256", _GOOD)], "bad-name", "name", "control"),
        ([DigestToSign("a" * 4097, "sha256", _GOOD)], "bad-name", "name", "more than 4096"),
        ([DigestToSign("a", "sha256", _GOOD), DigestToSign("a", "sha256", _GOOD)],
         "duplicate-name", "name", "digest 2 'a': the name is given twice"),
        # one bad item refuses the whole batch, wherever it is
        ([DigestToSign("a", "sha256", _GOOD), DigestToSign("b", "sha256", _GOOD[:20])],
         "digest-length", "digest", "digest 2 'b'"),
    ],
)  # fmt: skip
def test_a_digest_the_key_cannot_sign_is_refused_before_anything_is_signed(
    hsm: HsmFixture,
    ec_key: _CountingKey,
    items: list[DigestToSign],
    code: str,
    field: str,
    needle: str,
) -> None:
    with pytest.raises(ConfigError) as caught:
        sign_digests(ec_key, items, _options(hsm))
    assert (caught.value.code, caught.value.field, caught.value.exit_code) == (code, field, 2)
    assert needle in caught.value.message
    assert ec_key.signed == 0
