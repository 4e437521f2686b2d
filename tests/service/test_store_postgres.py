"""The audit log on PostgreSQL: rows edited behind the service are found by `verify_log` with
their index; writers in separate processes (one killed with SIGKILL) keep one chain (SQLite too)."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ed25519

from sealgate.service.audit import merkle
from sealgate.service.audit.checkpoint import Checkpoint, NoteVerifier, make_checkpoint
from sealgate.service.audit.records import AuditRecord, NewRecord, canonical, format_time
from sealgate.service.audit.verify import (
    EDITED,
    INSERTED,
    MISMATCH,
    MISSING,
    REORDERED,
    TRUNCATED,
    AuditBrokenError,
    KeptCheckpoint,
    verify_log,
)
from sealgate.service.signing import NoteKey
from sealgate.service.store import SqlStore, StoredCheckpoint, open_store
from tests.components.postgres import Postgres

ROOT = Path(__file__).resolve().parents[2]
RECORDS = 12
ORIGIN = "sealgate.test/audit"


class Ed25519NoteKey:
    """Enough of signing.NoteKey for a checkpoint note: a key made here, no key URI."""

    def __init__(self) -> None:
        self._private = ed25519.Ed25519PrivateKey.generate()
        self.public_key = self._private.public_key()
        self.is_ed25519 = True

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)


def new(n: int) -> NewRecord:
    return NewRecord(
        time=format_time(dt.datetime.now(dt.UTC)),
        request_id=f"req-{n}",
        event="sign",
        decision="allow",
        reason_code="signed",
        key="release",
        grant="main",
        artifacts=({"name": f"a{n}.bin", "digest_algorithm": "sha256", "digest": "ab" * 32},),
    )


def checkpoint_of(store: SqlStore, key: Ed25519NoteKey) -> StoredCheckpoint:
    size = store.size()
    root = merkle.root(store.record_hashes(0, size))
    return make_checkpoint(Checkpoint(ORIGIN, size, root), cast(NoteKey, key))


@pytest.fixture
def logged(pg_url: str, postgres: Postgres) -> Iterator[tuple[SqlStore, Callable[[str], None]]]:
    """A store with RECORDS records and a checkpoint over all of them, and a way to run SQL
    on its database directly (as an operator with the database could)."""
    store = open_store(pg_url)
    for n in range(RECORDS):
        store.append(new(n), jti=("https://issuer", f"jti-{n}"))
    store.save_checkpoint(checkpoint_of(store, Ed25519NoteKey()))
    database = pg_url.rsplit("/", 1)[1]

    def sql(statement: str) -> None:
        with postgres.connect(database) as connection:
            connection.execute(statement.encode())

    try:
        yield store, sql
    finally:
        store.close()


def broken(store: SqlStore) -> AuditBrokenError:
    with pytest.raises(AuditBrokenError) as caught:
        verify_log(store.records(), store.checkpoints())
    return caught.value


def test_the_untouched_log_verifies_with_its_checkpoint(
    logged: tuple[SqlStore, Callable[[str], None]],
) -> None:
    store, _ = logged
    report = verify_log(store.records(), store.checkpoints())
    assert report.records == RECORDS
    assert report.covered == RECORDS


def test_an_edited_record_is_found_at_its_index(
    logged: tuple[SqlStore, Callable[[str], None]],
) -> None:
    store, sql = logged
    sql("UPDATE audit_records SET body = replace(body, 'a5.bin', 'evil.bin') WHERE idx = 5")
    error = broken(store)
    assert (error.code, error.index) == (EDITED, 5)
    assert error.exit_code == 1
    assert "audit record 5" in error.message


def test_an_edited_hash_column_is_found_at_its_index(
    logged: tuple[SqlStore, Callable[[str], None]],
) -> None:
    store, sql = logged
    sql("UPDATE audit_records SET hash = sha256(hash) WHERE idx = 7")
    error = broken(store)
    assert error.code in (EDITED, INSERTED)
    assert error.index == 7


def test_a_deleted_record_is_found_at_its_index(
    logged: tuple[SqlStore, Callable[[str], None]],
) -> None:
    store, sql = logged
    sql("DELETE FROM audit_records WHERE idx = 4")
    error = broken(store)
    assert (error.code, error.index) == (MISSING, 4)


def test_an_inserted_record_is_found_at_its_index(
    logged: tuple[SqlStore, Callable[[str], None]],
) -> None:
    """A forged record that links onto record 5 and claims index 6, with the rest moved up."""
    store, sql = logged
    records = list(store.records())
    forged = AuditRecord.seal(new(99), 6, records[5].hash)
    sql("UPDATE audit_records SET idx = -idx - 1 WHERE idx >= 6")
    sql("UPDATE audit_records SET idx = -idx WHERE idx < 0")  # 6.. are now 7..
    body = canonical(forged.body).decode()
    sql(
        "INSERT INTO audit_records (idx, time, request_id, event, key_name, grant_name, decision,"
        f" reason_code, body, prev_hash, hash) VALUES (6, '{forged.body['time']}', 'req-99',"
        f" 'sign', 'release', 'main', 'allow', 'signed', '{body}',"
        f" '\\x{forged.prev_hash.hex()}', '\\x{forged.hash.hex()}')"
    )
    error = broken(store)
    assert error.code == INSERTED
    assert error.index in (6, 7)


def test_two_swapped_records_are_found_at_the_first(
    logged: tuple[SqlStore, Callable[[str], None]],
) -> None:
    store, sql = logged
    sql("UPDATE audit_records SET idx = -1 WHERE idx = 3")
    sql("UPDATE audit_records SET idx = 3 WHERE idx = 8")
    sql("UPDATE audit_records SET idx = 8 WHERE idx = -1")
    error = broken(store)
    assert error.code == REORDERED
    assert error.index == 3


def test_a_truncated_tail_is_found_against_the_checkpoint(
    logged: tuple[SqlStore, Callable[[str], None]],
) -> None:
    store, sql = logged
    sql("DELETE FROM audit_records WHERE idx >= 9")
    error = broken(store)
    assert (error.code, error.index) == (TRUNCATED, 9)
    # Without the checkpoint a cut tail is a shorter honest log: the reason checkpoints leave.
    assert verify_log(store.records()).records == 9


def test_a_rechained_history_is_caught_by_a_checkpoint_kept_outside(
    logged: tuple[SqlStore, Callable[[str], None]], pg_url: str
) -> None:
    """The operator rewrites record 2 and re-chains everything after it, and replaces the
    stored checkpoints with one of their own key: only the copy kept outside shows it."""
    store, sql = logged
    kept = store.latest_checkpoint()
    assert kept is not None
    records = list(store.records())
    prev = records[1].hash
    for record in records[2:]:
        body = dict(record.body)
        if record.index == 2:
            body["artifacts"] = [{"name": "evil.bin", "digest_algorithm": "sha256",
                                  "digest": "ee" * 32}]  # fmt: skip
        text = canonical(body).decode()
        rechained = AuditRecord(record.index, body, prev, b"")
        digest = rechained.recomputed_hash()
        sql(
            f"UPDATE audit_records SET body = '{text}', prev_hash = '\\x{prev.hex()}',"
            f" hash = '\\x{digest.hex()}' WHERE idx = {record.index}"
        )
        prev = digest
    sql("DELETE FROM checkpoints")
    store.save_checkpoint(checkpoint_of(store, Ed25519NoteKey()))
    assert verify_log(store.records(), store.checkpoints()).records == RECORDS
    with pytest.raises(AuditBrokenError) as caught:
        verify_log(store.records(), [KeptCheckpoint("kept/checkpoint-12", kept)])
    assert caught.value.code == MISMATCH
    assert "history was rewritten" in caught.value.message


def test_the_kept_checkpoint_signature_is_what_makes_it_trusted(
    logged: tuple[SqlStore, Callable[[str], None]],
) -> None:
    """Control for the checkpoint test: the stored checkpoint verifies with the key that made
    it, and a note signed by another key does not."""
    store, _ = logged
    key = Ed25519NoteKey()
    stored = checkpoint_of(store, key)
    right = NoteVerifier.from_public_key(ORIGIN, key.public_key)
    assert verify_log(store.records(), [stored], note_verifier=right).signatures_verified == 1
    wrong = NoteVerifier.from_public_key(ORIGIN, Ed25519NoteKey().public_key)
    with pytest.raises(Exception) as caught:
        verify_log(store.records(), [stored], note_verifier=wrong)
    assert getattr(caught.value, "code", "") == "audit-checkpoint-signature"


# -- writers in separate processes -------------------------------------------------------

WRITER = """
import datetime as dt, sys
from sealgate.service.audit.records import NewRecord, format_time
from sealgate.service.store import StoreUnavailableError, open_store
url, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = open_store(url)
print("ready", flush=True)
sys.stdin.readline()
n = 0
while count < 0 or n < count:
    record = NewRecord(time=format_time(dt.datetime.now(dt.UTC)), request_id=f"{name}-{n}",
                       event="sign", decision="allow", reason_code="signed", key="k", grant="g")
    try:
        sealed = store.append(record, jti=("https://issuer", f"{name}-{n}"))
    except StoreUnavailableError as error:
        print("retry", error.message, flush=True)
        continue
    print(sealed.index, f"{name}-{n}", flush=True)
    n += 1
