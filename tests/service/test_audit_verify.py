"""The audit log's verifier, checkpoints, checkpointer and proofs.

Every tampering is made the way an operator holding the database would: on record lists first
(the verifier's logic), then with the sqlite3 module on the file the store wrote. Each is caught
with its reason code and the index of the first bad record; the honest log still verifies.
Checkpoint notes are signed by SoftHSM's Ed25519 key and timestamped by the local TSA.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from sealgate.service.audit import merkle, proofs
from sealgate.service.audit.checkpoint import (
    EM_DASH,
    Checkpoint,
    NoteVerifier,
    make_checkpoint,
    open_note,
    parse_checkpoint_file,
    verify_stored,
)
from sealgate.service.audit.checkpointer import NO_KEY_LINE, Checkpointer
from sealgate.service.audit.records import GENESIS, AuditRecord, NewRecord, canonical, format_time
from sealgate.service.audit.verify import KeptCheckpoint, verify_log
from sealgate.service.config import AuditConfig
from sealgate.service.errors import AuditIntegrityError, ServiceConfigError, ServiceError
from sealgate.service.signing import NoteKey
from sealgate.service.store import SqlStore, StoredCheckpoint, open_store
from signer.chain import load_trust_roots
from tests.components.hsm import HsmFixture
from tests.components.tsa import LocalTsa, TsaPki

ORIGIN = "sealgate.local/audit"
NOW = dt.datetime.now(dt.UTC)


def new(n: int, **fields: Any) -> NewRecord:
    values: dict[str, Any] = {
        "time": format_time(NOW),
        "request_id": f"req-{n}",
        "event": "sign",
        "decision": "allow",
        "reason_code": "signed",
        "actor": {"issuer": "https://token.actions.githubusercontent.com", "repository_id": "42"},
        "key": "release",
        "key_version": 1,
        "grant": "release-main",
        "artifacts": (
            {"name": f"dist/app-{n}.tar.gz", "digest_algorithm": "sha256",
             "digest": hashlib.sha256(b"%d" % n).hexdigest()},
        ),
    }  # fmt: skip
    values.update(fields)
    return NewRecord(**values)


def chain(count: int, start: int = 0, prev: bytes = GENESIS, **fields: Any) -> list[AuditRecord]:
    records = []
    for index in range(start, start + count):
        record = AuditRecord.seal(new(index, **fields), index, prev)
        records.append(record)
        prev = record.hash
    return records


class SoftNoteKey:
    """A NoteKey stand-in for the pure tests (the store tests use SoftHSM's key)."""

    def __init__(self) -> None:
        self._key = ed25519.Ed25519PrivateKey.generate()
        self.public_key = self._key.public_key()

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)


def soft_key() -> NoteKey:
    return cast(NoteKey, SoftNoteKey())


def signed(records: list[AuditRecord], key: NoteKey, size: int | None = None) -> StoredCheckpoint:
    size = len(records) if size is None else size
    root = merkle.root([r.hash for r in records[:size]])
    return make_checkpoint(Checkpoint(ORIGIN, size, root), key)


def verifier_of(key: NoteKey) -> NoteVerifier:
    return NoteVerifier.from_public_key(ORIGIN, key.public_key)


def broken(
    records: list[AuditRecord], checkpoints: list[StoredCheckpoint], key: NoteKey
) -> AuditIntegrityError:
    with pytest.raises(AuditIntegrityError) as caught:
        verify_log(records, checkpoints, note_verifier=verifier_of(key))
    return caught.value


# -- the verifier on record lists ------------------------------------------------------------


def test_an_honest_log_verifies_and_says_what_it_covered() -> None:
    key = soft_key()
    records = chain(12)
    report = verify_log(records, [signed(records, key, 5), signed(records, key)],
                        note_verifier=verifier_of(key))  # fmt: skip
    assert (report.records, report.checkpoints, report.covered) == (12, 2, 12)
    assert report.signatures_verified == 2
    assert report.head_hash == records[-1].hash
    assert report.root_hash == merkle.root([r.hash for r in records])
    assert report.notes == ["checkpoint timestamps not checked: no TSA roots were given"]
    empty = verify_log([], [])
    assert (empty.records, empty.head_hash, empty.root_hash) == (0, None, merkle.EMPTY_ROOT)
    assert "no checkpoint" in empty.notes[0]


def _edited(r: list[AuditRecord]) -> list[AuditRecord]:
    r[4] = AuditRecord(4, {**r[4].body, "decision": "deny"}, r[4].prev_hash, r[4].hash)
    return r


def _edited_rehashed(r: list[AuditRecord]) -> list[AuditRecord]:
    r[4] = AuditRecord.seal(replace(new(4), grant="anyone"), 4, r[4].prev_hash)
    return r


def _field_added(r: list[AuditRecord]) -> list[AuditRecord]:
    r[4] = AuditRecord(4, {**r[4].body, "approved_by": "me"}, r[4].prev_hash, r[4].hash)
    return r


def _unencodable(r: list[AuditRecord]) -> list[AuditRecord]:
    r[4] = AuditRecord(4, {**r[4].body, "key_version": 2**60}, r[4].prev_hash, r[4].hash)
    return r


