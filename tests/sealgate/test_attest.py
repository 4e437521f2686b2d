"""Signed verification summaries: in-toto VSA statements in DSSE envelopes made by a real
SoftHSM2 token, judged by `sealgate attest verify` as a release gate would run it."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from hypothesis import given, settings
from hypothesis import strategies as st

from integrity.attestation import (
    EXTENSION_KEY,
    LEVEL_BUILD_REPRODUCED,
    LEVEL_TREE_VERIFIED,
    STATEMENT_TYPE,
    VSA_PREDICATE_TYPE,
    parse_vsa,
    statement_bytes,
    vsa_statement,
)
from integrity.errors import InputError
from sealgate.attest import write_attestation
from signer.dsse import (
    IN_TOTO_PAYLOAD_TYPE,
    PAE,
    envelope_bytes,
    keyid_for,
    open_envelope,
    sign_envelope,
    verify_envelope,
)
from signer.errors import ConfigError, VerificationError
from signer.keys import open_key
from tests.components.cli import sealgate
from tests.components.hsm import HsmFixture

COMMIT = "3f" * 20
ARTIFACT_DIGEST = hashlib.sha256(b"app-1.2.3.tar.gz").hexdigest()
LABELS = ("ec256", "rsa3072", "ed25519")


def _statement(*, passed: bool = True, check: str = "tree") -> dict[str, Any]:
    return vsa_statement(
        check=check,
        commit=COMMIT,
        resource_uri=f"git+https://git.example.com/app@{COMMIT}",
        subjects=[("dist/app-1.2.3.tar.gz", ARTIFACT_DIGEST)],
        policy_uri="git+https://git.example.com/app@base#.sealgate/policy.yml",
        policy_digest=hashlib.sha256(b"policy").hexdigest(),
        passed=passed,
        levels=[LEVEL_TREE_VERIFIED],
        verified_at=dt.datetime(2025, 3, 1, 12, 30, tzinfo=dt.UTC),
    )


@pytest.fixture(scope="module")
def envelopes(hsm: HsmFixture) -> dict[str, dict[str, Any]]:
    """One PASSED summary signed by each key type, plus a FAILED one signed by ec256."""
    signed: dict[str, dict[str, Any]] = {}
    payload = statement_bytes(_statement())
    for label in LABELS:
        with open_key(hsm.uri(label)) as key:
            signed[label] = sign_envelope(key, payload)
    with open_key(hsm.uri("ec256")) as key:
        signed["failed"] = sign_envelope(key, statement_bytes(_statement(passed=False)))
    return signed


@pytest.fixture(scope="module")
def public_keys(hsm: HsmFixture) -> dict[str, PublicKeyTypes]:
    keys: dict[str, PublicKeyTypes] = {}
    for label in LABELS:
        with open_key(hsm.uri(label)) as key:
            keys[label] = key.public_key()
    return keys


def _write(tmp_path: Path, envelope: dict[str, Any], name: str = "tree.intoto.json") -> Path:
    path = tmp_path / name
    path.write_bytes(envelope_bytes(envelope))
    return path


def _reencode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _flip_decoded(value: str, offset: int) -> str:
    raw = bytearray(base64.b64decode(value))
    raw[offset] ^= 0x01
    return _reencode(bytes(raw))


# --- PAE and the statement --------------------------------------------------------------


def test_pae_matches_the_dsse_spec_test_vector() -> None:
    assert (
        PAE("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_counts_bytes_not_characters() -> None:
    assert PAE("t/é", b"") == "DSSEv1 4 t/é 0 ".encode()


def test_statement_follows_the_in_toto_and_vsa_shapes() -> None:
    statement = _statement()
    assert statement["_type"] == STATEMENT_TYPE
    assert statement["predicateType"] == VSA_PREDICATE_TYPE
    assert statement["subject"] == [
        {"name": "dist/app-1.2.3.tar.gz", "digest": {"sha256": ARTIFACT_DIGEST}}
    ]
    predicate = statement["predicate"]
    assert predicate["timeVerified"] == "2025-03-01T12:30:00Z"
    assert predicate["verificationResult"] == "PASSED"
    assert predicate["verifiedLevels"] == [LEVEL_TREE_VERIFIED]
    assert predicate["slsaVersion"] == "1.0"
    assert predicate["verifier"]["version"]["sealgate"]
    assert predicate[EXTENSION_KEY] == {"check": "tree", "commit": COMMIT}
    data = statement_bytes(statement)
    assert data == json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
    assert parse_vsa(data) == statement


def test_a_failed_check_records_failed_in_place_of_levels() -> None:
    predicate = _statement(passed=False)["predicate"]
    assert predicate["verificationResult"] == "FAILED"
    assert predicate["verifiedLevels"] == ["FAILED"]


def test_statement_refuses_custom_slsa_values_and_bad_input() -> None:
    with pytest.raises(InputError, match="SLSA_"):
        vsa_statement(
            check="rebuild",
            commit=COMMIT,
            resource_uri="git+x@y",
            subjects=[("a", ARTIFACT_DIGEST)],
            policy_uri=None,
            policy_digest=None,
            passed=True,
            levels=["SLSA_BUILD_REPRODUCED"],
        )
    built = vsa_statement(
        check="rebuild",
        commit=COMMIT,
        resource_uri="git+x@y",
        subjects=[("a", ARTIFACT_DIGEST)],
        policy_uri=None,
        policy_digest=None,
        passed=True,
        levels=[LEVEL_BUILD_REPRODUCED, "SLSA_BUILD_LEVEL_1"],
    )
    assert built["predicate"]["policy"] == {"uri": "https://sealgate.dev/policy/builtin/rebuild"}
    with pytest.raises(InputError, match="digest"):
        vsa_statement(
            check="tree",
            commit=COMMIT,
            resource_uri="git+x@y",
            subjects=[("a", "ABC")],
            policy_uri=None,
            policy_digest=None,
            passed=True,
            levels=[LEVEL_TREE_VERIFIED],
        )
    with pytest.raises(InputError, match="check"):
        vsa_statement(
            check="vibes",
            commit=COMMIT,
            resource_uri="git+x@y",
            subjects=[("a", ARTIFACT_DIGEST)],
            policy_uri=None,
            policy_digest=None,
            passed=True,
            levels=[LEVEL_TREE_VERIFIED],
        )


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (("_type",), "_type: missing"),
        (("subject",), "subject: missing"),
        (("predicateType",), "predicateType: missing"),
        (("predicate", "verifier"), "predicate.verifier: missing"),
        (("predicate", "timeVerified"), "predicate.timeVerified: missing"),
        (("predicate", "resourceUri"), "predicate.resourceUri: missing"),
        (("predicate", "policy", "uri"), "predicate.policy.uri: missing"),
        (("predicate", "verificationResult"), "predicate.verificationResult: missing"),
        (("predicate", "verifiedLevels"), "predicate.verifiedLevels: missing"),
    ],
)
def test_parse_vsa_names_the_missing_field(path: tuple[str, ...], message: str) -> None:
    statement = _statement()
    parent = statement
    for name in path[:-1]:
        parent = parent[name]
    del parent[path[-1]]
    with pytest.raises(InputError, match=message.replace(".", r"\.")):
        parse_vsa(statement_bytes(statement))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.update(predicateType="https://slsa.dev/provenance/v1"), "predicateType"),
        (lambda s: s["predicate"].update(verifiedLevels="PASSED"), "verifiedLevels: expected"),
        (lambda s: s["predicate"].update(verificationResult="OK"), "verificationResult"),
        (lambda s: s["predicate"].update(timeVerified="yesterday"), "timeVerified"),
        (lambda s: s["subject"][0]["digest"].update(sha256="xyz"), r"subject\[0\]\.digest"),
        (lambda s: s.update(subject=[]), "subject: empty"),
    ],
)
def test_parse_vsa_rejects_wrong_shapes(mutate: Any, message: str) -> None:
    statement = _statement()
    mutate(statement)
    with pytest.raises(InputError, match=message):
        parse_vsa(statement_bytes(statement))


def test_parse_vsa_rejects_duplicate_fields_and_non_json() -> None:
    data = statement_bytes(_statement())
    duplicated = data[:-1] + b',"_type":"https://in-toto.io/Statement/v0.1"}'
    with pytest.raises(InputError, match="duplicate"):
        parse_vsa(duplicated)
    with pytest.raises(InputError, match="not JSON"):
        parse_vsa(b"\xff{")


# --- signing and verifying through the real token ----------------------------------------


@pytest.mark.parametrize("label", LABELS)
def test_each_key_type_signs_an_envelope_that_verifies(
    envelopes: dict[str, dict[str, Any]], public_keys: dict[str, PublicKeyTypes], label: str
) -> None:
    envelope = envelopes[label]
    assert envelope["payloadType"] == IN_TOTO_PAYLOAD_TYPE
    assert envelope["signatures"][0]["keyid"] == keyid_for(public_keys[label])
    payload_type, payload = verify_envelope(envelope, [public_keys[label]])
    assert payload_type == IN_TOTO_PAYLOAD_TYPE
    assert payload == statement_bytes(_statement())
    # Without a keyid every trusted key is tried, the right one among them.
    anonymous = {**envelope, "signatures": [{"sig": envelope["signatures"][0]["sig"]}]}
    verified = open_envelope(anonymous, list(public_keys.values()))
    assert verified.keyid == keyid_for(public_keys[label])


@pytest.mark.parametrize("label", LABELS)
def test_attest_verify_passes_with_the_key_uri_and_with_the_certificate(
    hsm: HsmFixture, tmp_path: Path, label: str
) -> None:
    out = tmp_path / "attestations" / "tree.intoto.json"
    write_attestation(hsm.uri(label), _statement(), out)
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]

    by_uri = sealgate("attest", "verify", out, "--key", hsm.uri(label), env=hsm.env)
    assert by_uri.returncode == 0, by_uri.stderr
    assert "check   tree" in by_uri.stdout
    assert f"commit  {COMMIT}" in by_uri.stdout
    assert "result  PASSED" in by_uri.stdout
    assert LEVEL_TREE_VERIFIED in by_uri.stdout
    assert f"sha256:{ARTIFACT_DIGEST}" in by_uri.stdout
    assert "pin" not in by_uri.stdout.lower()

    by_cert = sealgate(
        "attest", "verify", out, "--public-key", hsm.cert_pems[label], "--json", env=hsm.env
    )
    assert by_cert.returncode == 0, by_cert.stderr
    report = json.loads(by_cert.stdout)
    assert report["verified"] is True
    assert report["check"] == "tree"
    assert report["commit"] == COMMIT
    assert report["levels"] == [LEVEL_TREE_VERIFIED]
    assert report["subjects"] == [
        {"name": "dist/app-1.2.3.tar.gz", "digest": {"sha256": ARTIFACT_DIGEST}}
    ]


def _payload_changed(e: dict[str, Any]) -> dict[str, Any]:
    return {**e, "payload": _flip_decoded(e["payload"], 40)}


def _signature_changed(e: dict[str, Any]) -> dict[str, Any]:
    entry = e["signatures"][0]
    return {**e, "signatures": [{**entry, "sig": _flip_decoded(entry["sig"], 20)}]}


def _type_swapped(e: dict[str, Any]) -> dict[str, Any]:
    return {**e, "payloadType": "application/json"}


def _no_signatures(e: dict[str, Any]) -> dict[str, Any]:
    return {**e, "signatures": []}


def _payload_not_base64(e: dict[str, Any]) -> dict[str, Any]:
    return {**e, "payload": "!!" + e["payload"]}


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (_payload_changed, "does not verify over payloadType and payload"),
        (_signature_changed, "does not verify over payloadType and payload"),
        (_type_swapped, "payloadType 'application/json' is not the expected"),
        (_no_signatures, "has no signatures"),
        (_payload_not_base64, "payload: is not valid base64"),
    ],
)
def test_a_tampered_envelope_fails_with_its_reason(
    hsm: HsmFixture,
    tmp_path: Path,
    envelopes: dict[str, dict[str, Any]],
    tamper: Any,
    reason: str,
) -> None:
    path = _write(tmp_path, tamper(envelopes["ec256"]))
    result = sealgate("attest", "verify", path, "--public-key", hsm.cert_pems["ec256"])
    assert result.returncode == 1, result.stderr
    assert reason in result.stderr
    assert str(path) in result.stderr


def test_an_envelope_signed_by_another_key_fails(
    hsm: HsmFixture, tmp_path: Path, envelopes: dict[str, dict[str, Any]]
) -> None:
    path = _write(tmp_path, envelopes["rsa3072"])
    result = sealgate("attest", "verify", path, "--key", hsm.uri("ec256"), env=hsm.env)
    assert result.returncode == 1
    assert "no signature by a trusted key" in result.stderr
    # Without the keyid hint the key is tried, and the signature does not verify.
    entry = envelopes["rsa3072"]["signatures"][0]
    path = _write(tmp_path, {**envelopes["rsa3072"], "signatures": [{"sig": entry["sig"]}]})
    result = sealgate("attest", "verify", path, "--key", hsm.uri("ec256"), env=hsm.env)
    assert result.returncode == 1
    assert "does not verify" in result.stderr


def test_a_failed_verdict_blocks_even_when_the_signature_verifies(
    hsm: HsmFixture, tmp_path: Path, envelopes: dict[str, dict[str, Any]]
) -> None:
    path = _write(tmp_path, envelopes["failed"])
    result = sealgate("attest", "verify", path, "--public-key", hsm.cert_pems["ec256"])
    assert result.returncode == 1
    assert f"verificationResult is FAILED (check tree, commit {COMMIT})" in result.stderr
    as_json = sealgate("attest", "verify", path, "--public-key", hsm.cert_pems["ec256"], "--json")
    assert as_json.returncode == 1
    report = json.loads(as_json.stdout)
    assert report["verified"] is False
    assert report["result"] == "FAILED"
    assert "verificationResult is FAILED" in report["reason"]


def test_unreadable_input_is_a_usage_error(hsm: HsmFixture, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(b'{"payloadType": "application/vnd.in-toto+json", "payl')
    cert = hsm.cert_pems["ec256"]
    result = sealgate("attest", "verify", garbage, "--public-key", cert)
    assert result.returncode == 2
    assert "not a JSON DSSE envelope" in result.stderr
    missing = sealgate("attest", "verify", tmp_path / "absent.json", "--public-key", cert)
    assert missing.returncode == 2
    assert "no such envelope file" in missing.stderr
    no_key = sealgate("attest", "verify", garbage, "--public-key", tmp_path / "absent.pem")
    assert no_key.returncode == 2


def test_a_signed_payload_that_is_not_a_vsa_is_refused(hsm: HsmFixture, tmp_path: Path) -> None:
    statement = _statement()
    del statement["predicate"]["verificationResult"]
    with open_key(hsm.uri("ec256")) as key:
        envelope = sign_envelope(key, statement_bytes(statement))
    result = sealgate(
        "attest", "verify", _write(tmp_path, envelope), "--public-key", hsm.cert_pems["ec256"]
    )
    assert result.returncode == 2
    assert "predicate.verificationResult: missing" in result.stderr


def test_write_attestation_with_a_bad_key_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "vsa.json"
    with pytest.raises(ConfigError):
        write_attestation("file:///tmp/key.pem", _statement(), out)
    assert list(tmp_path.iterdir()) == []


# --- corruptions: nothing but the signed content ever verifies ---------------------------


@st.composite
def _corruptions(draw: st.DrawFn, original: bytes) -> bytes:
    """Byte flips, insertions and deletions anywhere in the serialized envelope."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(("replace", "insert", "delete")))
        index = draw(st.integers(0, len(data) - 1))
        if kind == "replace":
            data[index] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            data.insert(index, draw(st.integers(0, 255)))
        else:
            del data[index]
    return bytes(data)


@pytest.mark.parametrize("label", ["ec256", "ed25519"])
def test_random_corruptions_never_verify_to_other_content(
    envelopes: dict[str, dict[str, Any]], public_keys: dict[str, PublicKeyTypes], label: str
) -> None:
    original = envelope_bytes(envelopes[label])
    signed = (IN_TOTO_PAYLOAD_TYPE, statement_bytes(_statement()))
    trusted = list(public_keys.values())

    @settings(max_examples=300, deadline=None)
    @given(corrupted=_corruptions(original))
    def check(corrupted: bytes) -> None:
        try:
            result = verify_envelope(corrupted, trusted)
        except VerificationError:
            return
        # Only an equivalent encoding (whitespace, a dropped keyid hint) may still verify.
        assert result == signed

    check()
