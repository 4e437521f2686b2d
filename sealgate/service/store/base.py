"""The store's one interface: the app, the checkpointer and `audit verify` use only this.

Appends are serialised (one writer: `BEGIN IMMEDIATE` on SQLite, a transaction-scoped advisory
lock on PostgreSQL), so records get gap-free indexes and one chain across every replica.
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sealgate.service.audit.records import AuditRecord, NewRecord
from sealgate.service.errors import ServiceError


class ReplayedTokenError(ServiceError):
    """The (iss, jti) pair was already used: the append rolled back, nothing was stored."""

    status = 401
    code = "token-replayed"


class StoreUnavailableError(ServiceError):
    """The database cannot be reached or refused the write: 503, safe to retry."""

    status = 503
    code = "store-unavailable"
    exit_code = 3


@dataclass(frozen=True)
class StoredSignature:
    """A returned `.p7s`, kept with its audit record (the dashboard lists them)."""

    name: str
    digest_algorithm: str
    digest: str
    p7s: bytes


@dataclass(frozen=True)
class StoredCheckpoint:
    """A checkpoint as written: the signed note's text and, when timestamped, the token."""

    tree_size: int
    root_hash: bytes
    note: str
    timestamp: bytes | None
    time: str


class Store(ABC):
    """State of the service. Implementations: SQLite and PostgreSQL through SQLAlchemy Core."""

    @abstractmethod
    def append(
        self,
        new: NewRecord,
        *,
        jti: tuple[str, str] | None = None,
        expires_at: dt.datetime | None = None,
        signatures: Sequence[StoredSignature] = (),
    ) -> AuditRecord:
        """Append one record, and in the same transaction consume `jti` (issuer, jti) and keep
        `signatures`. ReplayedTokenError (and nothing stored) when the jti was used before."""

    @abstractmethod
    def jti_used(self, issuer: str, jti: str) -> bool:
        """A cheap check before HSM work; the unique constraint in `append` is the authority."""

    @abstractmethod
    def size(self) -> int:
        """The number of records (the next index)."""

    @abstractmethod
    def records(self, start: int = 0, stop: int | None = None) -> Iterator[AuditRecord]:
        """Records `start <= index < stop`, in index order, as stored (not re-verified)."""

    @abstractmethod
    def record_hashes(self, start: int, stop: int) -> list[bytes]:
        """The chained hashes of records `start..stop-1` (the Merkle leaves)."""

    @abstractmethod
    def count_recent(self, key: str, grant: str, since: dt.datetime) -> int:
        """Requests that grant `grant` of `key` allowed since `since` (rate limits)."""

    def signatures(self, index: int) -> list[StoredSignature]:
        """The `.p7s` files kept with record `index`, in request order (the dashboard's list)."""
        raise NotImplementedError(f"{type(self).__name__} does not keep signatures")

    @abstractmethod
    def save_checkpoint(self, checkpoint: StoredCheckpoint) -> None: ...

    @abstractmethod
    def latest_checkpoint(self) -> StoredCheckpoint | None: ...

    @abstractmethod
    def checkpoints(self) -> list[StoredCheckpoint]: ...

    @abstractmethod
    def close(self) -> None: ...