def _forged_first(r: list[AuditRecord]) -> list[AuditRecord]:
    r[0] = AuditRecord.seal(new(0), 0, b"\x01" * 32)
    return r


def _deleted(r: list[AuditRecord]) -> list[AuditRecord]:
    del r[4]
    return r


def _deleted_two(r: list[AuditRecord]) -> list[AuditRecord]:
    del r[4:6]
    return r


def _deleted_first(r: list[AuditRecord]) -> list[AuditRecord]:
    del r[0]
    return r


def _inserted_chained(r: list[AuditRecord]) -> list[AuditRecord]:
    """A forged record that links onto record 3, as an export line with index 4."""
    r.insert(4, AuditRecord.seal(new(99, request_id="forged"), 4, r[3].hash))
    return r


def _inserted_unhashed(r: list[AuditRecord]) -> list[AuditRecord]:
    r.insert(4, AuditRecord(4, new(99).body(4), r[3].hash, bytes(32)))
    return r


def _inserted_foreign_index(r: list[AuditRecord]) -> list[AuditRecord]:
    r.insert(4, AuditRecord.seal(new(99), 57, bytes(32)))
    return r


def _inserted_renumbered(r: list[AuditRecord]) -> list[AuditRecord]:
    """SQLite's way: the stored indexes shifted up, the forged row put in at 4."""
    forged = AuditRecord.seal(new(99), 4, r[3].hash)
    moved = [AuditRecord(x.index + 1, x.body, x.prev_hash, x.hash) for x in r[4:]]
    return [*r[:4], forged, *moved]


def _swapped(r: list[AuditRecord]) -> list[AuditRecord]:
    r[4], r[5] = r[5], r[4]
    return r


def _swapped_last(r: list[AuditRecord]) -> list[AuditRecord]:
    r[-2], r[-1] = r[-1], r[-2]
    return r


def _moved(r: list[AuditRecord]) -> list[AuditRecord]:
    record = r.pop(2)
    r.insert(7, record)
    return r


def _duplicated(r: list[AuditRecord]) -> list[AuditRecord]:
    r.insert(6, r[3])
    return r


TAMPERINGS: list[tuple[Callable[[list[AuditRecord]], list[AuditRecord]], str, int, str]] = [
    (_edited, "audit-record-edited", 4, "does not match its hash"),
    (_edited_rehashed, "audit-record-edited", 4, "edited and re-hashed"),
    (_field_added, "audit-record-edited", 4, "does not match its hash"),
    (_unencodable, "audit-record-edited", 4, "does not match its hash"),
    (_forged_first, "audit-record-edited", 0, "not the genesis"),
    (_deleted, "audit-record-missing", 4, "record 4 is not in the log"),
    (_deleted_two, "audit-record-missing", 4, "records 4..5 are not in the log"),
    (_deleted_first, "audit-record-missing", 0, "it starts at record 1"),
    (_inserted_chained, "audit-record-inserted", 4, "record 4 was put in before it"),
    (_inserted_unhashed, "audit-record-inserted", 4, "a second record with index 4"),
    (_inserted_foreign_index, "audit-record-inserted", 4, "claiming index 57"),
    (_inserted_renumbered, "audit-record-inserted", 4, "record 4 was put in before it"),
    (_swapped, "audit-records-reordered", 4, "record 5 stands where record 4 should"),
    (_swapped_last, "audit-records-reordered", 10, "record 11 stands where record 10"),
    (_moved, "audit-records-reordered", 2, "record 3 stands where record 2 should"),
    (_duplicated, "audit-record-inserted", 6, "a copy of record 3 stands at position 6"),
]


@pytest.mark.parametrize(("tamper", "code", "index", "reason"), TAMPERINGS,
                         ids=[t[0].__name__.strip("_") for t in TAMPERINGS])  # fmt: skip
def test_each_tampering_is_named_with_its_index(
    tamper: Callable[[list[AuditRecord]], list[AuditRecord]], code: str, index: int, reason: str
) -> None:
    key = soft_key()
    records = chain(12)
    kept = [signed(records, key, 3)]  # covers none of the damage: the chain alone finds it
    verify_log(records, kept, note_verifier=verifier_of(key))  # the control
    error = broken(tamper(list(records)), kept, key)
    assert (error.code, getattr(error, "index", None)) == (code, index), error.message
    assert reason in error.message
    assert error.message.startswith(f"audit record {index}")
    assert error.exit_code == 1


def test_a_cut_tail_shows_against_the_checkpoint_that_covered_it() -> None:
    key = soft_key()
    records = chain(12)
    kept = [signed(records, key, 10)]
    verify_log(records[:10], kept, note_verifier=verifier_of(key))  # records 10, 11 were after
    error = broken(records[:8], kept, key)
    assert (error.code, error.field) == ("audit-truncated", "record 8")
    assert "covers 10 records, the log holds 8: records 8..9 were removed" in error.message
    # the limit, stated by the report: a tail after the last checkpoint is the chain's alone
    report = verify_log(records[:11], kept, note_verifier=verifier_of(key))
    assert "records 10..10 are newer than the last checkpoint" in report.notes[0]


