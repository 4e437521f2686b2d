"""Writes the checkpoints: every `checkpoint_every` records, every `checkpoint_interval` seconds
and at shutdown, each into the store and, when `export_dir` is set, as a file outside it.

Any replica may write one; two checkpoints of the same size are harmless (same root). The
Merkle frontier is kept between checkpoints, so each costs the new records' hashes only.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from sealgate.service.audit.checkpoint import (
    MISMATCH_CODE,
    Checkpoint,
    checkpoint_json,
    make_checkpoint,
    note_verifier,
)
from sealgate.service.audit.merkle import Frontier
from sealgate.service.config import AuditConfig
from sealgate.service.errors import AuditIntegrityError, ServiceError
from sealgate.service.signing import NoteKey, load_tsa_settings, timestamp_bytes
from sealgate.service.store.base import Store, StoredCheckpoint

log = logging.getLogger("sealgate.service.audit")

#: What `serve --check` prints when no audit key is configured.
NO_KEY_LINE = (
    "audit: no audit.key in service.yml: no checkpoints are written; the chain alone cannot show a "
    "rewritten history (anyone holding the database can re-chain it)"
)


def checkpoint_file_name(stored: StoredCheckpoint) -> str:
    """Sorted by size; the note's hash keeps two replicas' checkpoints of one size apart."""
    tag = hashlib.sha256(stored.note.encode()).hexdigest()[:12]
    return f"checkpoint-{stored.tree_size:015d}-{tag}.json"


def write_atomic(path: Path, data: bytes) -> None:
    """Write beside the target, fsync, rename: a reader sees the old file or the whole new one."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


class Checkpointer:
    """`record_appended()` is cheap (a counter); the thread does the hashing and signing."""

    def __init__(
        self,
        store: Store,
        audit: AuditConfig,
        note_key: NoteKey | None,
        *,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.store = store
        self.audit = audit
        self.note_key = note_key
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._lock = threading.Lock()  # one checkpoint at a time in this process
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending = 0
        self._frontier = Frontier()
        self.last_size: int | None = None
        self._anchor: StoredCheckpoint | None = None
        #: The last failure of the background thread (TSA or store down), for /v1/health.
        self.last_error: ServiceError | None = None
        if note_key is not None:
            note_verifier(note_key, audit.origin)  # an unusable key type fails at start-up
        self._tsa = load_tsa_settings(audit.tsa_urls, audit.tsa_roots)

    @property
    def enabled(self) -> bool:
        return self.note_key is not None

    def describe(self) -> str:
        """The `serve --check` line about checkpoints."""
        if self.note_key is None:
            return NO_KEY_LINE
        vkey = note_verifier(self.note_key, self.audit.origin).vkey
        where = f", copied to {self.audit.export_dir}" if self.audit.export_dir else ""
        stamped = " timestamped," if self._tsa else " not timestamped,"
        return (
            f"audit: checkpoints every {self.audit.checkpoint_every} records or "
            f"{self.audit.checkpoint_interval:g} s and at shutdown,{stamped} signed by {vkey}{where}"
        )

    def start(self) -> None:
        if self.note_key is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="sealgate-checkpointer",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def record_appended(self) -> None:
        if self.note_key is None:
            return
        self._pending += 1  # a lost increment under a race only delays the trigger
        if self._pending >= self.audit.checkpoint_every:
            self._pending = 0
            self._wake.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.audit.checkpoint_interval)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                self.checkpoint()
                self.last_error = None
            except ServiceError as exc:  # the next trigger tries again; the log says why
                self.last_error = exc
                log.warning("audit checkpoint failed: [%s] %s", exc.code, exc.message)
            except Exception as exc:  # a bug or an unwrapped driver error must not end the thread
                self.last_error = ServiceError(f"audit checkpoint failed: {exc!r}"[:500],
                                               status=503, code="internal-error", exit_code=3)  # fmt: skip
                log.exception("audit checkpoint failed")

    def stop(self, *, final: bool = True) -> StoredCheckpoint | None:
        """Stop the thread and write the final checkpoint (when there is anything new; never
        with `final=False`, as `serve --check` closes)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.note_key is None or not final:
            return None
        return self.checkpoint()

    def checkpoint(self, *, force: bool = False) -> StoredCheckpoint | None:
        """Sign the tree of every record stored now; None when nothing is new since the last."""
        if self.note_key is None:
            return None
        with self._lock:
            if self.last_size is None:
                latest = self.store.latest_checkpoint()
                self.last_size = -1 if latest is None else latest.tree_size
                self._anchor = latest
            size = self.store.size()
            if size == self.last_size and not force:
                return None
            if size < self._frontier.size:  # never shrinks; a store that did is verify's case
                self._frontier = Frontier()
            if self._frontier.size == 0:
                self._check_anchor(size)
            self._frontier.extend(self.store.record_hashes(self._frontier.size, size))
            if self._frontier.size != size:  # a gap in the stored indexes: never sign it
                missing = self._frontier.size
                self._frontier = Frontier()
                raise AuditIntegrityError(
                    f"audit log: {size} records by their indexes but record {missing} or a "
                    "later one is missing: no checkpoint signed (run `sealgate audit verify`)",
                    code="audit-record-missing",
                    field=f"record {missing}",
                )
            stored = make_checkpoint(
                Checkpoint(self.audit.origin, size, self._frontier.root()),
                self.note_key,
                stamp=self._stamper(),
                now=self._clock(),
            )
            self.store.save_checkpoint(stored)
            self.last_size = size
            if self.audit.export_dir is not None:
                self._export(stored, self.audit.export_dir)
            return stored

    def _check_anchor(self, size: int) -> None:
        """A log never signs a tree inconsistent with one it signed before: the first checkpoint
        of this process recomputes the last stored one's root, so records rewritten while the
        service was down are refused, not signed over."""
        anchor = self._anchor
        if anchor is None or not 0 < anchor.tree_size <= size:
            return
        self._frontier.extend(self.store.record_hashes(0, anchor.tree_size))
        if self._frontier.size == anchor.tree_size and self._frontier.root() == anchor.root_hash:
            return
        self._frontier = Frontier()
        raise AuditIntegrityError(
            f"audit log: records 0..{anchor.tree_size - 1} no longer match the checkpoint of "
            f"size {anchor.tree_size} signed before: no checkpoint signed over a rewritten "
            "history (run `sealgate audit verify`)",
            code=MISMATCH_CODE,
            field="checkpoint",
        )

    def _stamper(self) -> Callable[[bytes], bytes] | None:
        settings = self._tsa
        if settings is None:
            return None
        return lambda signature: timestamp_bytes(settings, signature).der

    def _export(self, stored: StoredCheckpoint, folder: Path) -> None:
        data = json.dumps(checkpoint_json(stored), indent=2, sort_keys=True).encode() + b"\n"
        try:
            write_atomic(folder / checkpoint_file_name(stored), data)
        except OSError as exc:
            raise ServiceError(
                f"audit.export_dir {folder}: cannot write the checkpoint "
                f"({exc.strerror or type(exc).__name__})",
                status=503,
                code="checkpoint-export-failed",
                field="audit.export_dir",
                exit_code=3,
            ) from None
