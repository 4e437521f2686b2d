"""The service's store on both backends: one gap-free chain, replays refused with nothing stored,
the jti and its record committed together, and databases that are not ours refused by name."""

from __future__ import annotations

import datetime as dt
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from sealgate.service.audit.records import GENESIS, AuditRecord, NewRecord, format_time
from sealgate.service.errors import AuditIntegrityError, AuthError, ServiceConfigError
from sealgate.service.store import (
    ReplayedTokenError,
    SqlStore,
    StoredCheckpoint,
    StoredSignature,
    StoreUnavailableError,
    open_store,
    sql,
)

NOW = dt.datetime.now(dt.UTC)
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.component)]


def new(n: int = 0, **fields: Any) -> NewRecord:
    values: dict[str, Any] = {
        "time": format_time(NOW),
        "request_id": f"req-{n}",
        "event": "sign",
        "decision": "allow",
        "reason_code": "signed",
        "key": "release",
        "grant": "main",
        "artifacts": ({"name": f"a{n}.bin", "digest_algorithm": "sha256", "digest": "ab" * 32},),
    }
    values.update(fields)
    return NewRecord(**values)


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(store_url: str) -> Iterator[SqlStore]:
    opened = open_store(store_url)
    try:
        yield opened
    finally:
        opened.close()


def assert_chain(records: list[AuditRecord]) -> None:
    """Indexes 0..n-1 with no gap, each record chained to the one before and hashing right."""
    assert [r.index for r in records] == list(range(len(records)))
    previous = GENESIS
    for record in records:
        assert record.body["index"] == record.index
        assert record.prev_hash == previous
        assert record.recomputed_hash() == record.hash
        previous = record.hash


def test_appends_make_one_chain_read_back_in_pages(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sql, "PAGE", 3)  # several pages without thousands of records
    sealed = [store.append(new(n)) for n in range(10)]
    stored = list(store.records())
    assert stored == sealed
    assert_chain(stored)
    assert store.size() == 10
    assert [r.index for r in store.records(4, 9)] == [4, 5, 6, 7, 8]
    assert list(store.records(10)) == []
    assert store.record_hashes(2, 5) == [r.hash for r in sealed[2:5]]
    assert stored[3].body["artifacts"] == [dict(new(3).artifacts[0])]


def test_eight_threads_appending_get_gap_free_indexes_and_one_chain(store: SqlStore) -> None:
    threads, each = 8, 15
    indexes: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def writer(t: int) -> None:
        start.wait()
        for n in range(each):
            try:
                record = store.append(new(t * 1000 + n), jti=("https://issuer", f"{t}-{n}"))
            except BaseException as error:
                errors.append(error)
                return
            with lock:
                indexes.append(record.index)

    workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    assert sorted(indexes) == list(range(threads * each))
    assert_chain(list(store.records()))


def test_a_replayed_jti_is_refused_and_stores_nothing(store: SqlStore) -> None:
    store.append(new(0), jti=("https://issuer", "jti-1"), expires_at=NOW)
    assert store.jti_used("https://issuer", "jti-1")
    with pytest.raises(ReplayedTokenError) as caught:
        store.append(
            new(1),
            jti=("https://issuer", "jti-1"),
            signatures=[StoredSignature("x.bin", "sha256", "cd" * 32, b"p7s")],
        )
    assert caught.value.status == 401
    assert caught.value.code == "token-replayed"
    assert "jti 'jti-1' was already used" in caught.value.message
    assert store.size() == 1
    assert store.signatures(1) == []
    # Controls: the same jti from another issuer is another token; a fresh jti goes through.
    assert store.append(new(2), jti=("https://other", "jti-1")).index == 1
    assert store.append(new(3), jti=("https://issuer", "jti-2")).index == 2
    assert not store.jti_used("https://issuer", "jti-3")