def rechain(records: list[AuditRecord], start: int) -> list[AuditRecord]:
    """The attack no chain can show: edit record `start` and re-hash every record after it."""
    out = list(records[:start])
    for i in range(start, len(records)):
        fields = {"reason": "rewritten"} if i == start else {}
        out.append(AuditRecord.seal(new(i, **fields), i, out[-1].hash))
    return out


def test_a_checkpoint_kept_outside_catches_a_rewritten_history() -> None:
    key = soft_key()
    records = chain(12)
    outside = signed(records, key, 9)
    rewritten = rechain(records, 5)
    # the operator holds the audit key too: it re-signs the database's checkpoints
    database = [signed(rewritten, key, 4), signed(rewritten, key)]
    report = verify_log(rewritten, database, note_verifier=verifier_of(key))
    assert report.records == 12  # the chain and the re-signed checkpoints alone cannot tell
    with pytest.raises(AuditIntegrityError) as caught:
        verify_log(rewritten, [*database, KeptCheckpoint("witness copy", outside)],
                   note_verifier=verifier_of(key))  # fmt: skip
    assert caught.value.code == "audit-checkpoint-mismatch"
    assert caught.value.message.startswith("witness copy: its root is not the root of records 0..8")
    assert "rewritten (re-chained)" in caught.value.message
    assert "checkpoints up to size 4 match" in caught.value.message
    verify_log(records, [outside], note_verifier=verifier_of(key))  # the control


def test_forged_checkpoints_are_refused_before_any_root_is_trusted() -> None:
    key, other = soft_key(), soft_key()
    records = chain(6)
    good = signed(records, key)
    text, sig_line = good.note.split("\n\n")
    # a bigger size under the old signature
    grown = text.replace("\n6\n", "\n7\n") + "\n\n" + sig_line
    # the right shape, signed by another key under our name
    impostor = signed(records, other)
    # a signature of the right key over another log's text
    cases = {
        "size changed": StoredCheckpoint(7, good.root_hash, grown, None, good.time),
        "other key": impostor,
        "root column edited": replace(good, root_hash=bytes(32)),
    }
    expected = {
        "size changed": ("audit-checkpoint-signature", "does not verify"),
        "other key": ("audit-checkpoint-signature", "no signature by the audit key"),
        "root column edited": ("audit-checkpoint-mismatch", "differ from its signed note"),
    }
    for name, checkpoint in cases.items():
        with pytest.raises(AuditIntegrityError) as caught:
            verify_log(records, [checkpoint], note_verifier=verifier_of(key))
        assert (caught.value.code, expected[name][1] in caught.value.message) == (
            expected[name][0], True), (name, caught.value.message)  # fmt: skip
    verify_log(records, [good], note_verifier=verifier_of(key))


def test_a_forked_checkpoint_and_a_second_bad_signature_are_caught() -> None:
    """The key holder signs two trees of one size (a fork): the records match one at most. A
    note with our good signature and a second, bad one by our key is refused whole."""
    key = soft_key()
    records = chain(6)
    fork = rechain(records, 2)
    with pytest.raises(AuditIntegrityError) as caught:
        verify_log(records, [signed(records, key), signed(fork, key)],
                   note_verifier=verifier_of(key))  # fmt: skip
    assert caught.value.code == "audit-checkpoint-mismatch"
    good = signed(records, key)
    verifier = verifier_of(key)
    bad_line = base64.b64encode(verifier.key_id + bytes(64)).decode()
    doubled = good.note + f"{EM_DASH} {ORIGIN} {bad_line}\n"
    with pytest.raises(AuditIntegrityError, match="does not verify"):
        verify_log(records, [replace(good, note=doubled)], note_verifier=verifier)


@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_no_single_tampering_passes_a_checkpoint_of_the_whole_log(data: st.DataObject) -> None:
    """Any one edit, re-hashed edit, deletion, insertion, swap or move of a log of 2..40
    records is refused; when a record is blamed, it is the first position touched."""
    size = data.draw(st.integers(2, 40), label="size")
    records = chain(size)
    checkpoint = signed(records, PROPERTY_KEY)
    verify_log(records, [checkpoint], note_verifier=PROPERTY_VERIFIER)
    kind = data.draw(st.sampled_from(["edit", "rehash", "delete", "insert", "swap", "move"]))
    at = data.draw(st.integers(0, size - 1), label="at")
    tampered = list(records)
    first = at
    if kind == "edit":
        r = tampered[at]
        tampered[at] = AuditRecord(at, {**r.body, "reason": "x"}, r.prev_hash, r.hash)
    elif kind == "rehash":
        tampered[at] = AuditRecord.seal(new(at, reason="x"), at, tampered[at].prev_hash)
    elif kind == "delete":
        del tampered[at]
    elif kind == "insert":
        prev = tampered[at - 1].hash if at else GENESIS
        tampered.insert(at, AuditRecord.seal(new(at, request_id="forged"), at, prev))
    else:
        other = data.draw(st.integers(0, size - 1).filter(lambda i: i != at), label="other")
        first = min(at, other)
        if kind == "swap":
            tampered[at], tampered[other] = tampered[other], tampered[at]
        else:
            tampered.insert(other, tampered.pop(at))
    with pytest.raises(AuditIntegrityError) as caught:
        verify_log(tampered, [checkpoint], note_verifier=PROPERTY_VERIFIER)
    blamed = getattr(caught.value, "index", None)
    assert blamed is None or blamed == first, (kind, at, caught.value.message)


