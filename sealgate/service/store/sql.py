"""The one Store implementation: SQLAlchemy Core over SQLite (WAL) or PostgreSQL (psycopg 3).

Appends are serialised by the database itself (SQLite `BEGIN IMMEDIATE`, PostgreSQL
`pg_advisory_xact_lock`), so every thread and every replica extends one chain.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, overload

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import event, exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Engine, make_url

from sealgate.service.audit.records import GENESIS, AuditRecord, NewRecord, canonical
from sealgate.service.errors import AuditIntegrityError, AuthError, ServiceConfigError
from sealgate.service.store import schema
from sealgate.service.store.base import (
    ReplayedTokenError,
    Store,
    StoredCheckpoint,
    StoredSignature,
    StoreUnavailableError,
)

MIGRATIONS = Path(__file__).with_name("migrations")
#: pg_advisory_xact_lock keys: one for appends, one for migrations ("SGAPPEND", "SGSCHEMA").
APPEND_LOCK = 0x5347415050454E44
SCHEMA_LOCK = 0x5347534348454D41
#: How long a writer waits for the single-writer lock before answering 503.
LOCK_TIMEOUT_MS = 10_000
CONNECT_TIMEOUT_S = 5
#: PostgreSQL: no statement runs longer, and no session sits in a transaction idle longer.
STATEMENT_TIMEOUT_MS = 30_000
IDLE_TIMEOUT_MS = 5_000
#: Used token ids are kept this long past their `exp` (the auth leeway is at most 30 s).
TOKEN_KEEP = dt.timedelta(minutes=10)
#: Every this many appends, the append also drops used token ids past TOKEN_KEEP.
PURGE_EVERY = 1024
#: A token id longer than this is refused (a unique index cannot hold it on PostgreSQL).
MAX_TOKEN_ID = 1024
PAGE = 500
#: Appends waiting for the write turn commit together, up to this many per transaction.
MAX_BATCH = 64
SYNCHRONOUS = ("full", "normal")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

T = TypeVar("T")
_MIGRATING = threading.Lock()

# The append's statements, built once (SQLAlchemy caches their compiled forms).
_LOCK_APPENDS = sa.select(sa.func.pg_advisory_xact_lock(APPEND_LOCK))
_LAST_RECORD = (
    sa.select(schema.audit_records.c.idx, schema.audit_records.c.hash)
    .order_by(schema.audit_records.c.idx.desc())
    .limit(1)
)
_INSERT_RECORD = schema.audit_records.insert()
_INSERT_SIGNATURE = schema.signatures.insert()
# A used (issuer, jti) inserts nothing and returns no row (rowcount is not reliable here).
_INSERT_TOKEN = {
    "sqlite": sqlite.insert(schema.used_tokens)
    .on_conflict_do_nothing()
    .returning(schema.used_tokens.c.issuer, schema.used_tokens.c.jti),
    "postgresql": postgresql.insert(schema.used_tokens)
    .on_conflict_do_nothing()
    .returning(schema.used_tokens.c.issuer, schema.used_tokens.c.jti),
}


class _RefusedError(StoreUnavailableError):
    """The database answered but refused this write (a constraint, a value it cannot hold)."""


@dataclass(eq=False)
class _Job:
    """One append waiting for (or given) its write turn, and its outcome."""

    new: NewRecord
    jti: tuple[str, str] | None
    expires_at: dt.datetime | None
    signatures: tuple[StoredSignature, ...]
    done: threading.Event = field(default_factory=threading.Event)
    record: AuditRecord | None = None
    error: BaseException | None = None

    def finish(
        self, *, record: AuditRecord | None = None, error: BaseException | None = None
    ) -> None:
        self.record, self.error = record, error
        self.done.set()


def open_store(url: str, *, create: bool = True) -> SqlStore:
    """Open and migrate `sqlite:///PATH[?synchronous=full|normal]` or `postgresql://...`;
    with `create=False` (readers) nothing is made or migrated: an empty database is refused."""
    try:
        parsed = make_url(url)
    except (exc.ArgumentError, ValueError) as error:
        raise ServiceConfigError(
            f"store URL: not a database URL ({error})", code="bad-store-url", field="db"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _open_sqlite(parsed, create)
    if backend in ("postgresql", "postgres"):
        return _open_postgres(parsed, create)
    raise ServiceConfigError(
        f"store URL {parsed.render_as_string(hide_password=True)}: the scheme {backend!r} is not "
        "supported (sqlite:///PATH or postgresql://...)",
        code="bad-store-url",
        field="db",
    )


def _open_sqlite(url: URL, create: bool) -> SqlStore:
    if url.drivername not in ("sqlite", "sqlite+pysqlite"):
        raise ServiceConfigError(
            f"store URL {url}: use sqlite:///PATH (driver {url.drivername!r} is not supported)",
            code="bad-store-url",
            field="db",
        )
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        raise ServiceConfigError(
            f"store URL {url}: an in-memory database loses the audit log at exit; "
            "give a file (sqlite:///PATH)",
            code="bad-store-url",
            field="db",
        )
    query = dict(url.query)
    synchronous = str(query.pop("synchronous", "full")).lower()
    if synchronous not in SYNCHRONOUS:
        raise ServiceConfigError(
            f"store URL {url}: synchronous must be full or normal, not {synchronous!r}",
            code="bad-store-url",
            field="db",
        )
    if query:
        raise ServiceConfigError(
            f"store URL {url}: unknown option {sorted(query)[0]!r} (only synchronous)",
            code="bad-store-url",
            field="db",
        )
    path = Path(database)
    try:
        info = path.stat()
    except FileNotFoundError:
        if not create:
            raise ServiceConfigError(
                f"store {path}: no such file (reading a log never makes one)",
                code="store-empty",
                field="db",
            ) from None
        if not path.parent.is_dir():
            raise ServiceConfigError(
                f"store {path}: the folder {path.parent} does not exist",
                code="bad-store-url",
                field="db",
            ) from None
    except OSError as error:
        raise ServiceConfigError(
            f"store {path}: cannot be read ({error.strerror})", code="bad-store-url", field="db"
        ) from None
    else:
        if not stat.S_ISREG(info.st_mode):
            raise ServiceConfigError(
                f"store {path}: not a regular file", code="store-not-a-database", field="db"
            )
    engine = sa.create_engine(
        url.set(drivername="sqlite+pysqlite", query={}),
        connect_args={"check_same_thread": False, "timeout": LOCK_TIMEOUT_MS / 1000},
        pool_size=16,
        max_overflow=48,
        pool_timeout=LOCK_TIMEOUT_MS / 1000,
    )

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite's own transaction handling would BEGIN (deferred) on its own; ours says which.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {LOCK_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute(f"PRAGMA synchronous = {synchronous.upper()}")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        writer = connection.get_execution_options().get("sealgate_writer", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

    return SqlStore(engine, str(path), synchronous=synchronous, create=create)


def _open_postgres(url: URL, create: bool) -> SqlStore:
    if url.drivername not in ("postgresql", "postgres", "postgresql+psycopg"):
        raise ServiceConfigError(
            f"store URL {url}: use postgresql://... (psycopg 3); "
            f"driver {url.drivername!r} is not supported",
            code="bad-store-url",
            field="db",
        )
    engine = sa.create_engine(
        url.set(drivername="postgresql+psycopg"),
        connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
        pool_size=16,
        max_overflow=48,
        pool_timeout=LOCK_TIMEOUT_MS / 1000,
    )

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET lock_timeout = {LOCK_TIMEOUT_MS}")
            cursor.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
            # A replica that stops mid-transaction without closing its socket (a partition,
            # a frozen VM) would hold the append lock until TCP gives up: the server ends it.
            cursor.execute(f"SET idle_in_transaction_session_timeout = {IDLE_TIMEOUT_MS}")
        dbapi_connection.commit()

    return SqlStore(engine, url.render_as_string(hide_password=True), create=create)


class SqlStore(Store):
    """The service's state in one SQL database; safe to share between threads (a pool)."""

    def __init__(
        self, engine: Engine, where: str, *, synchronous: str | None = None, create: bool = True
    ) -> None:
        self.engine = engine
        self.where = where
        self.synchronous = synchronous
        self.dialect = engine.dialect.name
        self._closed = threading.Event()
        # Threads of one process queue here (a quick hand-over) rather than in SQLite's busy
        # handler, which sleeps; the database lock still orders the processes.
        self._turn = threading.Condition()
        self._writing = False
        self._queue: list[_Job] = []
        self._insert_token = _INSERT_TOKEN[self.dialect]
        try:
            self._migrate(create)
        except BaseException:
            engine.dispose()
            raise

    # -- opening -----------------------------------------------------------------------------

    def _migrate(self, create: bool) -> None:
        """Bring the schema to head under the writer lock (replicas may start together), or,
        without `create`, only check that it is there and at head."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        try:
            with self._write() if create else self._read() as connection:
                if self.dialect == "postgresql":
                    connection.execute(sa.select(sa.func.pg_advisory_xact_lock(SCHEMA_LOCK)))
                tables = set(sa.inspect(connection).get_table_names())
                if tables and "alembic_version" not in tables:
                    raise ServiceConfigError(
                        f"store {self.where}: holds tables that are not a Sealgate store "
                        f"({', '.join(sorted(tables)[:5])}); give an empty or Sealgate database",
                        code="store-foreign-schema",
                        field="db",
                    )
                if not create:
                    self._check_head(connection, config, tables)
                    return
                config.attributes["connection"] = connection
                with _MIGRATING:  # Alembic keeps its running context in module globals
                    command.upgrade(config, "head")
        except CommandError as error:
            raise ServiceConfigError(
                f"store {self.where}: its schema version is not one this Sealgate knows ({error})",
                code="store-foreign-schema",
                field="db",
            ) from None
        except exc.OperationalError as error:
            raise self._unavailable(error) from None
        except exc.DatabaseError as error:
            raise ServiceConfigError(
                f"store {self.where}: not a database this Sealgate can use ({_reason(error)})",
                code="store-not-a-database",
                field="db",
            ) from None

    def _check_head(self, connection: Connection, config: Config, tables: set[str]) -> None:
        if "alembic_version" not in tables:
            raise ServiceConfigError(
                f"store {self.where}: holds no Sealgate store (reading a log never makes one)",
                code="store-empty",
                field="db",
            )
        head = ScriptDirectory.from_config(config).get_current_head()
        current = MigrationContext.configure(connection).get_current_revision()
        if current != head:
            raise ServiceConfigError(
                f"store {self.where}: schema version {current}, this Sealgate reads {head} "
                "(the service migrates it when it opens the store)",
                code="store-foreign-schema",
                field="db",
            )

    # -- transactions ------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """One write transaction: `BEGIN IMMEDIATE` on SQLite (the writer lock at once)."""
        with self.engine.connect() as connection:
            connection.execution_options(sealgate_writer=True)
            with connection.begin():
                yield connection

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as connection, connection.begin():
            yield connection

    def _unavailable(self, error: Exception) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"store {self.where}: unavailable ({_reason(error)}); safe to retry", field="db"
        )

    def _guard(self, work: Callable[[], T]) -> T:
        """Run `work`, mapping the database's failures to a retryable 503."""
        if self._closed.is_set():
            raise StoreUnavailableError(f"store {self.where}: closed", field="db")
        try:
            return work()
        except (exc.OperationalError, exc.InterfaceError, exc.TimeoutError) as error:
            raise self._unavailable(error) from None
        except exc.DBAPIError as error:
            raise _RefusedError(
                f"store {self.where}: refused the write ({_reason(error)}); safe to retry",
                field="db",
            ) from None

    # -- the Store interface -----------------------------------------------------------------

    def append(
        self,
        new: NewRecord,
        *,
        jti: tuple[str, str] | None = None,
        expires_at: dt.datetime | None = None,
        signatures: Sequence[StoredSignature] = (),
    ) -> AuditRecord:
        _check_time(new.time)
        if jti is not None and len(jti[0]) + len(jti[1]) > MAX_TOKEN_ID:
            raise AuthError(
                f"token from {jti[0][:100]!r}: its jti is over {MAX_TOKEN_ID} characters",
                code="bad-token",
                field="jti",
            )
        job = _Job(new, jti, expires_at, tuple(signatures))
        deadline = time.monotonic() + LOCK_TIMEOUT_MS / 1000
        batch: list[_Job] | None = None
        with self._turn:
            self._queue.append(job)
            while self._writing and not job.done.is_set():
                left = deadline - time.monotonic()
                if left <= 0 and job in self._queue:  # nobody took it: nothing was written
                    self._queue.remove(job)
                    raise StoreUnavailableError(
                        f"store {self.where}: unavailable (no write turn within "
                        f"{LOCK_TIMEOUT_MS} ms); safe to retry",
                        field="db",
                    )
                self._turn.wait(max(left, 0.05))
            if not job.done.is_set():  # the turn is free: write what has queued up
                self._writing = True
                batch = self._queue[:MAX_BATCH]
                del self._queue[:MAX_BATCH]
        if batch is not None:
            try:
                self._commit(batch)
            finally:
                for waiting in batch:  # never leave a thread waiting (an interrupt)
                    if not waiting.done.is_set():
                        waiting.finish(error=self._unavailable(RuntimeError("interrupted")))
                with self._turn:
                    self._writing = False
                    self._turn.notify_all()
        job.done.wait()  # taken by another thread's batch when not in ours
        if job.error is not None:
            raise job.error
        assert job.record is not None  # noqa: S101 - done without an error means a record
        return job.record

    def _commit(self, batch: list[_Job]) -> None:
        """Commit `batch` in one transaction (one fsync, one lock turn for all). A failure that
        is not the database's being away sends each job alone, so one bad job sinks no other."""
        try:
            outcomes = self._guard(lambda: self._append(batch))
        except StoreUnavailableError as error:
            if len(batch) == 1 or not isinstance(error, _RefusedError):
                for job in batch:  # each thread raises its own copy
                    job.finish(error=StoreUnavailableError(error.message, field=error.field))
                return
            outcomes = None
        except Exception as error:
            if len(batch) == 1:
                batch[0].finish(error=error)
                return
            outcomes = None
        if outcomes is None:
            for job in batch:
                self._commit([job])
            return
        for job, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, AuditRecord):
                job.finish(record=outcome)
            else:
                job.finish(error=outcome)

    def _append(self, batch: Sequence[_Job]) -> list[AuditRecord | ReplayedTokenError]:
        outcomes: list[AuditRecord | ReplayedTokenError] = []
        rows: list[dict[str, Any]] = []
        signatures: list[dict[str, Any]] = []
        with self._write() as connection:
            if self.dialect == "postgresql":
                connection.execute(_LOCK_APPENDS)
            last = connection.execute(_LAST_RECORD).first()
            index, prev_hash = (0, GENESIS) if last is None else (last.idx + 1, bytes(last.hash))
            first = index
            spent = self._use_tokens(connection, batch)
            for job in batch:
                if job in spent and job.jti is not None:
                    issuer, token_id = job.jti
                    outcomes.append(
                        ReplayedTokenError(
                            f"token from {issuer}: jti {token_id!r} was already used; "
                            "nothing was signed",
                            field="jti",
                        )
                    )
                    continue
                record, text = _seal(job.new, index, prev_hash)
                rows.append(_row(job.new, record, text))
                signatures += (
                    {
                        "record_idx": index,
                        "position": position,
                        "name": _column(signature.name),
                        "digest_algorithm": _column(signature.digest_algorithm),
                        "digest": _column(signature.digest),
                        "p7s": signature.p7s,
                    }
                    for position, signature in enumerate(job.signatures)
                )
                outcomes.append(record)
                index, prev_hash = index + 1, record.hash
            if rows:
                connection.execute(_INSERT_RECORD, rows)
            if signatures:
                connection.execute(_INSERT_SIGNATURE, signatures)
            if first // PURGE_EVERY != index // PURGE_EVERY:
                horizon = int((dt.datetime.now(dt.UTC) - TOKEN_KEEP).timestamp())
                connection.execute(
                    schema.used_tokens.delete().where(schema.used_tokens.c.expires_at < horizon)
                )
        return outcomes

    def _use_tokens(self, connection: Connection, batch: Sequence[_Job]) -> set[_Job]:
        """Consume the batch's (issuer, jti) pairs in one statement; the jobs whose pair was
        used before (by an earlier request, or earlier in this batch) are returned."""
        spent: set[_Job] = set()
        wanted: dict[tuple[str, str], _Job] = {}
        rows: list[dict[str, Any]] = []
        for job in batch:
            if job.jti is None:
                continue
            pair = (_column(job.jti[0]), _column(job.jti[1]))
            if pair in wanted:
                spent.add(job)
                continue
            wanted[pair] = job
            expires = None if job.expires_at is None else int(job.expires_at.timestamp())
            rows.append({"issuer": pair[0], "jti": pair[1], "expires_at": expires})
        if rows:
            inserted = {
                (row.issuer, row.jti) for row in connection.execute(self._insert_token, rows)
            }
            spent.update(job for pair, job in wanted.items() if pair not in inserted)
        return spent

    def jti_used(self, issuer: str, jti: str) -> bool:
        tokens = schema.used_tokens

        def work() -> bool:
            with self._read() as connection:
                row = connection.execute(
                    sa.select(sa.literal(1)).where(
                        tokens.c.issuer == _column(issuer), tokens.c.jti == _column(jti)
                    )
                ).first()
            return row is not None

        return self._guard(work)

    def size(self) -> int:
        def work() -> int:
            with self._read() as connection:
                last = connection.execute(sa.select(sa.func.max(schema.audit_records.c.idx)))
                value = last.scalar()
            return 0 if value is None else int(value) + 1

        return self._guard(work)

    def records(self, start: int = 0, stop: int | None = None) -> Iterator[AuditRecord]:
        """Pages of PAGE records, each in its own short read (no transaction held open)."""
        records = schema.audit_records
        cursor = start
        while stop is None or cursor < stop:
            query = sa.select(records.c.idx, records.c.body, records.c.prev_hash, records.c.hash)
            query = query.where(records.c.idx >= cursor)
            if stop is not None:
                query = query.where(records.c.idx < stop)
            query = query.order_by(records.c.idx).limit(PAGE)

            def work(query: sa.Select[Any] = query) -> list[sa.Row[Any]]:
                with self._read() as connection:
                    return list(connection.execute(query))

            rows = self._guard(work)
            for row in rows:
                yield AuditRecord(
                    index=int(row.idx),
                    body=_body(int(row.idx), row.body),
                    prev_hash=bytes(row.prev_hash),
                    hash=bytes(row.hash),
                )
            if len(rows) < PAGE:
                return
            cursor = int(rows[-1].idx) + 1

    def record_hashes(self, start: int, stop: int) -> list[bytes]:
        records = schema.audit_records

        def work() -> list[bytes]:
            with self._read() as connection:
                rows = connection.execute(
                    sa.select(records.c.hash)
                    .where(records.c.idx >= start, records.c.idx < stop)
                    .order_by(records.c.idx)
                )
                return [bytes(row.hash) for row in rows]

        return self._guard(work)

    def count_recent(self, key: str, grant: str, since: dt.datetime) -> int:
        records = schema.audit_records
        moment = since.astimezone(dt.UTC).strftime(TIME_FORMAT)

        def work() -> int:
            with self._read() as connection:
                value = connection.execute(
                    sa.select(sa.func.count()).where(
                        records.c.key_name == _column(key),
                        records.c.grant_name == _column(grant),
                        records.c.decision == "allow",
                        records.c.time >= moment,
                    )
                ).scalar()
            return int(value or 0)

        return self._guard(work)

    def signatures(self, index: int) -> list[StoredSignature]:
        table = schema.signatures

        def work() -> list[StoredSignature]:
            with self._read() as connection:
                rows = connection.execute(
                    sa.select(table).where(table.c.record_idx == index).order_by(table.c.position)
                )
                return [
                    StoredSignature(
                        _uncolumn(row.name),
                        _uncolumn(row.digest_algorithm),
                        _uncolumn(row.digest),
                        bytes(row.p7s),
                    )
                    for row in rows
                ]

        return self._guard(work)

    def save_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        def work() -> None:
            with self._write() as connection:
                connection.execute(
                    schema.checkpoints.insert().values(
                        tree_size=checkpoint.tree_size,
                        root_hash=checkpoint.root_hash,
                        note=checkpoint.note,
                        timestamp=checkpoint.timestamp,
                        time=checkpoint.time,
                    )
                )

        self._guard(work)

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        found = self._checkpoints(latest=True)
        return found[0] if found else None

    def checkpoints(self) -> list[StoredCheckpoint]:
        return self._checkpoints(latest=False)

    def _checkpoints(self, *, latest: bool) -> list[StoredCheckpoint]:
        table = schema.checkpoints
        query = sa.select(table).order_by(table.c.id.desc() if latest else table.c.id)
        if latest:
            query = query.limit(1)

        def work() -> list[StoredCheckpoint]:
            with self._read() as connection:
                return [
                    StoredCheckpoint(
                        tree_size=int(row.tree_size),
                        root_hash=bytes(row.root_hash),
                        note=row.note,
                        timestamp=None if row.timestamp is None else bytes(row.timestamp),
                        time=row.time,
                    )
                    for row in connection.execute(query)
                ]

        return self._guard(work)

    def close(self) -> None:
        self._closed.set()
        self.engine.dispose()


