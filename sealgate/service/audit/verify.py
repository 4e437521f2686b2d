"""`audit verify`: re-hash the chain, recompute the Merkle roots, check every checkpoint.

The first record that breaks the chain is named by its index, and the kind of damage is told
apart from what the data shows: a record whose hash does not fit its content was edited; a gap
in the indexes is a deletion; an index seen before, or a record that does not link in, was
inserted; records that link to each other out of order were reordered. A history re-chained
from scratch verifies on its own: only a checkpoint kept outside (whose root it no longer
matches) shows it, and a tail cut off shows only against a checkpoint that covered it.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from sealgate.service.audit.checkpoint import Checkpoint, NoteVerifier, verify_stored
from sealgate.service.audit.merkle import EMPTY_ROOT, Frontier
from sealgate.service.audit.records import GENESIS, AuditRecord
from sealgate.service.errors import AuditIntegrityError
from sealgate.service.store.base import StoredCheckpoint

#: Records read ahead of the first bad one, to tell a reorder from a deletion or an insertion.
LOOKAHEAD = 256
#: Verified hashes kept by index, to see what an out-of-place record links to.
RECENT = 4096

EDITED_CODE = "audit-record-edited"
MISSING_CODE = "audit-record-missing"
INSERTED_CODE = "audit-record-inserted"
REORDERED_CODE = "audit-records-reordered"
TRUNCATED_CODE = "audit-truncated"
MISMATCH_CODE = "audit-checkpoint-mismatch"
#: The short names the store's PostgreSQL tests import.
EDITED, MISSING, INSERTED = EDITED_CODE, MISSING_CODE, INSERTED_CODE
REORDERED, TRUNCATED, MISMATCH = REORDERED_CODE, TRUNCATED_CODE, MISMATCH_CODE


class AuditBrokenError(AuditIntegrityError):
    """The log does not verify; `index` is the first record concerned (None: a checkpoint)."""

    def __init__(self, message: str, *, code: str, index: int | None) -> None:
        where = f"record {index}" if index is not None else "checkpoint"
        super().__init__(message, code=code, field=where)
        self.index = index


@dataclass(frozen=True)
class KeptCheckpoint:
    """A checkpoint and where it came from (`the database`, a file kept outside)."""

    where: str
    checkpoint: StoredCheckpoint


@dataclass
class AuditReport:
    records: int
    head_hash: bytes | None
    root_hash: bytes
    checkpoints: int = 0
    #: The largest tree size a verified checkpoint covers (0: none).
    covered: int = 0
    signatures_verified: int = 0
    timestamps_verified: int = 0
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "verified": True,
            "records": self.records,
            "head_hash": None if self.head_hash is None else self.head_hash.hex(),
            "root_hash": self.root_hash.hex(),
            "checkpoints": self.checkpoints,
            "covered": self.covered,
            "signatures_verified": self.signatures_verified,
            "timestamps_verified": self.timestamps_verified,
            "notes": list(self.notes),
        }


def _hash_fits(record: AuditRecord) -> bool:
    """The record's own hash matches its content; a body RFC 8785 cannot encode (an integer
    beyond 2**53, a lone surrogate) is content no honest service wrote."""
    try:
        return record.recomputed_hash() == record.hash
    except (ValueError, TypeError, UnicodeError):
        return False


def _body_index(record: AuditRecord) -> int | None:
    value = record.body.get("index")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class _Scan:
    """One pass over the records with a small read-ahead for the first anomaly."""

    def __init__(self, records: Iterable[AuditRecord], sizes: set[int]) -> None:
        self._source: Iterator[AuditRecord] = iter(records)
        self._ahead: collections.deque[AuditRecord] = collections.deque()
        self.sizes = sizes
        self.roots: dict[int, bytes] = {0: EMPTY_ROOT} if 0 in sizes else {}
        self.frontier = Frontier()
        self.prev = GENESIS
        self.hash_at: dict[int, bytes] = {}
        self._order: collections.deque[int] = collections.deque()

    def _next(self) -> AuditRecord | None:
        if self._ahead:
            return self._ahead.popleft()
        return next(self._source, None)

    def _window(self) -> list[AuditRecord]:
        while len(self._ahead) < LOOKAHEAD:
            record = next(self._source, None)
            if record is None:
                break
            self._ahead.append(record)
        return list(self._ahead)

    def run(self) -> int:
        position = 0
        while (record := self._next()) is not None:
            if not (
                _body_index(record) == position == record.index
                and record.prev_hash == self.prev
                and _hash_fits(record)
            ):
                raise self._classify(record, position)
            self._accept(record, position)
            position += 1
        return position

    def _accept(self, record: AuditRecord, position: int) -> None:
        self.prev = record.hash
        self.hash_at[position] = record.hash
        self._order.append(position)
        if len(self._order) > RECENT:
            self.hash_at.pop(self._order.popleft(), None)
        self.frontier.append(record.hash)
        if self.frontier.size in self.sizes:
            self.roots[self.frontier.size] = self.frontier.root()

    def _linked_hash(self, index: int) -> bytes | None:
        """The verified hash a record with body index `index` must link onto."""
        return GENESIS if index == 0 else self.hash_at.get(index - 1)

    def _classify(self, record: AuditRecord, e: int) -> AuditBrokenError:
        bi = _body_index(record)
        own_ok = _hash_fits(record)
        stored = f" (stored at index {record.index})" if record.index != e else ""
        if bi is None:
            return AuditBrokenError(f"audit record {e}{stored}: its body holds no integer index "
                               "(edited)", code=EDITED_CODE, index=e)  # fmt: skip
        window = self._window()
        if bi > e:
            later = next((w for w in window if _body_index(w) == e), None)
            if later is None:
                gap = f"record {e} is" if bi == e + 1 else f"records {e}..{bi - 1} are"
                return AuditBrokenError(
                    f"audit record {e}: missing: {gap} not in the log, record {bi} follows "
                    f"record {e - 1} (deleted)" if e else f"audit record 0: missing: {gap} not "
                    f"in the log, it starts at record {bi} (deleted)",
                    code=MISSING_CODE, index=e,
                )  # fmt: skip
            linked = record.prev_hash in {w.hash for w in window} or record.hash in {
                w.prev_hash for w in window
            }
            if linked:
                return AuditBrokenError(
                    f"audit record {e}: records reordered: record {bi} stands where record {e} "
                    f"should, and record {e} comes later",
                    code=REORDERED_CODE, index=e,
                )  # fmt: skip
            return AuditBrokenError(
                f"audit record {e}: inserted: a record claiming index {bi}{stored} stands "
                f"before record {e} and links into no part of the chain",
                code=INSERTED_CODE, index=e,
            )  # fmt: skip
        if bi < e:
            if own_ok and record.hash == self.hash_at.get(bi):
                return AuditBrokenError(
                    f"audit record {e}: inserted: a copy of record {bi} stands at position "
                    f"{e}{stored}, after record {e - 1}",
                    code=INSERTED_CODE, index=e,
                )  # fmt: skip
            if own_ok and record.prev_hash == self._linked_hash(bi):
                extra = f"record {bi} was" if e == bi + 1 else f"records {bi}..{e - 1} were"
                return AuditBrokenError(
                    f"audit record {bi}: inserted: the record that links onto record {bi - 1} "
                    f"with index {bi} comes at position {e}{stored}, so {extra} put in before "
                    "it" if bi else f"audit record 0: inserted: the record that starts the "
                    f"chain comes at position {e}{stored}, so {extra} put in before it",
                    code=INSERTED_CODE, index=bi,
                )  # fmt: skip
            return AuditBrokenError(
                f"audit record {bi}: records reordered: record {bi} comes again at position "
                f"{e}{stored}, after record {e - 1} (moved, or a copy inserted)",
                code=REORDERED_CODE, index=bi,
            )  # fmt: skip
        # the body's index is right
        if not own_ok:
            nxt = window[0] if window else None
            if (
                nxt is not None
                and _body_index(nxt) == e
                and nxt.prev_hash == self.prev
                and _hash_fits(nxt)
            ):
                return AuditBrokenError(
                    f"audit record {e}: inserted: a second record with index {e} that does not "
                    f"match its own hash stands before the real record {e}",
                    code=INSERTED_CODE, index=e,
                )  # fmt: skip
            return AuditBrokenError(
                f"audit record {e}{stored}: edited: its content does not match its hash",
                code=EDITED_CODE, index=e,
            )  # fmt: skip
        if record.prev_hash != self.prev:
            if record.prev_hash in {w.hash for w in window}:
                return AuditBrokenError(
                    f"audit record {e}: records reordered: it links onto a record that comes "
                    "after it",
                    code=REORDERED_CODE, index=e,
                )  # fmt: skip
            if e == 0:
                return AuditBrokenError("audit record 0: edited: its prev_hash is not the genesis "
                                   "(32 zero bytes)", code=EDITED_CODE, index=0)  # fmt: skip
            return AuditBrokenError(
                f"audit record {e - 1}: edited: record {e}'s prev_hash is not record {e - 1}'s "
                f"hash, so record {e - 1} was edited and re-hashed, or record {e}'s link was "
                "rewritten",
                code=EDITED_CODE, index=e - 1,
            )  # fmt: skip
        return AuditBrokenError(
            f"audit record {e}: edited: stored at index {record.index}, but its hashed body "
            f"says {e}",
            code=EDITED_CODE, index=e,
        )  # fmt: skip


def _kept(checkpoints: Sequence[StoredCheckpoint | KeptCheckpoint]) -> list[KeptCheckpoint]:
    kept: list[KeptCheckpoint] = []
    seen: set[str] = set()
    for number, each in enumerate(checkpoints, start=1):
        if isinstance(each, StoredCheckpoint):
            each = KeptCheckpoint(f"checkpoint {number} (size {each.tree_size})", each)
        if each.checkpoint.note in seen:  # the same note in the database and a file
            continue
        seen.add(each.checkpoint.note)
        kept.append(each)
    return kept


def verify_log(
    records: Iterable[AuditRecord],
    checkpoints: Sequence[StoredCheckpoint | KeptCheckpoint] = (),
    *,
    note_verifier: NoteVerifier | None = None,
    tsa_roots: Sequence[x509.Certificate] = (),
) -> AuditReport:
    """Verify the records (in stored order) and the checkpoints against them: AuditBrokenError
    (exit 1) names the first bad record. Without `note_verifier` the checkpoints' roots are
    compared but their signatures are not checked (the report says so)."""
    kept = _kept(checkpoints)
    opened: list[tuple[KeptCheckpoint, Checkpoint]] = []
    signatures = stamps = 0
    origins: set[str] = set()
    for each in kept:
        checkpoint, signed, stamped = verify_stored(
            each.checkpoint, note_verifier, each.where, tsa_roots=tsa_roots
        )
        opened.append((each, checkpoint))
        origins.add(checkpoint.origin)
        signatures += signed
        stamps += stamped
    if len(origins) > 1:
        raise AuditBrokenError(
            f"the checkpoints come from {len(origins)} logs ({', '.join(sorted(origins))[:200]})",
            code="audit-checkpoint-origin", index=None,
        )  # fmt: skip
    scan = _Scan(records, {c.tree_size for _, c in opened})
    count = scan.run()
    opened.sort(key=lambda pair: pair[1].tree_size)
    matched = 0
    for each, checkpoint in opened:
        size = checkpoint.tree_size
        if size > count:
            raise AuditBrokenError(
                f"audit record {count}: truncated: {each.where} covers {size} records, the log "
                f"holds {count}: records {count}..{size - 1} were removed (a cut tail, or the "
                "checkpoint is another log's)",
                code=TRUNCATED_CODE, index=count,
            )  # fmt: skip
        if scan.roots[size] != checkpoint.root_hash:
            below = f"; checkpoints up to size {matched} match" if matched else ""
            raise AuditBrokenError(
                f"{each.where}: its root is not the root of records 0..{size - 1}: the history "
                f"was rewritten (re-chained) after it was signed, or it is another log's "
                f"checkpoint{below}",
                code=MISMATCH_CODE, index=None,
            )  # fmt: skip
        matched = size
    report = AuditReport(
        records=count,
        head_hash=None if count == 0 else scan.prev,
        root_hash=scan.frontier.root(),
        checkpoints=len(opened),
        covered=matched,
        signatures_verified=signatures,
        timestamps_verified=stamps,
    )
    if not opened:
        report.notes.append("no checkpoint: a re-chained history or a cut tail cannot be detected")
    elif matched < count:
        report.notes.append(
            f"records {matched}..{count - 1} are newer than the last checkpoint: only the "
            "chain covers them"
        )
    if opened and note_verifier is None:
        report.notes.append("checkpoint signatures not checked: no audit key was given")
    if opened and not tsa_roots:
        report.notes.append("checkpoint timestamps not checked: no TSA roots were given")
    return report