PROPERTY_KEY = soft_key()
PROPERTY_VERIFIER = verifier_of(PROPERTY_KEY)


# -- the note format --------------------------------------------------------------------------


def test_the_note_is_c2sp_signed_note_with_the_standard_key_id() -> None:
    key = soft_key()
    stored = signed(chain(3), key)
    raw = key.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    expected_id = hashlib.sha256(ORIGIN.encode() + b"\n\x01" + raw).digest()[:4]
    body, signature_line = stored.note.split("\n\n")
    assert body.split("\n") == [ORIGIN, "3", base64.b64encode(stored.root_hash).decode()]
    assert signature_line.startswith(f"{EM_DASH} {ORIGIN} ") and signature_line.endswith("\n")
    blob = base64.b64decode(signature_line.split(" ")[2])
    assert blob[:4] == expected_id
    public = key.public_key
    assert isinstance(public, ed25519.Ed25519PublicKey)
    public.verify(blob[4:], (body + "\n").encode())  # Ed25519 over the note text
    verifier = verifier_of(key)
    blob64 = base64.b64encode(b"\x01" + raw).decode()
    assert verifier.vkey == f"{ORIGIN}+{expected_id.hex()}+{blob64}"
    assert NoteVerifier.from_vkey(verifier.vkey) == verifier
    # a witness's cosignature line is ignored, ours still counts
    cosigned = (
        stored.note + f"{EM_DASH} witness.example/w1 {base64.b64encode(bytes(68)).decode()}\n"
    )
    checkpoint, _ = open_note(cosigned, verifier, "cosigned")
    assert checkpoint.tree_size == 3


@pytest.mark.parametrize(
    ("vkey", "reason"),
    [
        ("sealgate.local/audit", "not NAME+HASH+BASE64KEY"),
        ("a b+01234567+AQ==", "not NAME+HASH+BASE64KEY"),
        ("log+0123456+AQ==", "not 8 hex digits"),
        ("log+01234567+!!", "not base64"),
        ("log+01234567+" + base64.b64encode(b"\x01" + bytes(31)).decode(), "is not Ed25519"),
        ("log+01234567+" + base64.b64encode(b"\x07" + bytes(32)).decode(), "0x07"),
        ("log+01234567+" + base64.b64encode(b"\x02" + bytes(40)).decode(), "does not parse"),
    ],
)
def test_bad_vkeys_are_refused_by_reason(vkey: str, reason: str) -> None:
    with pytest.raises(ServiceError) as caught:
        NoteVerifier.from_vkey(vkey)
    assert caught.value.code == "bad-vkey" and reason in caught.value.message


def test_a_vkey_whose_hash_does_not_fit_its_key_is_refused() -> None:
    vkey = verifier_of(soft_key()).vkey
    name, hash_text, key = vkey.split("+", 2)
    wrong = f"{name}+{int(hash_text, 16) ^ 1:08x}+{key}"
    with pytest.raises(ServiceError, match="the key hash should be"):
        NoteVerifier.from_vkey(wrong)


def note_of(text: str, key: NoteKey) -> str:
    """`text` signed as a note by `key`, whatever it holds (what a key holder can make)."""
    verifier = verifier_of(key)
    line = base64.b64encode(verifier.key_id + key.sign(text.encode())).decode()
    return f"{text}\n{EM_DASH} {ORIGIN} {line}\n"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (f"{ORIGIN}\n03\n{base64.b64encode(bytes(32)).decode()}\n", "not a decimal size"),
        (f"{ORIGIN}\n-3\n{base64.b64encode(bytes(32)).decode()}\n", "not a decimal size"),
        (f"{ORIGIN}\n{2**63}\n{base64.b64encode(bytes(32)).decode()}\n", "not a decimal size"),
        (f"{ORIGIN}\n3\n{base64.b64encode(bytes(31)).decode()}\n", "not the base64 of 32"),
        (f"{ORIGIN}\n3\n{base64.b64encode(bytes(32)).decode()[:-1]}\n", "not the base64 of 32"),
        (f"{ORIGIN}\n3\n", "at least three non-empty lines"),
        (f"other.example/log\n3\n{base64.b64encode(bytes(32)).decode()}\n", "is not the audit"),
    ],
)
def test_signed_texts_that_are_no_checkpoint_are_refused(text: str, reason: str) -> None:
    """Signed by the right key, still not a checkpoint of this log: the text is parsed strictly."""
    key = soft_key()
    with pytest.raises(AuditIntegrityError) as caught:
        open_note(note_of(text, key), verifier_of(key), "kept.note")
    assert caught.value.code in ("audit-checkpoint-malformed", "audit-checkpoint-origin")
    assert reason in caught.value.message and caught.value.message.startswith("kept.note: ")


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda n: n.replace("\n\n", "\n"), "no blank line"),
        (lambda n: n.replace(EM_DASH, "-"), "is not '— NAME BASE64'"),
        (lambda n: n.replace("\n3\n", "\n3\x1b\n"), "control characters"),
        (lambda n: n.rstrip("\n"), "no blank line"),
        (lambda n: n + "x" * 70000, "over 65536 bytes"),
        (lambda n: n.replace("\n3\n", "\n4\n"), "does not verify"),
    ],
)
def test_malformed_or_altered_notes_are_refused(mutate: Callable[[str], str], reason: str) -> None:
    key = soft_key()
    stored = signed(chain(3), key)
    open_note(stored.note, verifier_of(key), "kept.note")  # the control
    with pytest.raises(AuditIntegrityError) as caught:
        open_note(mutate(stored.note), verifier_of(key), "kept.note")
    assert caught.value.code in ("audit-checkpoint-malformed", "audit-checkpoint-signature")
    assert reason in caught.value.message and caught.value.message.startswith("kept.note: ")


