"""The local RFC 3161 TSA and its broken variants do exactly what they promise.

Checked with asn1crypto, cryptography and stock `openssl ts -verify` only, never with Sealgate
code: the client tests rely on these servers, so the servers must be right on their own.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import requests
from asn1crypto import tsp
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.components.tsa import (
    MODES,
    REPLY_CONTENT_TYPE,
    TSA_POLICY,
    LocalTsa,
    TsaPki,
    TsaSigner,
    make_query,
    make_tsa_pki,
    openssl_ts_verify_token,
    parse_reply,
    post_query,
    reply_token,
    reply_tst_info,
    start_tsa,
)

DATA = b"the bytes of a signature value to be timestamped\n"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TsaPki:
    return make_tsa_pki(tmp_path_factory.mktemp("tsa"))


@pytest.fixture(scope="module")
def good(pki: TsaPki) -> Iterator[LocalTsa]:
    with start_tsa(pki) as tsa:
        yield tsa
    assert tsa.threads() == []


def _stamp(
    tsa: LocalTsa, data: bytes = DATA, nonce: int | None = 7, cert_req: bool = True, **kw: Any
) -> tuple[bytes, Any]:
    """Send one query; return it and the parsed, granted reply."""
    query = make_query(data, nonce=nonce, cert_req=cert_req, **kw)
    response = post_query(tsa.url, query)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == REPLY_CONTENT_TYPE
    reply = parse_reply(response.content)
    assert reply["status"]["status"].native == "granted", reply["status"].native
    assert tsa.errors == []
    return query, reply


def _token_certs(reply: Any) -> list[x509.Certificate]:
    certs = reply["time_stamp_token"]["content"]["certificates"]
    return [x509.load_der_x509_certificate(c.chosen.dump()) for c in certs]


def _signed_attrs(reply: Any) -> dict[str, Any]:
    signer_info = reply["time_stamp_token"]["content"]["signer_infos"][0]
    return {a["type"].native: a["values"][0] for a in signer_info["signed_attrs"]}


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _assert_answers_query(query: bytes, reply: Any) -> None:
    """The token stamps this query: same imprint, same nonce."""
    req = tsp.TimeStampReq.load(query)
    tst = reply_tst_info(reply)
    assert tst["message_imprint"].dump() == req["message_imprint"].dump()
    assert tst["nonce"].native == req["nonce"].native


def _verify(reply: Any, ca: Path, untrusted: Path | None = None) -> tuple[int, str]:
    result = openssl_ts_verify_token(reply_token(reply), DATA, ca, untrusted)
    return result.returncode, result.stdout + result.stderr


# --- the good TSA -----------------------------------------------------------------------------


def test_good_tsa_grants_a_token_openssl_verifies(good: LocalTsa, pki: TsaPki) -> None:
    query, reply = _stamp(good, nonce=0x1234_5678_9ABC_DEF0)
    _assert_answers_query(query, reply)
    tst = reply_tst_info(reply)
    assert tst["message_imprint"]["hashed_message"].native == hashlib.sha256(DATA).digest()
    assert abs(tst["gen_time"].native - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)
    assert tst["policy"].native == TSA_POLICY
    assert tst["tsa"].chosen.native == {
        "organization_name": "Sealgate Tests",
        "common_name": "Sealgate Test TSA (good)",
    }
    # certReq true: the TSA certificate (and its root, from -chain) are in the token.
    certs = [_der(c) for c in _token_certs(reply)]
    assert _der(pki.good.certificate) in certs
    # ESSCertIDv2 with SHA-256 (the default algorithm, so it is omitted from the encoding).
    attrs = _signed_attrs(reply)
    assert "signing_certificate" not in attrs
    ess = attrs["signing_certificate_v2"]["certs"][0]
    assert ess["hash_algorithm"]["algorithm"].native == "sha256"
    assert ess["cert_hash"].native == hashlib.sha256(_der(pki.good.certificate)).digest()
    code, out = _verify(reply, pki.root_pem)
    assert code == 0 and "Verification: OK" in out, out
    code, out = _verify(reply, pki.untrusted_root_pem)
    assert code != 0, out


@pytest.mark.parametrize("hash_name", ["sha384", "sha512"])
def test_good_tsa_accepts_the_configured_digests(good: LocalTsa, hash_name: str) -> None:
    query, reply = _stamp(good, hash_name=hash_name)
    _assert_answers_query(query, reply)


def test_good_tsa_rejects_what_a_real_tsa_rejects(good: LocalTsa) -> None:
    """openssl itself answers a SHA-1 imprint with badAlg and junk with badDataFormat."""
    for query, fail_info in [
        (make_query(DATA, hash_name="sha1", nonce=1), "bad_alg"),
        (b"\x30\x03\x02\x01\x01", "bad_data_format"),
    ]:
        response = post_query(good.url, query)
        assert response.status_code == 200
        reply = parse_reply(response.content)
        assert reply["status"]["status"].native == "rejection"
        assert reply["status"]["fail_info"].native == {fail_info}
        assert reply["time_stamp_token"].native is None
    bad_type = requests.post(good.url, data=make_query(DATA), timeout=10)
    assert bad_type.status_code == 415
    assert requests.get(good.url, timeout=10).status_code == 405
    assert good.errors == []


def test_make_query_fields() -> None:
    req = tsp.TimeStampReq.load(make_query(DATA, nonce=None, cert_req=False))
    assert req["nonce"].native is None
    assert req["cert_req"].native is False
    assert req["message_imprint"]["hash_algorithm"]["algorithm"].native == "sha256"
    req = tsp.TimeStampReq.load(make_query(DATA, "sha512", nonce=99))
    assert (req["nonce"].native, req["cert_req"].native) == (99, True)
    assert req["message_imprint"]["hashed_message"].native == hashlib.sha512(DATA).digest()


def test_ess_v1_names_the_signer_with_a_sha1_ess_cert_id(pki: TsaPki) -> None:
    with start_tsa(pki, "ess_v1") as tsa:
        query, reply = _stamp(tsa)
    _assert_answers_query(query, reply)
    attrs = _signed_attrs(reply)
    assert "signing_certificate_v2" not in attrs
    ess = attrs["signing_certificate"]["certs"][0]
    assert ess["cert_hash"].native == hashlib.sha1(_der(pki.good.certificate)).digest()
    code, out = _verify(reply, pki.root_pem)
    assert code == 0, out


def test_rsa_signer_is_valid(pki: TsaPki) -> None:
    with start_tsa(pki, "rsa") as tsa:
        query, reply = _stamp(tsa)
    _assert_answers_query(query, reply)
    assert isinstance(pki.rsa.certificate.public_key(), rsa.RSAPublicKey)
    assert _der(pki.rsa.certificate) in [_der(c) for c in _token_certs(reply)]
    code, out = _verify(reply, pki.root_pem)
    assert code == 0, out


# --- transport failures -----------------------------------------------------------------------


def test_refuse_has_nothing_listening(pki: TsaPki) -> None:
    with start_tsa(pki, "refuse") as tsa:
        with pytest.raises(requests.ConnectionError):
            post_query(tsa.url, make_query(DATA), timeout=2)
        assert (tsa.request_count, tsa.connections) == (0, 0)


def test_garbage_is_http_200_with_undecodable_bytes(pki: TsaPki) -> None:
    with start_tsa(pki, "garbage") as tsa:
        response = post_query(tsa.url, make_query(DATA))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == REPLY_CONTENT_TYPE
    with pytest.raises(ValueError):
        parse_reply(response.content)


def test_http_error_is_500(pki: TsaPki) -> None:
    with start_tsa(pki, "http_error") as tsa:
        assert post_query(tsa.url, make_query(DATA)).status_code == 500
        assert tsa.request_count == 1


def test_slow_answers_after_the_delay(pki: TsaPki) -> None:
    with start_tsa(pki, "slow", delay=0.4) as tsa:
        with pytest.raises(requests.Timeout):
            post_query(tsa.url, make_query(DATA), timeout=0.1)
        started = time.monotonic()
        query, reply = _stamp(tsa)
        assert time.monotonic() - started >= 0.4
        _assert_answers_query(query, reply)
    assert tsa.request_count == 2


def test_fail_then_ok_answers_503_first(pki: TsaPki) -> None:
    with start_tsa(pki, "fail_then_ok", failures=2) as tsa:
        query = make_query(DATA, nonce=5)
        assert [post_query(tsa.url, query).status_code for _ in range(2)] == [503, 503]
        _, reply = _stamp(tsa, nonce=5)
        _assert_answers_query(query, reply)
        assert tsa.request_count == 3


# --- protocol and trust failures --------------------------------------------------------------


def test_wrong_nonce_stamps_another_nonce(pki: TsaPki) -> None:
    with start_tsa(pki, "wrong_nonce") as tsa:
        query, reply = _stamp(tsa, nonce=1000)
        _, reply_without = _stamp(tsa, nonce=None)
    tst = reply_tst_info(reply)
    assert tst["nonce"].native != 1000
    assert tst["message_imprint"].dump() == tsp.TimeStampReq.load(query)["message_imprint"].dump()
    assert reply_tst_info(reply_without)["nonce"].native is not None
    code, out = _verify(reply, pki.root_pem)  # otherwise a perfectly valid token
    assert code == 0, out


def test_wrong_imprint_stamps_another_digest(pki: TsaPki) -> None:
    with start_tsa(pki, "wrong_imprint") as tsa:
        _, reply = _stamp(tsa, nonce=77)
    tst = reply_tst_info(reply)
    assert tst["nonce"].native == 77
    assert tst["message_imprint"]["hashed_message"].native != hashlib.sha256(DATA).digest()
    code, out = _verify(reply, pki.root_pem)
    assert code != 0 and "message imprint mismatch" in out, out


def _assert_bad_signer(
    pki: TsaPki, reply: Any, query: bytes, signer: TsaSigner, reason: str
) -> None:
    _assert_answers_query(query, reply)
    assert _der(signer.certificate) in [_der(c) for c in _token_certs(reply)]
    code, out = _verify(reply, pki.root_pem)
    assert code != 0 and reason in out, out


def test_untrusted_chains_to_the_impostor_root(pki: TsaPki) -> None:
    with start_tsa(pki, "untrusted") as tsa:
        query, reply = _stamp(tsa)
    _assert_bad_signer(pki, reply, query, pki.untrusted, "Verify error")
    assert pki.untrusted_root.subject == pki.root.subject  # only the key tells them apart
    code, out = _verify(reply, pki.untrusted_root_pem)
    assert code == 0, out


def test_no_eku_signer_lacks_the_eku(pki: TsaPki) -> None:
    with start_tsa(pki, "no_eku") as tsa:
        query, reply = _stamp(tsa)
    with pytest.raises(x509.ExtensionNotFound):
        pki.no_eku.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert "Sealgate Test TSA (no_eku)" in str(reply_tst_info(reply)["tsa"].chosen.native)
    _assert_bad_signer(pki, reply, query, pki.no_eku, "unsuitable certificate purpose")


def test_noncritical_eku_signer_has_a_noncritical_eku(pki: TsaPki) -> None:
    with start_tsa(pki, "noncritical_eku") as tsa:
        query, reply = _stamp(tsa)
    eku = pki.noncritical_eku.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert not eku.critical and list(eku.value) == [ExtendedKeyUsageOID.TIME_STAMPING]
    _assert_bad_signer(pki, reply, query, pki.noncritical_eku, "unsuitable certificate purpose")


def test_expired_signer_expired_before_gen_time(pki: TsaPki) -> None:
    with start_tsa(pki, "expired") as tsa:
        query, reply = _stamp(tsa)
    gen_time = reply_tst_info(reply)["gen_time"].native
    assert pki.expired.certificate.not_valid_after_utc < gen_time
    _assert_bad_signer(pki, reply, query, pki.expired, "certificate has expired")


def test_rejection_and_no_token(pki: TsaPki) -> None:
    with start_tsa(pki, "rejection") as rejecting, start_tsa(pki, "no_token") as tokenless:
        rejected = parse_reply(post_query(rejecting.url, make_query(DATA)).content)
        empty = parse_reply(post_query(tokenless.url, make_query(DATA)).content)
    assert rejected["status"].native == {
        "status": "rejection",
        "status_string": ["rejected (deliberate)"],
        "fail_info": {"bad_request"},
    }
    assert rejected["time_stamp_token"].native is None
    assert empty["status"]["status"].native == "granted"
    assert empty["time_stamp_token"].native is None


def test_no_cert_token_carries_no_certificate(pki: TsaPki) -> None:
    with start_tsa(pki, "no_cert") as tsa:
        query, reply = _stamp(tsa, cert_req=True)
    _assert_answers_query(query, reply)
    assert _token_certs(reply) == []
    assert tsa.signer is pki.good
    code, out = _verify(reply, pki.root_pem)
    assert code != 0, out
    code, out = _verify(reply, pki.root_pem, untrusted=pki.good.cert)
    assert code == 0, out


# --- concurrency, connections and clean shutdown ----------------------------------------------


def test_concurrent_queries_get_distinct_serials(pki: TsaPki) -> None:
    with start_tsa(pki) as tsa:

        def one(nonce: int) -> tuple[int, int]:
            _, reply = _stamp(tsa, data=DATA + str(nonce).encode(), nonce=nonce)
            tst = reply_tst_info(reply)
            return tst["nonce"].native, tst["serial_number"].native

        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(one, range(1, 51)))
        assert tsa.request_count == 50
    assert [nonce for nonce, _ in results] == list(range(1, 51))
    assert len({serial for _, serial in results}) == 50


def test_a_session_reuses_one_connection(pki: TsaPki) -> None:
    with start_tsa(pki) as tsa:
        with requests.Session() as session:
            for nonce in range(5):
                query = make_query(DATA, nonce=nonce)
                assert post_query(tsa.url, query, session=session).status_code == 200
        assert (tsa.request_count, tsa.connections) == (5, 1)
        for nonce in range(5):
            assert post_query(tsa.url, make_query(DATA, nonce=nonce)).status_code == 200
        assert (tsa.request_count, tsa.connections) == (10, 6)


def test_all_modes_side_by_side_and_nothing_left_running(pki: TsaPki) -> None:
    """Every mode at once on distinct ports; stop() returns promptly even with a keep-alive
    connection still open and a slow answer pending, and joins every thread."""
    session = requests.Session()
    with ExitStack() as stack:
        tsas = [stack.enter_context(start_tsa(pki, mode, delay=30)) for mode in MODES]
        assert len({tsa.url for tsa in tsas}) == len(MODES)
        good = tsas[MODES.index("good")]
        assert post_query(good.url, make_query(DATA), session=session).status_code == 200
        slow = tsas[MODES.index("slow")]
        with pytest.raises(requests.Timeout):
            post_query(slow.url, make_query(DATA), timeout=0.1)
        started = time.monotonic()
    assert time.monotonic() - started < 5
    session.close()
    for tsa in tsas:
        assert tsa.threads() == [], tsa.mode
        assert tsa.errors == [], tsa.mode
    with pytest.raises(requests.ConnectionError):
        post_query(good.url, make_query(DATA), timeout=2)


def _extension_profile(cert: x509.Certificate) -> dict[str, tuple[bool, str]]:
    """Each extension's OID -> (critical, value without key-specific bytes)."""
    profile = {}
    for extension in cert.extensions:
        value = extension.value
        keyed = isinstance(value, x509.SubjectKeyIdentifier | x509.AuthorityKeyIdentifier)
        profile[extension.oid.dotted_string] = (extension.critical, "" if keyed else repr(value))
    return profile


