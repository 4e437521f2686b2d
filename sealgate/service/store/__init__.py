"""Where the service keeps its state: SQLite (WAL) by default, PostgreSQL to scale out."""

from sealgate.service.store.base import (
    ReplayedTokenError,
    Store,
    StoredCheckpoint,
    StoredSignature,
    StoreUnavailableError,
)
from sealgate.service.store.sql import SqlStore, open_store

__all__ = [
    "ReplayedTokenError",
    "SqlStore",
    "Store",
    "StoreUnavailableError",
    "StoredCheckpoint",
    "StoredSignature",
    "open_store",
]