def test_checkpoint_files_json_or_bare_note_and_nothing_else() -> None:
    stored = signed(chain(3), soft_key())
    from sealgate.service.audit.checkpoint import checkpoint_json

    as_json = json.dumps(checkpoint_json(stored)).encode()
    assert parse_checkpoint_file(as_json, "f") == stored
    bare = parse_checkpoint_file(stored.note.encode(), "f")
    assert (bare.tree_size, bare.root_hash, bare.note) == (3, stored.root_hash, stored.note)
    for bad, reason in [
        (b"\xff\xfe", "not UTF-8"),
        (b'{"tree_size": 3}', "exactly"),
        (as_json.replace(b'"tree_size": 3', b'"tree_size": true'), "wrong type"),
        (b'{"tree_size": NaN}', "not JSON"),
        (b"hello\n", "no blank line"),
    ]:
        with pytest.raises(AuditIntegrityError, match=reason):
            parse_checkpoint_file(bad, "f")


# -- SoftHSM's audit key, the TSA and the SQLite store ----------------------------------------


@pytest.fixture(scope="module")
def note_key(hsm: HsmFixture) -> Iterator[NoteKey]:
    key = NoteKey(hsm.uri("ed25519"))
    try:
        yield key
    finally:
        key.close()


class Log:
    """A SQLite store with 12 records and checkpoints at 5 and 12, copied to `kept`."""

    def __init__(self, directory: Path, key: NoteKey, audit: AuditConfig) -> None:
        self.path = directory / "service.db"
        self.kept = directory / "kept"
        self.kept.mkdir()
        self.audit = replace(audit, export_dir=self.kept)
        self.key = key
        self.store: SqlStore = open_store(f"sqlite:///{self.path}")
        self.checkpointer = Checkpointer(self.store, self.audit, key)
        for n in range(12):
            self.store.append(new(n))
            if n == 4:
                self.checkpointer.checkpoint()
        self.checkpointer.checkpoint()

    @property
    def verifier(self) -> NoteVerifier:
        return NoteVerifier.from_public_key(self.audit.origin, self.key.public_key)

    def sql(self, *statements: tuple[str, tuple[Any, ...]]) -> None:
        """What the operator runs on the database file, beside the service."""
        with sqlite3.connect(self.path) as db:
            for statement, values in statements:
                db.execute(statement, values)

    def kept_checkpoints(self) -> list[KeptCheckpoint]:
        return [KeptCheckpoint(f"kept {p.name}", parse_checkpoint_file(p.read_bytes(), p.name))
                for p in sorted(self.kept.iterdir())]  # fmt: skip

    def verify(self, *, outside: bool = False, roots: Any = ()) -> Any:
        kept: list[StoredCheckpoint | KeptCheckpoint] = [*self.store.checkpoints()]
        if outside:
            kept += self.kept_checkpoints()
        return verify_log(self.store.records(), kept, note_verifier=self.verifier,
                          tsa_roots=roots)  # fmt: skip


@pytest.fixture
def log(tmp_path: Path, note_key: NoteKey, tsa: LocalTsa, tsa_pki: TsaPki) -> Iterator[Log]:
    audit = AuditConfig(key_uri="(opened)", origin=ORIGIN, tsa_urls=(tsa.url,),
                        tsa_roots=(tsa_pki.root_pem,))  # fmt: skip
    opened = Log(tmp_path, note_key, audit)
    try:
        yield opened
    finally:
        opened.store.close()


def _row(log: Log, index: int) -> tuple[Any, ...]:
    with sqlite3.connect(log.path) as db:
        row: tuple[Any, ...] = db.execute(
            "SELECT body, prev_hash, hash FROM audit_records WHERE idx = ?", (index,)
        ).fetchone()
    return row


def test_the_stored_log_verifies_with_signed_and_timestamped_checkpoints(
    log: Log, tsa_pki: TsaPki
) -> None:
    roots = load_trust_roots(tsa_pki.root_pem, "TSA")
    report = log.verify(outside=True, roots=roots)
    assert (report.records, report.checkpoints, report.covered) == (12, 2, 12)
    assert (report.signatures_verified, report.timestamps_verified) == (2, 2)
    assert report.notes == []
    assert sorted(p.name for p in log.kept.iterdir()) == sorted(
        p.name for p in log.kept.iterdir() if p.name.startswith("checkpoint-")
    )
    assert len(list(log.kept.iterdir())) == 2  # no temp file left behind


