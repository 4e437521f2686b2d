"""Fuzz DSSE envelopes, the VSA parser and the archive diff from valid objects made here."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from hypothesis import given
from hypothesis import strategies as st

from integrity.archive_diff import explain
from integrity.attestation import parse_vsa, statement_bytes, vsa_statement
from integrity.errors import IntegrityError
from signer.dsse import IN_TOTO_PAYLOAD_TYPE, PAE, keyid_for, open_envelope, verify_envelope
from signer.errors import SignerError
from tests.fuzz.common import FUZZ, TEXT_TOKENS, hostile, only_typed

JSON_TOKENS = [b'"', b"\\", b"\\u0000", b"\\ud800", b"{", b"}", b"[", b"]", b",", b":",
               b"NaN", b"-Infinity", b"1e999", b"9" * 5000, b"null", b"true", b'"payload": ',
               b'"payloadType": ', b'"signatures": ', b'"keyid": "', b"=", b"-", b"_"]  # fmt: skip


@dataclass(frozen=True)
class Seeds:
    envelope: bytes
    statement: bytes
    public: PublicKeyTypes
    zip_a: bytes
    zip_b: bytes
    tar_a: bytes
    tar_b: bytes


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def seeds() -> Iterator[Seeds]:
    key = ec.generate_private_key(ec.SECP256R1())
    statement = vsa_statement(
        check="tree", commit="ab" * 20, resource_uri="git+https://example/repo@abab",
        subjects=[("dist/app.whl", "cd" * 32)], policy_uri=None, policy_digest=None,
        passed=True, levels=["SEALGATE_TREE_VERIFIED"],
        verified_at=dt.datetime(2026, 1, 2, tzinfo=dt.UTC), verifier_version="1.0",
    )  # fmt: skip
    payload = statement_bytes(statement)
    signature = key.sign(PAE(IN_TOTO_PAYLOAD_TYPE, payload), ec.ECDSA(hashes.SHA256()))
    envelope = {
        "payloadType": IN_TOTO_PAYLOAD_TYPE,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [
            {"keyid": keyid_for(key.public_key()), "sig": base64.b64encode(signature).decode()}
        ],
    }
    members = {"pkg/__init__.py": b"x = 1\n" * 50, "pkg/data.bin": bytes(range(256)) * 4}
    changed = {**members, "pkg/__init__.py": b"x = 2\n" * 50, "pkg/new.txt": b"new\n"}
    yield Seeds(
        json.dumps(envelope).encode(), payload, key.public_key(),
        _zip(members), _zip(changed), _tar(members), _tar(changed),
    )  # fmt: skip


def test_the_seeds_are_valid(seeds: Seeds, tmp_path: Path) -> None:
    verified = open_envelope(seeds.envelope, [seeds.public], expected_type=IN_TOTO_PAYLOAD_TYPE)
    assert parse_vsa(verified.payload)["predicate"]["verificationResult"] == "PASSED"
    for name, a, b in (("a.whl", seeds.zip_a, seeds.zip_b), ("a.tar.gz", seeds.tar_a, seeds.tar_b)):
        (tmp_path / "x").mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(a)
        (tmp_path / "x" / name).write_bytes(b)
        lines = explain(tmp_path / name, tmp_path / "x" / name)
        assert any(line.startswith("added pkg/new.txt") for line in lines), lines


@FUZZ
@given(data=st.data())
def test_dsse_raises_only_typed_errors(seeds: Seeds, data: st.DataObject) -> None:
    envelope = data.draw(hostile(seeds.envelope, tokens=JSON_TOKENS))
    only_typed(lambda: open_envelope(envelope, [seeds.public]), (SignerError,))
    only_typed(
        lambda: verify_envelope(envelope, [seeds.public], expected_type=IN_TOTO_PAYLOAD_TYPE),
        (SignerError,),
    )


#: The codes an envelope refusal may carry; a generic one would tell the audit log nothing.
ENVELOPE_CODES = {
    "malformed-envelope",
    "payload-type-mismatch",
    "unsigned",
    "bad-signature",
    "untrusted-key",
}


@FUZZ
@given(data=st.data())
def test_dsse_refusals_carry_an_envelope_code(seeds: Seeds, data: st.DataObject) -> None:
    envelope = data.draw(hostile(seeds.envelope, tokens=JSON_TOKENS))
    try:
        open_envelope(envelope, [seeds.public], expected_type=IN_TOTO_PAYLOAD_TYPE)
    except SignerError as exc:
        assert exc.code in ENVELOPE_CODES, (exc.code, exc.message)


@FUZZ
@given(data=st.data())
def test_vsa_parser_raises_only_typed_errors(seeds: Seeds, data: st.DataObject) -> None:
    statement = data.draw(hostile(seeds.statement, tokens=JSON_TOKENS))
    only_typed(lambda: parse_vsa(statement), (IntegrityError,))


@FUZZ
@given(data=st.data())
def test_vsa_parser_on_reshaped_json_raises_only_typed_errors(
    seeds: Seeds, data: st.DataObject
) -> None:
    """Structure-aware: valid JSON whose values are replaced by other JSON values."""
    document = json.loads(seeds.statement)
    leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                     st.text(max_size=20), st.just("\ud800"))  # fmt: skip
    values = st.recursive(leaf, lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner))
    path = data.draw(st.sampled_from(_paths(document)))
    _set(document, path, data.draw(values))
    only_typed(lambda: parse_vsa(json.dumps(document).encode("utf-8", "surrogatepass")),
               (IntegrityError,))  # fmt: skip


def _paths(value: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


def _set(document: object, path: tuple[object, ...], value: object) -> None:
    target = document
    for step in path[:-1]:
        target = target[step]  # type: ignore[index]
    target[path[-1]] = value  # type: ignore[index]


@FUZZ
@given(data=st.data())
def test_archive_diff_never_raises(
    seeds: Seeds, data: st.DataObject, tmp_path_factory: pytest.TempPathFactory
) -> None:
    kind = data.draw(st.sampled_from(["whl", "tar.gz", "tar"]))
    if kind == "whl":
        a, b = seeds.zip_a, seeds.zip_b
    else:
        a, b = seeds.tar_a, seeds.tar_b
        if kind == "tar":
            import gzip

            a, b = gzip.decompress(a), gzip.decompress(b)
    mutated = data.draw(hostile(b, tokens=TEXT_TOKENS, others=[a]))
    work = tmp_path_factory.mktemp("fuzz-archive")
    (work / "rebuilt").mkdir()
    (work / f"app.{kind}").write_bytes(a)
    (work / "rebuilt" / f"app.{kind}").write_bytes(mutated)
    lines = explain(work / f"app.{kind}", work / "rebuilt" / f"app.{kind}")
    assert lines and all(isinstance(line, str) and "\n" not in line for line in lines)