def _seal(new: NewRecord, index: int, prev_hash: bytes) -> tuple[AuditRecord, str]:
    """`AuditRecord.seal`, keeping the canonical text it hashed (RFC 8785 is the costly part
    of an append: done once, the stored text is exactly the hashed bytes)."""
    body = new.body(index)
    text = canonical(body)
    return AuditRecord(index, body, prev_hash, hashlib.sha256(prev_hash + text).digest()), (
        text.decode("utf-8")
    )


def _row(new: NewRecord, record: AuditRecord, text: str) -> dict[str, Any]:
    return {
        "idx": record.index,
        "time": new.time,
        "request_id": _column(new.request_id),
        "event": _column(new.event),
        "key_name": _column(new.key),
        "grant_name": _column(new.grant),
        "decision": _column(new.decision),
        "reason_code": _column(new.reason_code),
        "body": text,
        "prev_hash": record.prev_hash,
        "hash": record.hash,
    }


@overload
def _column(value: str) -> str: ...
@overload
def _column(value: None) -> None: ...
def _column(value: str | None) -> str | None:
    """A request's text as a column can hold it: PostgreSQL text refuses NUL, so a value with
    one (or that starts with a quote) is kept JSON-quoted, which keeps distinct values distinct."""
    if value is None or ("\x00" not in value and not value.startswith('"')):
        return value
    return json.dumps(value)


def _uncolumn(value: str) -> str:
    if value.startswith('"'):
        decoded = json.loads(value)
        if isinstance(decoded, str):
            return decoded
    return value


def _check_time(value: str) -> None:
    """Rate limits compare the stored times as text: only the one record format sorts right."""
    try:
        dt.datetime.strptime(value, TIME_FORMAT)
    except (TypeError, ValueError):
        raise ValueError(f"audit record time {value!r} is not in the format_time() form") from None


def _body(index: int, text: str) -> dict[str, Any]:
    """The stored canonical body; anything but a JSON object is a broken record at `index`."""
    try:
        body = json.loads(text)
    except (TypeError, ValueError):
        body = None
    if not isinstance(body, dict):
        raise AuditIntegrityError(
            f"audit record {index}: its stored body is not a JSON object",
            code="audit-record-unreadable",
            field=f"record {index}",
        )
    return body


def _reason(error: Exception) -> str:
    """The database's own first line, without SQLAlchemy's statement dump."""
    origin = getattr(error, "orig", None) or error
    text = str(origin).strip().splitlines()
    return text[0] if text else type(origin).__name__
