"""`audit export`: the log as JSON lines, so it can be verified away from the database.

One record per line (`AuditRecord.as_json()`, in index order), then one line per checkpoint,
`{"checkpoint": {...}}` in the form of `checkpoint_json()`. The reader is strict (an index,
hashes of 64 hex digits, no NaN, no duplicate keys) and never repairs a line, so what
`audit verify` checks is exactly what the file holds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from sealgate.service.audit.checkpoint import checkpoint_from_json, checkpoint_json
from sealgate.service.audit.records import AuditRecord
from sealgate.service.audit.verify import KeptCheckpoint
from sealgate.service.errors import ServiceError
from sealgate.service.store.base import Store

_HEX32 = re.compile(r"[0-9a-f]{64}")


class ExportFormatError(ServiceError):
    """The export file is not an audit export (exit 2, naming file and line)."""

    code = "bad-audit-export"
    exit_code = 2


def export_lines(store: Store) -> Iterator[str]:
    """Records, then checkpoints, one JSON document per line (newline included)."""
    for record in store.records():
        yield _line(record.as_json())
    for checkpoint in store.checkpoints():
        yield _line({"checkpoint": checkpoint_json(checkpoint)})


def _line(document: dict[str, Any]) -> str:
    return json.dumps(document, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n"


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise ValueError(f"the key {key!r} appears twice")
        document[key] = value
    return document


def _constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def parse_export(data: bytes, where: str) -> tuple[list[AuditRecord], list[KeptCheckpoint]]:
    """The records (in file order: the verifier judges the order) and checkpoints of an export."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ExportFormatError(f"{where}: not UTF-8 (byte {exc.start})", field="export") from None
    records: list[AuditRecord] = []
    checkpoints: list[KeptCheckpoint] = []
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for number, line in enumerate(lines, start=1):
        at = f"{where} line {number}"
        try:
            document = json.loads(line, object_pairs_hook=_pairs, parse_constant=_constant)
        except (ValueError, RecursionError) as exc:
            raise ExportFormatError(f"{at}: not a JSON document ({exc})"[:300],
                                    field="export") from None  # fmt: skip
        if not isinstance(document, dict):
            raise ExportFormatError(f"{at}: not a JSON object", field="export")
        if set(document) == {"checkpoint"}:
            checkpoints.append(KeptCheckpoint(at, checkpoint_from_json(document["checkpoint"], at)))
            continue
        if checkpoints:
            raise ExportFormatError(f"{at}: a record after the checkpoints", field="export")
        records.append(_record(document, at))
    return records, checkpoints


def _record(document: dict[str, Any], at: str) -> AuditRecord:
    """A record line; a field added or removed is left in the body for the verifier, which
    reports it as an edit of that record (its hash no longer fits)."""
    index = document.get("index")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise ExportFormatError(f"{at}: not an audit record (no non-negative integer index)",
                                field="export")  # fmt: skip
    for name in ("prev_hash", "hash"):
        value = document.get(name)
        if not isinstance(value, str) or not _HEX32.fullmatch(value):
            raise ExportFormatError(
                f"{at}: audit record {index}: {name} is not 64 lowercase hex digits",
                field="export",
            )
    return AuditRecord.from_json(document)
