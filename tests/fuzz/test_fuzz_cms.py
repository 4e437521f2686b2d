"""Fuzz the CMS parser and the RFC 3161 response check from a real signature and token."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given
from hypothesis import strategies as st

from signer.algorithms import scheme_for
from signer.cms import CadesBesBuilder, add_unsigned_attribute, to_asn1, utc_now
from signer.cmsverify import parse_signed_data, signed_attributes, signer_certificate
from signer.errors import SignerError
from signer.timestamp import token_attribute, verify_response, verify_token
from tests.components.tsa import LocalTsa, TsaPki, make_query, post_query
from tests.fuzz.common import FUZZ, hostile, only_typed


@dataclass(frozen=True)
class Seeds:
    p7s: bytes  # CAdES-T: signed attributes, the signer certificate, a timestamp token
    signature: bytes  # the signature value the token covers
    response: bytes  # the TSA's whole TimeStampResp
    token: bytes
    nonce: int
    roots: tuple[x509.Certificate, ...]


def _signer() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fuzz signer")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


@pytest.fixture(scope="module")
def seeds(tsa_pki: TsaPki) -> Iterator[Seeds]:
    key, cert = _signer()
    scheme = scheme_for(key.public_key())
    builder = CadesBesBuilder(scheme, to_asn1(cert), [], utc_now())
    attributes = builder.signed_attributes(hashlib.sha256(b"the artifact").digest())
    signature = key.sign(attributes, ec.ECDSA(hashes.SHA256()))
    nonce = secrets.randbits(63)
    with LocalTsa(tsa_pki, "good") as tsa:
        response = post_query(tsa.url, make_query(signature, nonce=nonce)).content
    roots = (x509.load_pem_x509_certificate(tsa_pki.root_pem.read_bytes()),)
    now = dt.datetime.now(dt.UTC)
    token = verify_response(
        response, signed_value=signature, nonce=nonce, roots=roots,
        window=(now - dt.timedelta(hours=1), now + dt.timedelta(hours=1)), where="seed",
    )  # fmt: skip
    p7s = add_unsigned_attribute(builder.signed_data(attributes, signature), token_attribute(token))
    yield Seeds(p7s, signature, response, token.der, nonce, roots)


def _cms(der: bytes) -> None:
    message = parse_signed_data(der, "fuzz.p7s")
    signer_certificate(message, "fuzz.p7s")
    signed_attributes(message, "fuzz.p7s")


def test_the_seeds_are_valid(seeds: Seeds) -> None:
    """Control: the unmutated seeds pass every step (so the fuzzers start from real objects)."""
    _cms(seeds.p7s)
    message = parse_signed_data(seeds.p7s, "seed")
    assert message.timestamp_tokens and message.certificates
    assert set(signed_attributes(message, "seed")) >= {"message_digest", "signing_time"}


@FUZZ
@given(data=st.data())
def test_cms_parser_raises_only_typed_errors(seeds: Seeds, data: st.DataObject) -> None:
    der = data.draw(hostile(seeds.p7s, others=[seeds.token, seeds.response]))
    only_typed(lambda: _cms(der), (SignerError,))


@FUZZ
@given(data=st.data())
def test_cms_parser_refusals_carry_a_specific_code(seeds: Seeds, data: st.DataObject) -> None:
    """The audit log keys on codes: no hostile signature is refused with a generic one."""
    der = data.draw(hostile(seeds.p7s, others=[seeds.token, seeds.response]))
    try:
        _cms(der)
    except SignerError as exc:
        parse_codes = {"malformed-signature", "unsupported-signature", "signer-certificate-missing"}
        assert exc.code in parse_codes, (exc.code, exc.message)


def _window() -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.UTC)
    return now - dt.timedelta(days=1), now + dt.timedelta(days=1)


@FUZZ
@given(data=st.data())
def test_tsa_response_check_raises_only_typed_errors(seeds: Seeds, data: st.DataObject) -> None:
    response = data.draw(hostile(seeds.response, others=[seeds.token, seeds.p7s]))
    only_typed(
        lambda: verify_response(
            response,
            signed_value=seeds.signature,
            nonce=seeds.nonce,
            roots=seeds.roots,
            window=_window(),
            where="fuzz TSA",
        ),
        (SignerError,),
    )


@FUZZ
@given(data=st.data())
def test_tsa_token_check_raises_only_typed_errors(seeds: Seeds, data: st.DataObject) -> None:
    token = data.draw(hostile(seeds.token, others=[seeds.response]))
    only_typed(
        lambda: verify_token(
            token, signed_value=seeds.signature, roots=seeds.roots, where="fuzz token"
        ),
        (SignerError,),
    )
