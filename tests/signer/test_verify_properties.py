"""Property tests of the gate's parsers: no corruption of a signature or a TSA answer gets
through, and none makes them raise anything but their own verdict.

The valid inputs are real: a timestamped `.p7s` made by `sealgate sign` through SoftHSM2 and the
local TSA, and a TimeStampResp from that TSA for a query built by Sealgate's own client code.
Hypothesis then flips, truncates, inserts and deletes bytes at random offsets.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signer.errors import VerificationError
from signer.timestamp import TimestampToken, build_request, verify_response
from signer.verify import Verdict, VerifyPolicy, verify_artifact
from tests.components.cli import sealgate
from tests.components.hsm import HsmFixture
from tests.components.tsa import LocalTsa, TsaPki, post_query

#: Corrupted certificates may carry a non-positive serial; cryptography warns that it will refuse
#: to load those one day (the gate already reports them as malformed when it does).
pytestmark = pytest.mark.filterwarnings(
    "ignore:Parsed a serial number:cryptography.utils.CryptographyDeprecationWarning"
)

SETTINGS = settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

Kind = Literal["flip", "truncate", "insert", "delete"]


@st.composite
def corruptions(draw: st.DrawFn, original: bytes) -> bytes:
    """One to three byte flips, truncations, insertions or deletions at random offsets."""
    data = bytearray(original)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        kind: Kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        if not data:
            kind = "insert"
        if kind == "flip":
            offset = draw(st.integers(min_value=0, max_value=len(data) - 1))
            data[offset] ^= draw(st.integers(min_value=1, max_value=255))
        elif kind == "truncate":
            del data[draw(st.integers(min_value=0, max_value=len(data) - 1)) :]
        elif kind == "insert":
            offset = draw(st.integers(min_value=0, max_value=len(data)))
            data[offset:offset] = draw(st.binary(min_size=1, max_size=8))
        else:
            offset = draw(st.integers(min_value=0, max_value=len(data) - 1))
            del data[offset : offset + draw(st.integers(min_value=1, max_value=8))]
    return bytes(data)


def changed_only_within(original: bytes, corrupted: bytes, span: tuple[int, int]) -> bool:
    """Whether `corrupted` differs from `original` only by bytes replaced inside `span`."""
    return len(corrupted) == len(original) and all(
        span[0] <= offset < span[1]
        for offset, (a, b) in enumerate(zip(original, corrupted, strict=True))
        if a != b
    )


# --------------------------------------------------------------------------------------------
# A timestamped .p7s


@dataclass(frozen=True)
class SignedRelease:
    artifact: Path
    p7s: Path
    der: bytes = field(repr=False)
    policy: VerifyPolicy = field(repr=False)
    verdict: Verdict = field(repr=False)
    #: The copy of the TSA root that the token carries (OpenSSL's `-chain`). The gate validates
    #: the TSA's path against --tsa-roots, never against this copy, so no byte of it counts:
    #: the one region where a changed .p7s still verifies. Refusing certificates a signature
    #: carries but does not need would close it, at the price of tokens from public TSAs that
    #: carry cross-certificates; that is a policy choice, not made here.
    root_copy: tuple[int, int]


@pytest.fixture(scope="module")
def release(
    hsm: HsmFixture, tsa: LocalTsa, tsa_pki: TsaPki, tmp_path_factory: pytest.TempPathFactory
) -> SignedRelease:
    directory = tmp_path_factory.mktemp("corrupted-release")
    artifact = directory / "app-1.0.tar.gz"
    artifact.write_bytes(hashlib.shake_256(b"release").digest(20_000))
    signed = sealgate(
        "sign",
        *("--key", hsm.uri("ec256"), "--cert", hsm.cert_pems["ec256"]),
        *("--chain", hsm.chain_pem, "--tsa", tsa.url, "--tsa-roots", tsa_pki.root_pem),
        artifact,
        env=hsm.env,
    )
    assert signed.returncode == 0, signed.stderr
    p7s = directory / "app-1.0.tar.gz.p7s"
    der = p7s.read_bytes()
    # --require-timestamp: stripping a token is always possible (it is unsigned), so only
    # then does every corruption of the token have to fail the gate
    policy = VerifyPolicy(
        trust_roots=[hsm.ca.root], tsa_roots=[tsa_pki.root], require_timestamp=True
    )
    verdict = verify_artifact(artifact, policy)
    root_der = tsa_pki.root.public_bytes(serialization.Encoding.DER)
    assert der.count(root_der) == 1
    start = der.index(root_der)
    return SignedRelease(artifact, p7s, der, policy, verdict, (start, start + len(root_der)))


#: Codes that say only "something failed": every refusal of a corrupted signature has its own.
GENERIC_CODES = (None, "error", "verification-failed", "bad-input")


def test_the_uncorrupted_release_verifies(release: SignedRelease) -> None:
    assert release.verdict.verified, release.verdict.reason
    assert release.verdict.timestamp is not None


@SETTINGS
@given(data=st.data())
def test_a_corrupted_signature_never_verifies_and_never_raises(
    release: SignedRelease, data: st.DataObject
) -> None:
    corrupted = data.draw(corruptions(release.der))
    if corrupted == release.der:
        return  # two edits cancelled out
    release.p7s.write_bytes(corrupted)
    try:
        verdict = verify_artifact(release.artifact, release.policy)  # must not raise
    finally:
        release.p7s.write_bytes(release.der)
    assert isinstance(verdict, Verdict)
    if verdict.verified and changed_only_within(release.der, corrupted, release.root_copy):
        # Bytes of the unused root copy: what is proven has not changed.
        assert release.verdict.timestamp is not None and verdict.timestamp is not None
        assert verdict.timestamp.gen_time == release.verdict.timestamp.gen_time
        assert verdict.signer == release.verdict.signer
        assert verdict.digest == release.verdict.digest
        return
    assert verdict.verified is False
    assert isinstance(verdict.reason, str) and verdict.reason
    assert verdict.code not in GENERIC_CODES, (verdict.code, verdict.reason)


def test_every_single_bit_flip_is_refused(release: SignedRelease) -> None:
    """Deterministic companion of the property: one bit flipped at every offset in turn
    (the bit varies with the offset), each judged without an exception."""
    verified: list[int] = []
    for offset in range(len(release.der)):
        corrupted = bytearray(release.der)
        corrupted[offset] ^= 1 << (offset % 8)
        release.p7s.write_bytes(bytes(corrupted))
        try:
            verdict = verify_artifact(release.artifact, release.policy)
        finally:
            release.p7s.write_bytes(release.der)
        if verdict.verified:
            verified.append(offset)
        else:
            assert verdict.reason
            assert verdict.code not in GENERIC_CODES, (offset, verdict.code, verdict.reason)
    start, end = release.root_copy
    assert [offset for offset in verified if not start <= offset < end] == []


# --------------------------------------------------------------------------------------------
# A TSA's TimeStampResp


@dataclass(frozen=True)
class TsaAnswer:
    """A granted answer of the good TSA to a query made by `signer.timestamp.build_request`."""

    response: bytes = field(repr=False)
    signed_value: bytes
    nonce: int
    roots: tuple[x509.Certificate, ...]
    window: tuple[dt.datetime, dt.datetime]

    def verify(self, response: bytes) -> TimestampToken:
        return verify_response(
            response,
            signed_value=self.signed_value,
            nonce=self.nonce,
            roots=self.roots,
            window=self.window,
            where="response",
        )


@pytest.fixture(scope="module")
def answer(tsa: LocalTsa, tsa_pki: TsaPki) -> TsaAnswer:
    signed_value = hashlib.sha512(b"a signature value to be timestamped").digest()
    nonce = 0x5EA1_6A7E_0000_0001
    started = dt.datetime.now(dt.UTC)
    reply = post_query(
        tsa.url, build_request(hashlib.sha256(signed_value).digest(), "sha256", nonce)
    )
    assert reply.status_code == 200, reply.text
    window = (started, dt.datetime.now(dt.UTC))
    return TsaAnswer(reply.content, signed_value, nonce, (tsa_pki.root,), window)


@pytest.fixture(scope="module")
def granted(answer: TsaAnswer) -> TimestampToken:
    return answer.verify(answer.response)


def test_the_uncorrupted_response_verifies(answer: TsaAnswer, granted: TimestampToken) -> None:
    assert granted.hash_name == "sha256"
    assert granted.tsa_subject == "CN=Sealgate Test TSA (good),O=Sealgate Tests"


@SETTINGS
@given(data=st.data())
def test_a_corrupted_response_raises_only_verification_error(
    answer: TsaAnswer, granted: TimestampToken, data: st.DataObject
) -> None:
    try:
        token = answer.verify(data.draw(corruptions(answer.response)))
    except VerificationError as exc:
        assert exc.message.startswith("response: ")
        return
    # Some bytes are not covered by the TSA's signature and do not change what the token
    # proves (status granted -> grantedWithMods, the unused root copy): it must still prove
    # exactly what the uncorrupted answer proved.
    assert (token.gen_time, token.serial, token.hash_name, token.tsa_subject) == (
        granted.gen_time,
        granted.serial,
        granted.hash_name,
        granted.tsa_subject,
    )
