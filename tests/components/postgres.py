"""A throwaway PostgreSQL cluster for the service's store tests: `initdb` + `pg_ctl` on 127.0.0.1.

PostgreSQL refuses to run as root, so under root the cluster belongs to `nobody` (its folder is
made in /tmp, which `nobody` can reach, and removed at the end). `pg_url` is a fresh empty
database per test, dropped afterwards.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.components import require

PG_BIN = Path(os.environ.get("SEALGATE_PG_BIN", "/usr/lib/postgresql/15/bin"))
SUPERUSER = "postgres"
_names = itertools.count()


@dataclass
class Postgres:
    """A running cluster: its folder, port and the postmaster's pid."""

    root: Path
    port: int
    pid: int
    #: The server options it was started with (`start()` starts it again with them).
    options: str = ""

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        """A plain psycopg connection (autocommit), for tests that edit rows behind the store."""
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user=SUPERUSER, dbname=database, autocommit=True
        )

    def create_database(self) -> str:
        name = f"t{os.getpid()}_{next(_names)}"
        with self.connect() as connection:
            connection.execute(f'CREATE DATABASE "{name}"'.encode())
        return name

    def stop(self) -> None:
        """Stop the server (fast: sessions are ended), keeping the cluster for `start()`."""
        subprocess.run(
            _as_owner([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]),
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip

    def start(self) -> None:
        subprocess.run(
            _as_owner([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l",
                       str(self.root / "server.log"), "-o", self.options, "-w", "start"]),
            check=True, capture_output=True, timeout=90,
        )  # fmt: skip
        self.pid = _postmaster_pid(self.data) or self.pid

    def drop_database(self, name: str) -> None:
        with self.connect() as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


def _as_owner(command: list[str]) -> list[str]:
    """Run PostgreSQL's tools as `nobody` when the tests run as root (initdb refuses root)."""
    return ["runuser", "-u", "nobody", "--", *command] if os.geteuid() == 0 else command


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _postmaster_pid(data: Path) -> int | None:
    try:
        return int((data / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def start_postgres(*, fsync: bool = False) -> Iterator[Postgres]:
    """A cluster until the block ends (then `pg_ctl stop -m immediate`, SIGKILL, removed). fsync
    is off by default: tests kill processes, never the machine, and the OS keeps what they wrote."""
    require(
        (PG_BIN / "initdb").is_file() and (PG_BIN / "pg_ctl").is_file(), f"PostgreSQL in {PG_BIN}"
    )
    if os.geteuid() == 0:
        require(shutil.which("runuser") is not None, "runuser (to run PostgreSQL as nobody)")
    root = Path(tempfile.mkdtemp(prefix="sealgate-pg-"))
    os.chmod(root, 0o755)
    if os.geteuid() == 0:
        os.chown(root, 65534, 65534)
    data = root / "data"
    log = root / "server.log"
    cluster: Postgres | None = None
    try:
        subprocess.run(
            _as_owner([str(PG_BIN / "initdb"), "-D", str(data), "-U", SUPERUSER,
                       "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"]),
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        for attempt in range(3):
            port = _free_port()
            options = (
                f"-k {root} -p {port} -c listen_addresses=127.0.0.1 -c max_connections=300"
                f" -c fsync={'on' if fsync else 'off'} -c log_min_messages=warning"
            )
            started = subprocess.run(
                _as_owner([str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(log),
                           "-o", options, "-w", "-t", "60", "start"]),
                capture_output=True, text=True, timeout=90,
            )  # fmt: skip
            pid = _postmaster_pid(data)
            if started.returncode == 0 and pid is not None:
                cluster = Postgres(root, port, pid, options)
                break
            if attempt == 2:
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise RuntimeError(f"PostgreSQL did not start: {started.stderr}\n{tail}")
        assert cluster is not None
        yield cluster
    finally:
        _stop(data)
        shutil.rmtree(root, ignore_errors=True)


def _stop(data: Path) -> None:
    """Stop the cluster for certain: pg_ctl first, then SIGKILL to whatever still holds it."""
    pid = _postmaster_pid(data)
    if pid is None:
        return
    subprocess.run(
        _as_owner([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2 :].split()[0] != "Z"


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One throwaway cluster for the whole run."""
    with start_postgres() as cluster:
        yield cluster


@pytest.fixture
def pg_url(postgres: Postgres) -> Iterator[str]:
    """A fresh empty database on the session's cluster, as a `postgresql://` URL."""
    name = postgres.create_database()
    try:
        yield postgres.url(name)
    finally:
        postgres.drop_database(name)