SQL_TAMPERINGS: list[tuple[str, Callable[[Log], None], str, int]] = [
    ("edited", lambda log: log.sql(("UPDATE audit_records SET body = replace(body, "
     "'\"decision\":\"allow\"', '\"decision\":\"deny\"') WHERE idx = 7", ())),
     "audit-record-edited", 7),
    ("deleted", lambda log: log.sql(("DELETE FROM audit_records WHERE idx = 7", ())),
     "audit-record-missing", 7),
    ("inserted", lambda log: _insert_at(log, 7), "audit-record-inserted", 7),
    ("swapped", lambda log: log.sql(
        ("UPDATE audit_records SET idx = -1 WHERE idx = 7", ()),
        ("UPDATE audit_records SET idx = 7 WHERE idx = 8", ()),
        ("UPDATE audit_records SET idx = 8 WHERE idx = -1", ()),
    ), "audit-records-reordered", 7),
    ("truncated", lambda log: log.sql(("DELETE FROM audit_records WHERE idx >= 9", ())),
     "audit-truncated", 9),
]  # fmt: skip


def _insert_at(log: Log, index: int) -> None:
    """Shift every later row up and put a well-formed record, linked onto its predecessor, in."""
    _, _, prev = _row(log, index - 1)
    forged = AuditRecord.seal(new(99, request_id="forged"), index, bytes(prev))
    log.sql(
        ("UPDATE audit_records SET idx = idx + 1000 WHERE idx >= ?", (index,)),
        ("UPDATE audit_records SET idx = idx - 999 WHERE idx >= 1000", ()),
        ("INSERT INTO audit_records (idx, time, request_id, event, key_name, grant_name, "
         "decision, reason_code, body, prev_hash, hash) VALUES (?, ?, 'forged', 'sign', "
         "'release', 'release-main', 'allow', 'signed', ?, ?, ?)",
         (index, format_time(NOW), canonical(forged.body).decode(), prev, forged.hash)),
    )  # fmt: skip


@pytest.mark.parametrize(("name", "tamper", "code", "index"), SQL_TAMPERINGS,
                         ids=[t[0] for t in SQL_TAMPERINGS])  # fmt: skip
def test_tampering_in_sqlite_is_named_with_its_index(
    log: Log, name: str, tamper: Callable[[Log], None], code: str, index: int
) -> None:
    log.verify()  # the control
    tamper(log)
    with pytest.raises(AuditIntegrityError) as caught:
        log.verify()
    assert (caught.value.code, caught.value.field) == (code, f"record {index}"), (
        caught.value.message
    )
    assert caught.value.message.startswith(f"audit record {index}")


def _rewrite_history(log: Log, start: int) -> None:
    """The operator's full rewrite: re-chain from `start`, re-sign the database's checkpoints
    with the audit key it holds (its timestamps from the same TSA), delete the old ones."""
    records = list(log.store.records())
    rewritten = rechain(records, start)
    log.sql(*[("UPDATE audit_records SET body = ?, prev_hash = ?, hash = ? WHERE idx = ?",
               (canonical(r.body).decode(), r.prev_hash, r.hash, r.index))
              for r in rewritten[start:]])  # fmt: skip
    log.sql(("DELETE FROM checkpoints", ()))
    fresh = Checkpointer(log.store, replace(log.audit, export_dir=None), log.key)
    fresh.checkpoint()


def test_a_kept_checkpoint_catches_a_history_rewritten_with_the_audit_key(log: Log) -> None:
    _rewrite_history(log, 3)
    report = log.verify()  # the database alone: chain and re-signed checkpoint agree
    assert report.records == 12 and report.checkpoints == 1
    with pytest.raises(AuditIntegrityError) as caught:
        log.verify(outside=True)
    assert caught.value.code == "audit-checkpoint-mismatch"
    assert "kept checkpoint-000000000000005-" in caught.value.message
    assert "its root is not the root of records 0..4: the history was rewritten" in (
        caught.value.message
    )


def test_a_forged_or_restamped_checkpoint_in_the_database(log: Log, tsa_pki: TsaPki) -> None:
    roots = load_trust_roots(tsa_pki.root_pem, "TSA")
    log.sql(("UPDATE checkpoints SET note = replace(note, ?, ?) WHERE tree_size = 12",
             ("\n12\n", "\n13\n")),
            ("UPDATE checkpoints SET tree_size = 13 WHERE tree_size = 12", ()))  # fmt: skip
    with pytest.raises(AuditIntegrityError) as caught:
        log.verify()
    assert caught.value.code == "audit-checkpoint-signature"
    assert "does not verify (a forged or altered checkpoint)" in caught.value.message
    log.sql(("DELETE FROM checkpoints WHERE tree_size = 13", ()))
    # the size-5 checkpoint's token, moved onto another checkpoint's signature
    log.checkpointer.checkpoint(force=True)
    stored = log.store.checkpoints()
    log.sql(("UPDATE checkpoints SET timestamp = ? WHERE id = (SELECT max(id) FROM checkpoints)",
             (stored[0].timestamp,)))  # fmt: skip
    with pytest.raises(AuditIntegrityError) as caught:
        log.verify(roots=roots)
    assert caught.value.code == "audit-checkpoint-timestamp"
    assert "its timestamp does not verify" in caught.value.message
    log.sql(("UPDATE checkpoints SET timestamp = NULL WHERE tree_size = 12", ()))
    with pytest.raises(AuditIntegrityError, match="no RFC 3161 timestamp"):
        log.verify(roots=roots)


