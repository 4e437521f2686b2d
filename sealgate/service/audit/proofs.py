"""What the service serves about its log: the latest checkpoint, inclusion and consistency proofs.

Hashes are hex (as in the records); the checkpoint's note is the C2SP text itself. A proof is
relative to a tree size, and to the signed checkpoint of that size when the log has one, so a
third party checks it against a checkpoint it kept (`sealgate audit prove`).

    inclusion:   {"index", "tree_size", "record_hash", "leaf_hash", "root_hash",
                  "proof": [hex, ...], "checkpoint": {...} | null}
    consistency: {"old_size", "new_size", "old_root", "new_root", "proof": [hex, ...],
                  "checkpoint": {...} | null}   (the checkpoint of new_size)
"""

from __future__ import annotations

from typing import Any

from sealgate.service.audit import merkle
from sealgate.service.audit.checkpoint import checkpoint_json
from sealgate.service.errors import ServiceError
from sealgate.service.store.base import Store, StoredCheckpoint

INCLUSION_FIELDS = frozenset(
    {"index", "tree_size", "record_hash", "leaf_hash", "root_hash", "proof", "checkpoint"}
)


class NoSuchRecordError(ServiceError):
    status = 404
    code = "no-such-record"


class NoCheckpointError(ServiceError):
    status = 404
    code = "no-checkpoint"


class BadTreeSizeError(ServiceError):
    status = 422
    code = "bad-tree-size"


def latest_checkpoint(store: Store) -> dict[str, Any]:
    latest = store.latest_checkpoint()
    if latest is None:
        raise NoCheckpointError("the audit log has no checkpoint yet", field="checkpoint")
    return checkpoint_json(latest)


def _checkpoint_of(store: Store, size: int) -> StoredCheckpoint | None:
    latest = store.latest_checkpoint()
    if latest is not None and latest.tree_size == size:
        return latest
    return next((c for c in reversed(store.checkpoints()) if c.tree_size == size), None)


def inclusion(store: Store, index: int, tree_size: int | None = None) -> dict[str, Any]:
    """The proof that record `index` is in the tree of `tree_size` records; by default the
    latest checkpoint's size when it covers the record, else the log's size (unsigned yet)."""
    size = store.size()
    if not 0 <= index < size:
        raise NoSuchRecordError(
            f"audit record {index}: not in the log ({size} records)", field="index"
        )
    if tree_size is None:
        latest = store.latest_checkpoint()
        tree_size = latest.tree_size if latest is not None and latest.tree_size > index else size
    if not index < tree_size <= size:
        raise BadTreeSizeError(
            f"tree size {tree_size}: a proof for record {index} needs a size from {index + 1} "
            f"to {size}",
            field="tree_size",
        )
    leaves = _leaves(store, tree_size)
    checkpoint = _checkpoint_of(store, tree_size)
    return {
        "index": index,
        "tree_size": tree_size,
        "record_hash": leaves[index].hex(),
        "leaf_hash": merkle.leaf_hash(leaves[index]).hex(),
        "root_hash": merkle.root(leaves).hex(),
        "proof": [p.hex() for p in merkle.inclusion_proof(leaves, index)],
        "checkpoint": None if checkpoint is None else checkpoint_json(checkpoint),
    }


def _leaves(store: Store, size: int) -> list[bytes]:
    """The first `size` record hashes; a gap below the stored size is a broken log, not input."""
    leaves = store.record_hashes(0, size)
    if len(leaves) != size:
        raise ServiceError(
            f"audit log: {size - len(leaves)} of the first {size} records are missing",
            status=500, code="audit-record-missing", field="tree_size", exit_code=1,
        )  # fmt: skip
    return leaves


def consistency(store: Store, old_size: int, new_size: int) -> dict[str, Any]:
    """The proof that the tree of `old_size` is a prefix of the tree of `new_size`."""
    size = store.size()
    if not 0 < old_size <= new_size <= size:
        raise BadTreeSizeError(
            f"tree sizes {old_size} and {new_size}: a consistency proof needs "
            f"0 < old <= new <= {size}",
            field="tree_size",
        )
    leaves = _leaves(store, new_size)
    checkpoint = _checkpoint_of(store, new_size)
    return {
        "old_size": old_size,
        "new_size": new_size,
        "old_root": merkle.root(leaves[:old_size]).hex(),
        "new_root": merkle.root(leaves).hex(),
        "proof": [p.hex() for p in merkle.consistency_proof(leaves, old_size)],
        "checkpoint": None if checkpoint is None else checkpoint_json(checkpoint),
    }
