"""`sealgate audit verify|export|prove` as an auditor runs them: the real command on the file the
store wrote, its export, checkpoints kept in a folder, and receipts from real /v1/sign answers.
Each attack asserts the exit code and the reason text; each has its honest control."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from sealgate.cli import main
from sealgate.service.audit import proofs
from sealgate.service.audit.checkpoint import NoteVerifier, checkpoint_from_json, checkpoint_json
from sealgate.service.audit.checkpointer import Checkpointer
from sealgate.service.audit.records import AuditRecord, NewRecord, canonical, format_time
from sealgate.service.config import AuditConfig
from sealgate.service.protocol import API_CHECKPOINT, API_SIGN
from sealgate.service.signing import NoteKey
from sealgate.service.store import open_store
from tests.components.cli import sealgate
from tests.components.hsm import HsmFixture
from tests.components.oidc import OidcIssuer, github_claims
from tests.components.service import (
    InProcessService,
    audit_config,
    hsm_key,
    service_config,
    sign_body,
    start_service,
    write_service_yml,
)
from tests.components.tsa import LocalTsa, TsaPki

ORIGIN = "sealgate.local/audit"


def new(n: int, **fields: Any) -> NewRecord:
    values: dict[str, Any] = {
        "time": format_time(dt.datetime.now(dt.UTC)), "request_id": f"req-{n}", "event": "sign",
        "decision": "allow", "reason_code": "signed", "key": "release", "grant": "main",
        "artifacts": ({"name": f"a{n}.bin", "digest_algorithm": "sha256", "digest": "ab" * 32},),
    }  # fmt: skip
    values.update(fields)
    return NewRecord(**values)


def cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    """The command through `sealgate.cli.main` in this process (the subprocess runs cover the
    entry point; this keeps each attack under a second)."""
    capsys.readouterr()
    code = main(["audit", *map(str, args)])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["sealgate", "audit", *map(str, args)], code, out, err)


def failed(result: subprocess.CompletedProcess[str], exit_code: int, code: str, text: str) -> None:
    """The command failed with `exit_code`, its one error line naming `code` and `text`."""
    assert result.returncode == exit_code, (result.returncode, result.stdout, result.stderr)
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"sealgate: error: [{code}] "), line
    assert text in line, line


@dataclass
class Audited:
    """A SQLite log of 10 records, checkpoints at 4 and 10 (SoftHSM Ed25519, the local TSA),
    copied to `kept`, and its export."""

    directory: Path
    db: Path
    kept: Path
    export: Path
    vkey: str
    env: dict[str, str]
    tsa_roots: Path

    @property
    def url(self) -> str:
        return f"sqlite:///{self.db}"

    def run(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return sealgate("audit", *args, env=self.env)


@pytest.fixture(scope="module")
def audited(
    hsm: HsmFixture, tsa: LocalTsa, tsa_pki: TsaPki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Audited]:
    directory = tmp_path_factory.mktemp("audited")
    kept = directory / "kept"
    kept.mkdir()
    key = NoteKey(hsm.uri("ed25519"))
    store = open_store(f"sqlite:///{directory / 'service.db'}")
    try:
        audit = AuditConfig(key_uri="(opened)", origin=ORIGIN, tsa_urls=(tsa.url,),
                            tsa_roots=(tsa_pki.root_pem,), export_dir=kept)  # fmt: skip
        checkpointer = Checkpointer(store, audit, key)
        for n in range(10):
            store.append(new(n))
            if n == 3:
                checkpointer.checkpoint()
        checkpointer.checkpoint()
        vkey = NoteVerifier.from_public_key(ORIGIN, key.public_key).vkey
    finally:
        store.close()
        key.close()
    audited = Audited(directory, directory / "service.db", kept, directory / "audit.jsonl",
                      vkey, hsm.env, tsa_pki.root_pem)  # fmt: skip
    exported = audited.run("export", "--db", audited.url, "--out", audited.export)
    assert exported.returncode == 0, exported.stderr
    yield audited


def test_verify_passes_on_the_database_and_on_its_export(
    audited: Audited, capsys: pytest.CaptureFixture[str]
) -> None:
    database = audited.run("verify", "--db", audited.url, "--checkpoints", audited.kept,
                           "--vkey", audited.vkey, "--tsa-roots", audited.tsa_roots)  # fmt: skip
    assert database.returncode == 0, database.stderr
    lines = database.stdout.splitlines()
    assert lines[0].startswith(f"audit log verified: database {audited.db}: 10 records")
    assert lines[1] == ("  2 checkpoint(s), covering 10 records; 2 signature(s) and 2 "
                        "timestamp(s) verified")  # fmt: skip
    export = cli(capsys, "verify", "--export", audited.export, "--vkey", audited.vkey, "--json")
    assert export.returncode == 0, export.stderr
    report = json.loads(export.stdout)
    assert (report["verified"], report["records"], report["checkpoints"]) == (True, 10, 2)
    assert report["notes"] == ["checkpoint timestamps not checked: no TSA roots were given"]
    lines = audited.export.read_text().splitlines()
    assert len(lines) == 12 and all("checkpoint" in json.loads(x) for x in lines[10:])
    assert json.loads(lines[3]) == json.loads(json.dumps(json.loads(lines[3])))
    # without a key the roots are still compared, and the report says the signatures were not
    unsigned = cli(capsys, "verify", "--export", audited.export)
    assert unsigned.returncode == 0
    assert "note: checkpoint signatures not checked: no audit key was given" in unsigned.stdout


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def _edit(lines: list[str]) -> list[str]:
    record = json.loads(lines[6])
    record["decision"] = "deny"
    lines[6] = json.dumps(record) + "\n"
    return lines


def _insert(lines: list[str]) -> list[str]:
    prev = bytes.fromhex(json.loads(lines[5])["hash"])
    forged = AuditRecord.seal(new(99, request_id="forged"), 6, prev)
    return [*lines[:6], json.dumps(forged.as_json()) + "\n", *lines[6:]]


EXPORT_TAMPERINGS: list[tuple[str, Callable[[list[str]], list[str]], str, str]] = [
    ("edited", _edit, "audit-record-edited", "audit record 6: edited"),
    ("deleted", lambda x: [*x[:6], *x[7:]], "audit-record-missing", "audit record 6: missing"),
    ("inserted", _insert, "audit-record-inserted", "audit record 6: inserted"),
    ("swapped", lambda x: [*x[:6], x[7], x[6], *x[8:]], "audit-records-reordered",
     "audit record 6: records reordered"),
    ("truncated", lambda x: [*x[:7], *x[10:]], "audit-truncated",
     "audit record 7: truncated: --export"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "tamper", "code", "text"), EXPORT_TAMPERINGS,
                         ids=[t[0] for t in EXPORT_TAMPERINGS])  # fmt: skip
def test_each_tampering_of_an_export_fails_with_its_index(
    audited: Audited,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    tamper: Callable[[list[str]], list[str]],
    code: str,
    text: str,
) -> None:
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text("".join(tamper(_lines(audited.export))))
    failed(cli(capsys, "verify", "--export", tampered, "--vkey", audited.vkey), 1, code, text)


def test_tampering_in_the_database_and_a_rewrite_caught_by_the_kept_checkpoints(
    audited: Audited, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deleted = tmp_path / "deleted.db"
    deleted.write_bytes(audited.db.read_bytes())
    with contextlib.closing(sqlite3.connect(deleted)) as db, db:
        db.execute("DELETE FROM audit_records WHERE idx = 2")
    failed(audited.run("verify", "--db", f"sqlite:///{deleted}", "--vkey", audited.vkey), 1,
           "audit-record-missing", "audit record 2: missing: record 2 is not in the log")  # fmt: skip
    # the operator's rewrite: record 1 edited, every later one re-chained, and the database's
    # checkpoints dropped (it could as well re-sign them: the audit key is in its hands)
    rewritten = tmp_path / "rewritten.db"
    rewritten.write_bytes(audited.db.read_bytes())
    with contextlib.closing(sqlite3.connect(rewritten)) as db, db:
        rows = db.execute("SELECT idx, body, prev_hash FROM audit_records ORDER BY idx").fetchall()
        prev = bytes(rows[1][2])
        for idx, body, _ in rows[1:]:
            document = json.loads(body)
            if idx == 1:
                document["reason"] = "nothing to see"
            record = AuditRecord(idx, document, prev, b"")
            fresh = record.recomputed_hash()
            db.execute("UPDATE audit_records SET body = ?, prev_hash = ?, hash = ? WHERE idx = ?",
                       (canonical(document).decode(), prev, fresh, idx))  # fmt: skip
            prev = fresh
        db.execute("DELETE FROM checkpoints")
    url = f"sqlite:///{rewritten}"
    alone = cli(capsys, "verify", "--db", url, "--vkey", audited.vkey)
    assert alone.returncode == 0, alone.stderr  # what the database alone can show: nothing
    assert "no checkpoint" in alone.stdout
    failed(cli(capsys, "verify", "--db", url, "--checkpoints", audited.kept, "--vkey",
               audited.vkey), 1, "audit-checkpoint-mismatch",
           "its root is not the root of records 0..3: the history was rewritten")  # fmt: skip


def test_inputs_that_are_not_an_audit_log_are_usage_errors(
    audited: Audited, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    failed(cli(capsys, "verify", "--export", tmp_path / "none.jsonl"), 2, "file-missing",
           "--export")  # fmt: skip
    failed(cli(capsys, "verify", "--db", f"sqlite:///{tmp_path / 'typo.db'}"), 2, "file-missing",
           "an audit reads a log, never makes one")  # fmt: skip
    assert not (tmp_path / "typo.db").exists()
    failed(cli(capsys, "export", "--db", f"sqlite:///{tmp_path}"), 2, "not-a-file",
           "not a regular file")  # fmt: skip
    failed(cli(capsys, "export", "--db", audited.url, "--out", tmp_path / "no" / "x.jsonl"), 2,
           "path-error", "cannot write it")  # fmt: skip
    again = cli(capsys, "export", "--db", audited.url, "--out", tmp_path / "again.jsonl")
    assert again.returncode == 0 and (tmp_path / "again.jsonl").read_bytes() == (
        audited.export.read_bytes()
    )
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("".join(_lines(audited.export)[:2]) + "{not json\n")
    failed(cli(capsys, "verify", "--export", garbage), 2, "bad-audit-export", "line 3: not a JSON")
    garbage.write_text("[" * 100_000 + "\n")  # deep enough to exhaust a recursive parser
    failed(cli(capsys, "verify", "--export", garbage), 2, "bad-audit-export", "line 1: not a JSON")
    garbage.write_text('{"index": true, "prev_hash": "00", "hash": "00"}\n')
    failed(cli(capsys, "verify", "--export", garbage), 2, "bad-audit-export",
           "line 1: not an audit record (no non-negative integer index)")  # fmt: skip
    failed(cli(capsys, "verify", "--export", audited.export, "--vkey", "log+1234+AQ=="), 2,
           "bad-vkey", "not 8 hex digits")  # fmt: skip
    failed(cli(capsys, "verify", "--export", Path("/dev/zero")), 2, "not-a-file",
           "a character device")  # fmt: skip
    # the audit key as a PEM file: the right one passes, another one is a forged checkpoint
    other = ed25519.Ed25519PrivateKey.generate().public_key()
    pem = tmp_path / "other.pem"
    pem.write_bytes(other.public_bytes(serialization.Encoding.PEM,
                                       serialization.PublicFormat.SubjectPublicKeyInfo))  # fmt: skip
    failed(cli(capsys, "verify", "--export", audited.export, "--audit-key-pub", pem), 1,
           "audit-checkpoint-signature", "no signature by the audit key")  # fmt: skip
    name, _, blob = audited.vkey.split("+", 2)
    ours = ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(blob)[1:])
    pem.write_bytes(ours.public_bytes(serialization.Encoding.PEM,
                                      serialization.PublicFormat.SubjectPublicKeyInfo))  # fmt: skip
    right = cli(capsys, "verify", "--export", audited.export, "--audit-key-pub", pem)
    assert right.returncode == 0, right.stderr
    assert name == ORIGIN


# -- prove: one signing event against a checkpoint a third party kept -------------------------


@dataclass
class Signed:
    receipt: Path
    checkpoint: Path
    proof: Path
    vkey: str
    env: dict[str, str]
    record: dict[str, Any]


def _sign(service: InProcessService, tmp_path: Path, name: str) -> dict[str, Any]:
    artifact = tmp_path / name
    artifact.write_bytes(name.encode() * 100)
    answer = service.post(sign_body([artifact]))
    assert answer.status_code == 200, answer.text
    receipt: dict[str, Any] = answer.json()["receipt"]
    return receipt


@pytest.fixture
def signed(service: InProcessService, hsm: HsmFixture, tmp_path: Path) -> Signed:
    receipts = [_sign(service, tmp_path, f"app-{n}.tar.gz") for n in range(3)]
    store = service.service.store
    checkpointer = service.service.checkpointer
    checkpointer.checkpoint()
    receipt = tmp_path / "receipt.json"
    receipt.write_text(json.dumps({"version": 1, "receipt": receipts[1]}))  # as the client keeps it
    checkpoint = tmp_path / "kept-checkpoint.json"
    checkpoint.write_text(json.dumps(proofs.latest_checkpoint(store)))
    proof = tmp_path / "proof.json"
    proof.write_text(json.dumps(proofs.inclusion(store, receipts[1]["index"], 3)))
    key = NoteKey(hsm.uri("ed25519"))
    try:
        vkey = NoteVerifier.from_public_key(service.config.audit.origin, key.public_key).vkey
    finally:
        key.close()
    return Signed(receipt, checkpoint, proof, vkey, hsm.env, receipts[1])


def prove(signed: Signed, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return sealgate("audit", "prove", *args, env=signed.env)


def test_prove_checks_a_receipt_against_a_kept_checkpoint(signed: Signed) -> None:
    good = prove(signed, signed.receipt, "--checkpoint", signed.checkpoint, "--proof",
                 signed.proof, "--vkey", signed.vkey)  # fmt: skip
    assert good.returncode == 0, good.stderr
    assert good.stdout.startswith("proved: record 1 (sign allow, key release) is in the log at "
                                  "tree size 3, checkpoint signed by ")  # fmt: skip


def test_prove_refuses_receipts_proofs_and_checkpoints_that_do_not_fit(
    signed: Signed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = cli(capsys, "prove", signed.receipt, "--checkpoint", signed.checkpoint, "--proof",
               signed.proof, "--vkey", signed.vkey, "--json")  # fmt: skip
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["proved"] is True
    # a receipt for a signing event the log does not hold: well formed, hashed, never recorded
    forged = AuditRecord.seal(new(1, request_id="never-happened"), 1,
                              bytes.fromhex(signed.record["record"]["prev_hash"]))  # fmt: skip
    fake = tmp_path / "fake.json"
    fake.write_text(json.dumps({"index": 1, "hash": forged.hash.hex(), "record": forged.as_json()}))
    failed(cli(capsys, "prove", fake, "--checkpoint", signed.checkpoint, "--proof", signed.proof,
                 "--vkey", signed.vkey), 1, "audit-not-included",
           "is not in the log the checkpoint signs")  # fmt: skip
    # the receipt's record edited (the hash kept): it no longer hashes to itself
    edited = json.loads(signed.receipt.read_text())
    edited["receipt"]["record"]["key"] = "other"
    fake.write_text(json.dumps(edited))
    failed(cli(capsys, "prove", fake, "--checkpoint", signed.checkpoint, "--proof", signed.proof,
                 "--vkey", signed.vkey), 1, "audit-receipt-mismatch",
           "does not hash to the receipt's hash")  # fmt: skip
    # a checkpoint signed by another key under the log's name
    other = ed25519.Ed25519PrivateKey.generate().public_key()
    wrong = NoteVerifier.from_public_key(ORIGIN, other).vkey
    failed(cli(capsys, "prove", signed.receipt, "--checkpoint", signed.checkpoint, "--proof",
                 signed.proof, "--vkey", wrong), 1, "audit-checkpoint-signature",
           "no signature by the audit key")  # fmt: skip
    # a proof for another tree than the kept checkpoint's
    document = json.loads(signed.proof.read_text())
    document["tree_size"] = 2
    fake.write_text(json.dumps(document))
    failed(cli(capsys, "prove", signed.receipt, "--checkpoint", signed.checkpoint, "--proof", fake,
                 "--vkey", signed.vkey), 1, "audit-not-included",
           "is for record 1 in a tree of 2, not record 1 in the checkpoint's 3")  # fmt: skip
    # a proof whose index is JSON true (1 in Python): not an index
    document = json.loads(signed.proof.read_text())
    document["index"] = True
    fake.write_text(json.dumps(document))
    failed(cli(capsys, "prove", signed.receipt, "--checkpoint", signed.checkpoint, "--proof", fake,
               "--vkey", signed.vkey), 2, "bad-input", "not an inclusion proof")  # fmt: skip
    # a proof with one hash changed
    document = json.loads(signed.proof.read_text())
    document["proof"][0] = "00" * 32
    fake.write_text(json.dumps(document))
    failed(cli(capsys, "prove", signed.receipt, "--checkpoint", signed.checkpoint, "--proof", fake,
                 "--vkey", signed.vkey), 1, "audit-not-included", "does not lead to its root")  # fmt: skip


def test_prove_needs_a_checkpoint_that_covers_the_record(
    signed: Signed, service: InProcessService, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    early = tmp_path / "early.json"
    store = service.service.store
    later = _sign(service, tmp_path, "late.bin")
    receipt = tmp_path / "late.json"
    receipt.write_text(json.dumps(later))
    early.write_text(signed.checkpoint.read_text())
    failed(cli(capsys, "prove", receipt, "--checkpoint", early, "--proof", signed.proof, "--vkey",
                 signed.vkey), 1, "audit-not-covered", "covers records 0..2, not record 3")  # fmt: skip
    assert store.size() == 4


@pytest.mark.slow
def test_prove_against_a_running_service(
    hsm: HsmFixture, tsa: LocalTsa, tsa_pki: TsaPki, oidc: OidcIssuer, tmp_path: Path
) -> None:
    """The real path: `sealgate serve` writes checkpoints to export_dir as they happen, a third
    party keeps one, and `audit prove --service` fetches the proof over HTTP."""
    kept = tmp_path / "kept"
    kept.mkdir()
    config = service_config(
        oidc, [hsm_key(hsm, tsa=tsa, tsa_pki=tsa_pki)], directory=tmp_path,
        audit=audit_config(hsm, tsa, tsa_pki, checkpoint_every=1, export_dir=kept),
    )  # fmt: skip
    path = write_service_yml(tmp_path / "service.yml", config)
    artifact = tmp_path / "app.tar.gz"
    artifact.write_bytes(b"release" * 1000)
    key = NoteKey(hsm.uri("ed25519"))
    try:
        vkey = NoteVerifier.from_public_key(config.audit.origin, key.public_key).vkey
    finally:
        key.close()
    with start_service(path, env=hsm.env) as running:
        answer = httpx.post(running.url + API_SIGN, json=sign_body([artifact]), timeout=30,
                            headers={"Authorization": f"Bearer {oidc.mint(github_claims())}"})  # fmt: skip
        assert answer.status_code == 200, answer.text
        receipt = tmp_path / "receipt.json"
        receipt.write_text(json.dumps(answer.json()["receipt"]))
        deadline = time.monotonic() + 30
        while not list(kept.glob("checkpoint-*.json")):
            assert time.monotonic() < deadline, running.log()
            time.sleep(0.05)
        served = httpx.get(running.url + API_CHECKPOINT, timeout=30).json()
        assert served["tree_size"] >= 1
        checkpoint = sorted(kept.glob("checkpoint-*.json"))[-1]
        result = sealgate("audit", "prove", receipt, "--checkpoint", checkpoint, "--service",
                          running.url, "--vkey", vkey, "--tsa-roots", tsa_pki.root_pem,
                          env=hsm.env)  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("proved: record 0 (sign allow, key release)")
        assert result.stdout.rstrip().endswith(", timestamped")
        # a receipt for record 0 that the service's log does not hold: its proof is another's
        forged = AuditRecord.seal(new(0, request_id="never-happened"), 0, bytes(32))
        fake = tmp_path / "fake.json"
        fake.write_text(json.dumps({"index": 0, "hash": forged.hash.hex(),
                                    "record": forged.as_json()}))  # fmt: skip
        failed(sealgate("audit", "prove", fake, "--checkpoint", checkpoint, "--service",
                        running.url, "--vkey", vkey, env=hsm.env), 1, "audit-not-included",
               "record 0 (hash ")  # fmt: skip


def test_the_export_is_what_the_store_holds(audited: Audited) -> None:
    """Each record line is the record as stored (its hashed body and both hashes)."""
    with sqlite3.connect(audited.db) as db:
        rows = db.execute("SELECT idx, body, prev_hash, hash FROM audit_records ORDER BY idx")
        stored = [(i, json.loads(b), bytes(p).hex(), bytes(h).hex()) for i, b, p, h in rows]
    lines = [json.loads(x) for x in _lines(audited.export)[:10]]
    for (index, body, prev, digest), line in zip(stored, lines, strict=True):
        assert line == {**body, "prev_hash": prev, "hash": digest} and line["index"] == index
    checkpoints = [json.loads(x)["checkpoint"] for x in _lines(audited.export)[10:]]
    assert [c["tree_size"] for c in checkpoints] == [4, 10]
    kept = sorted(audited.kept.iterdir())
    assert [json.loads(p.read_text()) for p in kept] == checkpoints
    assert checkpoint_json(checkpoint_from_json(checkpoints[0], "line 11")) == checkpoints[0]


def test_verify_never_makes_a_store_in_an_empty_postgresql_database(
    pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An auditor's mistyped or empty database is refused, not migrated and "verified" empty."""
    result = cli(capsys, "verify", "--db", pg_url)
    assert result.returncode == 2, result.stderr
    assert "[store-empty]" in result.stderr
    with contextlib.closing(open_store(pg_url)) as store:  # the writer's open still works after
        assert store.size() == 0