def test_the_jti_and_the_record_roll_back_together_when_the_append_fails_after_the_jti(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.append(new(0))

    def broken_seal(*args: Any, **kwargs: Any) -> tuple[AuditRecord, str]:
        raise RuntimeError("injected after the jti insert")

    with monkeypatch.context() as patch:
        patch.setattr(sql, "_seal", broken_seal)
        with pytest.raises(RuntimeError, match="injected"):
            store.append(new(1), jti=("https://issuer", "jti-a"))
    assert not store.jti_used("https://issuer", "jti-a")
    assert store.size() == 1
    # A failure in the database itself after the record (a signature it refuses): same.
    bad = StoredSignature("x.bin", "sha256", "cd" * 32, None)  # type: ignore[arg-type]
    with pytest.raises(StoreUnavailableError) as caught:
        store.append(new(2), jti=("https://issuer", "jti-b"), signatures=[bad])
    assert caught.value.status == 503
    assert caught.value.code == "store-unavailable"
    assert not store.jti_used("https://issuer", "jti-b")
    assert store.size() == 1
    # Control: the token that failed is not burnt; it can be used once now.
    assert store.append(new(3), jti=("https://issuer", "jti-a")).index == 1
    assert_chain(list(store.records()))


def queued_appends(
    store: SqlStore, jobs: list[dict[str, Any]]
) -> tuple[list[AuditRecord | BaseException], int]:
    """Run `jobs` (append keyword arguments) from one thread each while the write turn is
    held, so they all queue, then let them go: their outcomes, and the commits it took."""
    commits = [0]

    def count(_connection: Any) -> None:
        commits[0] += 1

    sa.event.listen(store.engine, "commit", count)
    outcomes: list[AuditRecord | BaseException] = [RuntimeError("not run")] * len(jobs)

    def run(i: int) -> None:
        try:
            outcomes[i] = store.append(**jobs[i])
        except BaseException as error:
            outcomes[i] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    with store._turn:
        store._writing = True  # as if another thread were writing
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while len(store._queue) < len(jobs) and time.monotonic() < deadline:
            time.sleep(0.005)
        assert len(store._queue) == len(jobs)
    finally:
        with store._turn:
            store._writing = False
            store._turn.notify_all()
    for thread in threads:
        thread.join(timeout=30)
    sa.event.remove(store.engine, "commit", count)
    return outcomes, commits[0]


def test_queued_appends_commit_together_and_a_replay_among_them_sinks_no_other(
    store: SqlStore,
) -> None:
    jobs: list[dict[str, Any]] = [{"new": new(n), "jti": ("iss", f"j{n}")} for n in range(10)]
    jobs.append({"new": new(10), "jti": ("iss", "j3")})  # a replay of a queued token
    outcomes, commits = queued_appends(store, jobs)
    assert commits == 1  # one transaction (one fsync) for all eleven
    records = [o for o in outcomes if isinstance(o, AuditRecord)]
    refused = [o for o in outcomes if not isinstance(o, AuditRecord)]
    assert len(records) == 10
    assert len(refused) == 1
    assert isinstance(refused[0], ReplayedTokenError)
    assert store.size() == 10
    assert_chain(list(store.records()))
    assert {r.body["request_id"] for r in records} == {
        r.body["request_id"] for r in store.records()
    }


def test_a_queued_append_the_database_refuses_sinks_no_other(store: SqlStore) -> None:
    bad = StoredSignature("x.bin", "sha256", "cd" * 32, None)  # type: ignore[arg-type]
    jobs: list[dict[str, Any]] = [{"new": new(n), "jti": ("iss", f"j{n}")} for n in range(6)]
    jobs[2]["signatures"] = [bad]
    outcomes, _ = queued_appends(store, jobs)
    failed = [i for i, o in enumerate(outcomes) if not isinstance(o, AuditRecord)]
    assert failed == [2]
    error = outcomes[2]
    assert isinstance(error, StoreUnavailableError)
    assert "refused the write" in error.message
    assert not store.jti_used("iss", "j2")
    assert all(store.jti_used("iss", f"j{n}") for n in (0, 1, 3, 4, 5))
    assert store.size() == 5
    assert_chain(list(store.records()))


def test_an_append_that_gets_no_write_turn_in_time_is_withdrawn_as_a_503(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sql, "LOCK_TIMEOUT_MS", 200)
    with store._turn:
        store._writing = True  # a writer that never finishes
    try:
        with pytest.raises(StoreUnavailableError) as caught:
            store.append(new(0), jti=("iss", "late"))
        assert "no write turn within 200 ms" in caught.value.message
        assert store._queue == []  # withdrawn: no later batch writes it behind the caller's back
    finally:
        with store._turn:
            store._writing = False
            store._turn.notify_all()
    assert store.size() == 0
    assert not store.jti_used("iss", "late")
    assert store.append(new(0), jti=("iss", "late")).index == 0  # control


def test_signatures_are_kept_with_their_record_in_order(store: SqlStore) -> None:
    kept = [StoredSignature(f"f{i}", "sha256", f"{i:02x}" * 32, bytes([i]) * 40) for i in range(3)]
    record = store.append(new(0), signatures=kept)
    store.append(new(1))
    assert store.signatures(record.index) == kept
    assert store.signatures(1) == []


def test_count_recent_counts_allowed_requests_of_one_grant_of_one_key_since_a_time(
    store: SqlStore,
) -> None:
    hour_ago, now = NOW - dt.timedelta(hours=1), NOW
    store.append(new(0, time=format_time(hour_ago)))
    store.append(new(1, time=format_time(now)))
    store.append(new(2, time=format_time(now)))
    store.append(new(3, decision="deny", reason_code="no-grant"))
    store.append(new(4, grant="nightly"))
    store.append(new(5, key="other"))
    since = now - dt.timedelta(minutes=1)
    assert store.count_recent("release", "main", since) == 2
    assert store.count_recent("release", "main", hour_ago) == 3  # the boundary is included
    assert store.count_recent("release", "nightly", since) == 1
    assert store.count_recent("other", "main", since) == 1
    assert store.count_recent("release", "main", now + dt.timedelta(seconds=1)) == 0
    # A non-UTC `since` means the same moment.
    local = since.astimezone(dt.timezone(dt.timedelta(hours=5)))
    assert store.count_recent("release", "main", local) == 2


def test_a_record_time_in_another_format_is_refused_so_rate_limits_cannot_be_skewed(
    store: SqlStore,
) -> None:
    with pytest.raises(ValueError, match="format_time"):
        store.append(new(0, time="9999-12-31 23:59:59"))
    assert store.size() == 0


def test_request_text_with_nul_or_quotes_is_stored_and_kept_apart(store: SqlStore) -> None:
    """PostgreSQL text cannot hold NUL: a key, grant, artifact name or jti with one (all of them
    reach the store from a request) is stored anyway, and never equals another value."""
    odd = "a\x00b"
    quoted = '"a\\u0000b"'  # what the escaped form of `odd` looks like, as a plain value
    kept = [StoredSignature(odd, "sha256", "ab" * 32, b"p7s"),
            StoredSignature(quoted, "sha256", "ab" * 32, b"p7s")]  # fmt: skip
    first = store.append(new(0, key=odd, grant=odd), jti=("iss", odd), signatures=kept)
    store.append(new(1, key=quoted, grant=quoted), jti=("iss", quoted))
    assert store.signatures(first.index) == kept
    since = NOW - dt.timedelta(minutes=1)
    assert store.count_recent(odd, odd, since) == 1
    assert store.count_recent(quoted, quoted, since) == 1
    assert store.count_recent("ab", "ab", since) == 0
    assert store.jti_used("iss", odd)
    assert store.jti_used("iss", quoted)
    assert not store.jti_used("iss", "ab")
    with pytest.raises(ReplayedTokenError):
        store.append(new(2), jti=("iss", odd))
    assert [r.body["key"] for r in store.records()] == [odd, quoted]
    assert_chain(list(store.records()))


def test_checkpoints_round_trip(store: SqlStore) -> None:
    assert store.latest_checkpoint() is None
    assert store.checkpoints() == []
    first = StoredCheckpoint(3, b"\x01" * 32, "origin\n3\nroot\n\n— sig\n", None, format_time(NOW))
    second = StoredCheckpoint(7, b"\x02" * 32, "origin\n7\n", b"\x30\x03tsr", format_time(NOW))
    store.save_checkpoint(first)
    store.save_checkpoint(second)
    assert store.latest_checkpoint() == second
    assert store.checkpoints() == [first, second]


def test_used_token_ids_are_purged_only_well_past_their_expiry(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sql, "PURGE_EVERY", 4)
    now = dt.datetime.now(dt.UTC)  # not the module's NOW: a long run imports it minutes earlier
    long_ago = now - dt.timedelta(hours=1)
    just_expired = now - dt.timedelta(seconds=40)  # past exp + leeway, but within TOKEN_KEEP
    store.append(new(0), jti=("iss", "old"), expires_at=long_ago)
    store.append(new(1), jti=("iss", "recent"), expires_at=just_expired)
    store.append(new(2), jti=("iss", "forever"))
    assert store.jti_used("iss", "old")
    store.append(new(3), jti=("iss", "live"), expires_at=now + dt.timedelta(minutes=5))
    assert not store.jti_used("iss", "old")
    assert store.jti_used("iss", "recent")
    assert store.jti_used("iss", "forever")
    assert store.jti_used("iss", "live")


def test_an_over_long_token_id_is_refused_before_the_database(store: SqlStore) -> None:
    with pytest.raises(AuthError) as caught:
        store.append(new(0), jti=("https://issuer", "j" * 5000))
    assert caught.value.code == "bad-token"
    assert "jti is over" in caught.value.message
    assert store.size() == 0


def test_opening_twice_migrates_once_and_keeps_the_records(store_url: str) -> None:
    first = open_store(store_url)
    try:
        record = first.append(new(0))
    finally:
        first.close()
    again = open_store(store_url)
    try:
        assert list(again.records()) == [record]
        with again.engine.connect() as connection:
            versions = connection.execute(sa.text("SELECT version_num FROM alembic_version"))
            assert [row[0] for row in versions] == ["0001"]
    finally:
        again.close()


def test_the_migrations_build_exactly_the_tables_the_queries_use(store: SqlStore) -> None:
    """schema.py (what the queries name) and the Alembic versions (what open_store creates)
    are written twice; Alembic's own comparison holds them equal."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from sealgate.service.store import schema

    with store.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), schema.metadata)
    assert differences == []


def test_replicas_starting_together_on_an_empty_database_migrate_it_once(store_url: str) -> None:
    stores: list[SqlStore] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def opener() -> None:
        start.wait()
        try:
            stores.append(open_store(store_url))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=opener) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert errors == []
        assert len(stores) == 4
        for n, opened in enumerate(stores):
            opened.append(new(n))
        assert_chain(list(stores[0].records()))
        with stores[0].engine.connect() as connection:
            versions = connection.execute(sa.text("SELECT version_num FROM alembic_version"))
            assert [row[0] for row in versions] == ["0001"]
    finally:
        for opened in stores:
            opened.close()


def test_a_reader_opening_without_create_changes_nothing_and_refuses_an_empty_database(
    store_url: str, tmp_path: Path
) -> None:
    """`audit verify` must not make (and then verify) an empty log where a typo points."""
    with pytest.raises(ServiceConfigError) as caught:
        open_store(store_url, create=False)
    assert caught.value.code == "store-empty"
    assert caught.value.exit_code == 2
    assert "reading a log never makes one" in caught.value.message
    assert not (tmp_path / "audit.db").exists()
    writer = open_store(store_url)
    try:
        record = writer.append(new(0))
    finally:
        writer.close()
    reader = open_store(store_url, create=False)
    try:
        assert list(reader.records()) == [record]
    finally:
        reader.close()
    engine = sa.create_engine(store_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = '0000_older'"))
    engine.dispose()
    with pytest.raises(ServiceConfigError) as other:
        open_store(store_url, create=False)
    assert other.value.code == "store-foreign-schema"
    assert "schema version 0000_older" in other.value.message


def test_a_database_holding_someone_elses_tables_is_refused_by_name(store_url: str) -> None:
    engine = sa.create_engine(store_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE invoices (id INTEGER PRIMARY KEY)"))
    engine.dispose()
    with pytest.raises(ServiceConfigError) as caught:
        open_store(store_url)
    assert caught.value.code == "store-foreign-schema"
    assert caught.value.exit_code == 2
    assert "invoices" in caught.value.message
    assert "not a Sealgate store" in caught.value.message


def test_a_schema_version_this_sealgate_does_not_know_is_refused(store_url: str) -> None:
    open_store(store_url).close()
    engine = sa.create_engine(store_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = '9999_future'"))
    engine.dispose()
    with pytest.raises(ServiceConfigError) as caught:
        open_store(store_url)
    assert caught.value.code == "store-foreign-schema"
    assert "schema version is not one this Sealgate knows" in caught.value.message


def test_a_stored_body_that_is_not_json_is_an_integrity_error_naming_its_index(
    store: SqlStore, store_url: str
) -> None:
    for n in range(3):
        store.append(new(n))
    with store.engine.begin() as connection:
        connection.execute(sa.text("UPDATE audit_records SET body = 'not json' WHERE idx = 1"))
    with pytest.raises(AuditIntegrityError) as caught:
        list(store.records())
    assert caught.value.code == "audit-record-unreadable"
    assert caught.value.message.startswith("audit record 1:")


# -- SQLite only ---------------------------------------------------------------------------


def test_a_file_that_is_not_sqlite_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    path.write_bytes(b"this is a text file, not an SQLite database\n" * 100)
    with pytest.raises(ServiceConfigError) as caught:
        open_store(f"sqlite:///{path}")
    assert caught.value.code == "store-not-a-database"
    assert caught.value.exit_code == 2
    assert str(path) in caught.value.message
    assert path.read_bytes().startswith(b"this is a text file")  # untouched


def test_a_folder_or_fifo_as_the_database_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.db"
    os.mkfifo(fifo)
    for path in (tmp_path, fifo):
        with pytest.raises(ServiceConfigError) as caught:
            open_store(f"sqlite:///{path}")
        assert caught.value.code == "store-not-a-database"
        assert "not a regular file" in caught.value.message
    with pytest.raises(ServiceConfigError) as missing:
        open_store(f"sqlite:///{tmp_path / 'nowhere' / 'audit.db'}")
    assert missing.value.code == "bad-store-url"
    assert "does not exist" in missing.value.message


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("sqlite:///:memory:", "in-memory"),
        ("sqlite://", "in-memory"),
        ("sqlite:///file:x?mode=memory&uri=true", "in-memory"),
        ("mysql://root@localhost/db", "'mysql' is not supported"),
        ("postgresql+psycopg2://u@localhost/db", "'postgresql+psycopg2' is not supported"),
        ("not a url", "not a database URL"),
    ],
)
def test_urls_the_store_cannot_keep_an_audit_log_in_are_refused(url: str, says: str) -> None:
    with pytest.raises(ServiceConfigError) as caught:
        open_store(url)
    assert caught.value.code == "bad-store-url"
    assert caught.value.exit_code == 2
    assert says in caught.value.message


def test_sqlite_options_synchronous_is_the_one_setting(tmp_path: Path) -> None:
    with pytest.raises(ServiceConfigError, match="unknown option 'journal_mode'"):
        open_store(f"sqlite:///{tmp_path / 'a.db'}?journal_mode=delete")
    with pytest.raises(ServiceConfigError, match="synchronous must be full or normal"):
        open_store(f"sqlite:///{tmp_path / 'a.db'}?synchronous=off")
    for setting, level in (("", 2), ("?synchronous=normal", 1), ("?synchronous=FULL", 2)):
        store = open_store(f"sqlite:///{tmp_path / 'a.db'}{setting}")
        try:
            with store.engine.connect() as connection:
                assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == level
                assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        finally:
            store.close()


def test_a_writer_that_cannot_get_the_lock_is_a_retryable_503(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sql, "LOCK_TIMEOUT_MS", 200)
    path = tmp_path / "audit.db"
    store = open_store(f"sqlite:///{path}")
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailableError) as caught:
            store.append(new(0), jti=("iss", "held"))
        assert caught.value.exit_code == 3
        assert "locked" in caught.value.message
        assert "safe to retry" in caught.value.message
        holder.execute("ROLLBACK")
        # Control: once the lock is free the same request goes through.
        assert store.append(new(0), jti=("iss", "held")).index == 0
        assert store.size() == 1  # readers were never blocked by the held lock either
    finally:
        holder.close()
        store.close()


def test_a_closed_store_refuses_work_as_unavailable(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    store.close()
    with pytest.raises(StoreUnavailableError, match="closed"):
        store.append(new(0))


# -- PostgreSQL only -----------------------------------------------------------------------


def test_an_unreachable_postgresql_is_unavailable_and_the_password_is_not_shown() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(StoreUnavailableError) as caught:
        open_store(f"postgresql://sealgate:hunter2secret@127.0.0.1:{port}/audit")
    assert caught.value.exit_code == 3
    assert caught.value.code == "store-unavailable"
    assert f"127.0.0.1:{port}/audit" in caught.value.message
    assert "hunter2secret" not in caught.value.message
    assert "***" in caught.value.message