def test_the_demo_tsa_and_the_test_tsa_share_one_certificate_builder(
    pki: TsaPki, tmp_path: Path
) -> None:
    """One profile for a timestamping certificate: the demo's signer and the tests' good one
    carry the same extensions; its TSA answers tokens stock OpenSSL verifies, and stop()
    leaves no thread and no open port behind (what `sealgate demo --serve` relies on)."""
    from sealgate.localtsa import LocalTsa as DemoTsa

    with DemoTsa(tmp_path / "demo-tsa") as demo:
        response = post_query(demo.url, make_query(DATA, nonce=11))
        assert response.status_code == 200, response.text
        reply = parse_reply(response.content)
        assert reply["status"]["status"].native == "granted"
        assert reply_tst_info(reply)["policy"].native == TSA_POLICY
        verified = openssl_ts_verify_token(reply_token(reply), DATA, demo.root_pem)
        assert verified.returncode == 0, verified.stderr
        demo_cert = x509.load_pem_x509_certificate(
            (tmp_path / "demo-tsa" / "tsa-cert.pem").read_bytes()
        )
        url = demo.url
    assert demo.threads() == []
    with pytest.raises(requests.ConnectionError):
        post_query(url, make_query(DATA), timeout=2)
    assert _extension_profile(demo_cert) == _extension_profile(pki.good.certificate)
    key_file = tmp_path / "demo-tsa" / "tsa-key.pem"
    assert key_file.stat().st_mode & 0o077 == 0, "the signing key file is the owner's alone"