store.close()
"""


def start_writer(url: str, name: str, count: int) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, url, name, str(count)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line == "ready\n", process.stderr.read() if process.stderr else line
    return process


def committed(lines: str) -> dict[int, str]:
    """index -> request id, from a writer's output: what `append` returned to it."""
    found: dict[int, str] = {}
    for line in lines.splitlines():
        index, _, request = line.partition(" ")
        if index.isdigit():
            found[int(index)] = request
    return found


def check_one_chain(store: SqlStore, *writers: dict[int, str]) -> None:
    records = list(store.records())
    report = verify_log(records)
    assert report.records == len(records)
    assert [r.index for r in records] == list(range(len(records)))
    stored = {r.index: r.body["request_id"] for r in records}
    for seen in writers:
        for index, request in seen.items():
            assert stored.get(index) == request, f"committed record {index} lost or changed"
    claimed = [i for seen in writers for i in seen]
    assert len(claimed) == len(set(claimed)), "two writers were given the same index"


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
    process.communicate(timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_two_processes_appending_at_once_make_one_chain(
    backend: str, pg_url: str, tmp_path: Path
) -> None:
    url = pg_url if backend == "postgresql" else f"sqlite:///{tmp_path / 'audit.db'}"
    each = 120
    writers = [start_writer(url, name, each) for name in ("a", "b")]
    try:
        for writer in writers:
            assert writer.stdin is not None
            writer.stdin.write("go\n")
            writer.stdin.flush()
        outputs = [writer.communicate(timeout=120) for writer in writers]
    finally:
        for writer in writers:
            _stop(writer)
    for writer, (_, stderr) in zip(writers, outputs, strict=True):
        assert writer.returncode == 0, stderr
    seen = [committed(stdout) for stdout, _ in outputs]
    assert [len(s) for s in seen] == [each, each]
    # The writer lock, not the unique index, kept them apart: no append had to be retried.
    assert [line for stdout, _ in outputs for line in stdout.splitlines() if "retry" in line] == []
    store = open_store(url)
    try:
        assert store.size() == 2 * each
        check_one_chain(store, *seen)
        if backend == "postgresql":
            # Both really ran at once: their records interleave in the chain. (SQLite's busy
            # handler sleeps, so one process can take every turn: it is not fair, and not the
            # backend for several replicas.)
            owners = [r.body["request_id"][0] for r in store.records()]
            assert sum(1 for x, y in itertools.pairwise(owners) if x != y) > 1
    finally:
        store.close()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_a_writer_killed_mid_load_loses_no_committed_record_and_forks_nothing(
    backend: str, pg_url: str, tmp_path: Path
) -> None:
    url = pg_url if backend == "postgresql" else f"sqlite:///{tmp_path / 'audit.db'}"
    victim = start_writer(url, "victim", -1)
    survivor = start_writer(url, "survivor", 150)
    try:
        for writer in (victim, survivor):
            assert writer.stdin is not None
            writer.stdin.write("go\n")
            writer.stdin.flush()
        assert victim.stdout is not None
        # Let the victim commit a few dozen records, then kill it wherever it is.
        lines: list[str] = []
        while len(lines) < 40:
            line = victim.stdout.readline()
            assert line, "the victim writer stopped on its own"
            lines.append(line)
        os.kill(victim.pid, signal.SIGKILL)
        rest, _ = victim.communicate(timeout=30)
        assert victim.returncode == -signal.SIGKILL
        survivor_out, survivor_err = survivor.communicate(timeout=120)
    finally:
        _stop(victim)
        _stop(survivor)
    assert survivor.returncode == 0, survivor_err
    victim_seen = committed("".join(lines) + rest)
    survivor_seen = committed(survivor_out)
    assert len(survivor_seen) == 150
    store = open_store(url)
    try:
        check_one_chain(store, victim_seen, survivor_seen)
        # The chain goes on after the kill: a new append links onto the last record.
        before = store.size()
        after = store.append(new(1000))
        assert after.index == before
        check_one_chain(store, victim_seen, survivor_seen)
        # At most the one append in flight at the kill may have committed unreported.
        assert before - len(victim_seen) - len(survivor_seen) in (0, 1)
    finally:
        store.close()


def test_time_budget_of_the_advisory_lock_is_a_retryable_503(
    pg_url: str, postgres: Postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that holds the append lock (a stuck replica) makes others answer 503 in time."""
    from sealgate.service.store import StoreUnavailableError, sql

    monkeypatch.setattr(sql, "LOCK_TIMEOUT_MS", 300)
    store = open_store(pg_url)
    database = pg_url.rsplit("/", 1)[1]
    try:
        with postgres.connect(database) as holder:
            holder.autocommit = False
            holder.execute(b"SELECT pg_advisory_xact_lock(%d)" % sql.APPEND_LOCK)
            with pytest.raises(StoreUnavailableError) as caught:
                store.append(new(0), jti=("https://issuer", "held"))
            assert caught.value.status == 503
            assert "lock timeout" in caught.value.message
            holder.rollback()
        # Control: with the lock free the same token goes through, once.
        assert store.append(new(0), jti=("https://issuer", "held")).index == 0
        assert store.size() == 1
    finally:
        store.close()


def test_a_replica_stuck_inside_an_append_cannot_block_the_others_for_ever(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session that took the append lock and went silent (a frozen replica whose socket
    stays open) is ended by the server, and the other writers go on."""
    from sealgate.service.store import StoreUnavailableError, sql

    monkeypatch.setattr(sql, "IDLE_TIMEOUT_MS", 500)
    monkeypatch.setattr(sql, "LOCK_TIMEOUT_MS", 300)
    stuck = open_store(pg_url)
    other = open_store(pg_url)
    try:
        frozen = stuck.engine.connect()
        frozen.begin()
        frozen.execute(sql._LOCK_APPENDS)  # ... and then nothing more from this replica
        with pytest.raises(StoreUnavailableError, match="lock timeout"):
            other.append(new(0), jti=("https://issuer", "waiting"))
        deadline = time.monotonic() + 20
        while True:
            try:
                record = other.append(new(0), jti=("https://issuer", "waiting"))
                break
            except StoreUnavailableError:
                assert time.monotonic() < deadline, "the stuck session kept the lock"
                time.sleep(0.1)
        assert record.index == 0
        with pytest.raises(Exception, match=r"idle-in-transaction|terminat|closed"):
            frozen.execute(sa.text("SELECT 1"))
        frozen.invalidate()
        frozen.close()
    finally:
        stuck.close()
        other.close()


def test_a_database_restart_costs_one_retryable_503_and_the_chain_goes_on() -> None:
    """The server goes away under an open store (its pooled connections die with it): appends
    answer 503 while it is down, and after the restart at most the first one does."""
    from sealgate.service.store import StoreUnavailableError
    from tests.components.postgres import start_postgres

    with start_postgres() as cluster:
        url = cluster.url(cluster.create_database())
        store = open_store(url)
        try:
            for n in range(3):
                store.append(new(n))
            cluster.stop()
            with pytest.raises(StoreUnavailableError) as caught:
                store.append(new(3), jti=("https://issuer", "during"))
            assert caught.value.status == 503
            assert "safe to retry" in caught.value.message
            cluster.start()
            failures = 0
            for _ in range(3):
                try:
                    record = store.append(new(3), jti=("https://issuer", "during"))
                    break
                except StoreUnavailableError:
                    failures += 1
            assert failures <= 1
            assert record.index == 3
            check_one_chain(store)
        finally:
            store.close()