# -- the checkpointer -------------------------------------------------------------------------


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.02)


def test_the_checkpointer_counts_records_runs_on_a_timer_and_writes_one_at_stop(
    tmp_path: Path, note_key: NoteKey
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    try:
        every = Checkpointer(store, AuditConfig(key_uri="x", origin=ORIGIN, checkpoint_every=3,
                                                checkpoint_interval=3600), note_key)  # fmt: skip
        every.start()
        for n in range(7):
            store.append(new(n))
            every.record_appended()
            if n in (2, 5):  # the 3rd and 6th record: a checkpoint of exactly that size
                want = (n + 1) // 3

                def made(want: int = want) -> bool:
                    return len(store.checkpoints()) == want

                _wait_for(made, "a checkpoint")
            else:
                assert not every._wake.is_set()  # below the count: nothing triggered
        assert [c.tree_size for c in store.checkpoints()] == [3, 6]
        final = every.stop()
        assert final is not None and final.tree_size == 7
        assert every.stop() is None  # nothing new since
        # the timer alone, with no count reached
        timer = Checkpointer(store, AuditConfig(key_uri="x", origin=ORIGIN,
                                                checkpoint_every=10**6,
                                                checkpoint_interval=0.05), note_key)  # fmt: skip
        timer.start()
        store.append(new(7))
        _wait_for(lambda: store.latest_checkpoint().tree_size == 8, "the timed checkpoint")  # type: ignore[union-attr]
        assert timer.stop() is None
        verifier = NoteVerifier.from_public_key(ORIGIN, note_key.public_key)
        report = verify_log(store.records(), store.checkpoints(), note_verifier=verifier)
        assert (report.records, report.checkpoints) == (8, 4)
    finally:
        store.close()


def test_a_failed_export_keeps_the_checkpoint_and_the_thread(
    tmp_path: Path, note_key: NoteKey
) -> None:
    """export_dir gone: the checkpoint is in the database, the failure is typed and kept for
    /v1/health, and the thread lives on for the next one."""
    store = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    try:
        audit = AuditConfig(key_uri="x", origin=ORIGIN, checkpoint_every=1,
                            checkpoint_interval=3600, export_dir=tmp_path / "gone")  # fmt: skip
        keeper = Checkpointer(store, audit, note_key)
        keeper.start()
        store.append(new(0))
        keeper.record_appended()
        _wait_for(lambda: keeper.last_error is not None, "the failed export")
        error = keeper.last_error
        assert error is not None and error.code == "checkpoint-export-failed"
        assert f"audit.export_dir {tmp_path / 'gone'}: cannot write the checkpoint" in error.message
        assert [c.tree_size for c in store.checkpoints()] == [1]
        assert keeper._thread is not None and keeper._thread.is_alive()
        assert keeper.stop(final=False) is None
        assert keeper._thread is None and [c.tree_size for c in store.checkpoints()] == [1]
    finally:
        store.close()


def test_without_an_audit_key_no_checkpoint_is_written_and_check_says_so(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    try:
        quiet = Checkpointer(store, AuditConfig(checkpoint_every=1), None)
        quiet.start()
        store.append(new(0))
        quiet.record_appended()
        assert quiet.stop() is None and store.checkpoints() == []
        assert quiet.describe() == NO_KEY_LINE
        assert "no checkpoints are written" in NO_KEY_LINE
    finally:
        store.close()


def test_the_checkpointer_describes_itself_and_refuses_a_gap(
    tmp_path: Path, note_key: NoteKey
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    try:
        audit = AuditConfig(key_uri="x", origin=ORIGIN, export_dir=tmp_path)
        keeper = Checkpointer(store, audit, note_key)
        vkey = NoteVerifier.from_public_key(ORIGIN, note_key.public_key).vkey
        assert keeper.describe() == (
            f"audit: checkpoints every 1000 records or 300 s and at shutdown, not timestamped, "
            f"signed by {vkey}, copied to {tmp_path}"
        )
        for n in range(4):
            store.append(new(n))
        with sqlite3.connect(tmp_path / "a.db") as db:
            db.execute("DELETE FROM audit_records WHERE idx = 1")
        with pytest.raises(AuditIntegrityError) as caught:
            keeper.checkpoint()
        assert caught.value.code == "audit-record-missing"
        assert "no checkpoint signed" in caught.value.message
        assert store.checkpoints() == []
    finally:
        store.close()


def test_a_restarted_checkpointer_refuses_to_sign_over_a_rewritten_history(log: Log) -> None:
    """Records re-chained while the service was down: its next checkpoint would bless them."""
    records = list(log.store.records())
    rewritten = rechain(records, 2)
    log.sql(*[("UPDATE audit_records SET body = ?, prev_hash = ?, hash = ? WHERE idx = ?",
               (canonical(r.body).decode(), r.prev_hash, r.hash, r.index))
              for r in rewritten[2:]])  # fmt: skip
    log.store.append(new(12))
    restarted = Checkpointer(log.store, replace(log.audit, export_dir=None), log.key)
    with pytest.raises(AuditIntegrityError) as caught:
        restarted.checkpoint()
    assert caught.value.code == "audit-checkpoint-mismatch"
    assert "records 0..11 no longer match the checkpoint of size 12 signed before" in (
        caught.value.message
    )
    assert [c.tree_size for c in log.store.checkpoints()] == [5, 12]
    # the control: an honest restart extends the log's own tree
    (log.path.parent / "honest").mkdir()
    honest = Log(log.path.parent / "honest", log.key, log.audit)
    try:
        honest.store.append(new(12))
        again = Checkpointer(honest.store, honest.audit, log.key).checkpoint()
        assert again is not None and again.tree_size == 13
    finally:
        honest.store.close()


def test_an_unusable_audit_key_type_fails_at_start(tmp_path: Path, hsm: HsmFixture) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    p384 = NoteKey(hsm.uri("ec384"))
    p256 = NoteKey(hsm.uri("ec256"))
    try:
        with pytest.raises(ServiceConfigError) as caught:
            Checkpointer(store, AuditConfig(key_uri="x"), p384)
        assert caught.value.code == "audit-key-unsupported"
        assert "secp384r1 ECDSA cannot sign checkpoints" in caught.value.message
        # ECDSA P-256: signed-note type 0x02, the key ID over the SPKI DER
        store.append(new(0))
        stored = Checkpointer(store, AuditConfig(key_uri="x", origin=ORIGIN), p256).checkpoint()
        assert stored is not None
        verifier = NoteVerifier.from_public_key(ORIGIN, p256.public_key)
        spki = p256.public_key.public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)  # fmt: skip
        assert verifier.key_id == hashlib.sha256(spki).digest()[:4]
        assert NoteVerifier.from_vkey(verifier.vkey) == verifier
        checkpoint, signed_ok, _ = verify_stored(stored, verifier, "p256")
        assert (checkpoint.tree_size, signed_ok) == (1, True)
    finally:
        p384.close()
        p256.close()
        store.close()


# -- what the service serves ------------------------------------------------------------------


def test_proofs_from_the_store_verify_against_its_checkpoints(log: Log) -> None:
    latest = proofs.latest_checkpoint(log.store)
    assert latest["tree_size"] == 12 and latest["note"].startswith(f"{ORIGIN}\n12\n")
    root = bytes.fromhex(latest["root_hash"])
    for index in range(12):
        answer = proofs.inclusion(log.store, index)
        assert answer["tree_size"] == 12 and answer["checkpoint"] == latest
        assert merkle.verify_inclusion(index, 12, bytes.fromhex(answer["record_hash"]),
                                       [bytes.fromhex(p) for p in answer["proof"]], root)  # fmt: skip
    early = proofs.inclusion(log.store, 2, 5)
    assert early["checkpoint"]["tree_size"] == 5
    five = bytes.fromhex(early["root_hash"])
    assert five == log.store.checkpoints()[0].root_hash
    consistency = proofs.consistency(log.store, 5, 12)
    assert merkle.verify_consistency(5, 12, five, root,
                                     [bytes.fromhex(p) for p in consistency["proof"]])  # fmt: skip
    # a record newer than the last checkpoint: a proof against the log's size, unsigned yet
    log.store.append(new(12))
    fresh = proofs.inclusion(log.store, 12)
    assert (fresh["tree_size"], fresh["checkpoint"]) == (13, None)
    json.dumps(fresh)  # the app sends it as is


@pytest.mark.parametrize(
    ("call", "status", "code"),
    [
        (lambda s: proofs.inclusion(s, 12), 404, "no-such-record"),
        (lambda s: proofs.inclusion(s, -1), 404, "no-such-record"),
        (lambda s: proofs.inclusion(s, 5, 5), 422, "bad-tree-size"),
        (lambda s: proofs.inclusion(s, 5, 13), 422, "bad-tree-size"),
        (lambda s: proofs.consistency(s, 0, 5), 422, "bad-tree-size"),
        (lambda s: proofs.consistency(s, 6, 5), 422, "bad-tree-size"),
        (lambda s: proofs.consistency(s, 5, 13), 422, "bad-tree-size"),
    ],
)
def test_proof_requests_outside_the_log_are_typed_refusals(
    log: Log, call: Callable[[SqlStore], object], status: int, code: str
) -> None:
    with pytest.raises(ServiceError) as caught:
        call(log.store)
    assert (caught.value.status, caught.value.code) == (status, code)


def test_no_checkpoint_yet_is_a_404(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    try:
        with pytest.raises(ServiceError) as caught:
            proofs.latest_checkpoint(store)
        assert (caught.value.status, caught.value.code) == (404, "no-checkpoint")
    finally:
        store.close()
