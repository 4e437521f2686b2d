"""One audit record and its chained hash.

`hash = SHA-256(prev_hash || RFC 8785 JSON of the record body)`, where the body is every field
but `prev_hash` and `hash`. The first record's `prev_hash` is 32 zero bytes. Indexes start at 0
and are the record's leaf position in the RFC 6962 tree of checkpoints.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

import rfc8785

Event = Literal["sign", "deny", "approve", "rotate", "checkpoint", "error"]
Decision = Literal["allow", "deny", "error"]
GENESIS = bytes(32)
#: The fields a record holds, in this order (the canonical JSON sorts them anyway).
FIELDS = (
    "index", "time", "request_id", "event", "actor", "key", "key_version", "artifacts",
    "outputs", "grant", "decision", "reason_code", "reason", "prev_hash", "hash",
)  # fmt: skip


def format_time(moment: dt.datetime) -> str:
    """The one time format of records: UTC, microseconds, `Z`."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class NewRecord:
    """A record before the store gives it an index, its predecessor's hash and its own."""

    time: str
    request_id: str
    event: Event
    decision: Decision
    reason_code: str
    #: One line: why (for a deny, the first claim that failed).
    reason: str = ""
    actor: dict[str, Any] = field(default_factory=dict)
    key: str | None = None
    key_version: int | None = None
    #: [{"name", "digest_algorithm", "digest"}], digests in hex.
    artifacts: tuple[dict[str, str], ...] = ()
    #: SHA-256 (hex) of each returned `.p7s`, in the order of `artifacts`.
    outputs: tuple[str, ...] = ()
    grant: str | None = None

    def body(self, index: int) -> dict[str, Any]:
        return {
            "index": index,
            "time": self.time,
            "request_id": self.request_id,
            "event": self.event,
            "actor": self.actor,
            "key": self.key,
            "key_version": self.key_version,
            "artifacts": [dict(a) for a in self.artifacts],
            "outputs": list(self.outputs),
            "grant": self.grant,
            "decision": self.decision,
            "reason_code": self.reason_code,
            "reason": self.reason,
        }


#: JCS writes integers as ECMAScript numbers: exact only up to 2**53.
_SAFE_INTEGER = 2**53 - 1


def _plain(value: Any) -> bool:
    """Whether `value` is JSON for which JCS and `json.dumps(sort_keys=True)` agree: ASCII keys
    (code-point order is UTF-16 order), strings, booleans, null and safe integers, no floats."""
    if isinstance(value, str) or value is None or isinstance(value, bool):
        return True
    if isinstance(value, int):
        return -_SAFE_INTEGER <= value <= _SAFE_INTEGER
    if isinstance(value, dict):
        return all(isinstance(k, str) and k.isascii() and _plain(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(_plain(v) for v in value)
    return False


def canonical(document: Any) -> bytes:
    """RFC 8785 (JCS) bytes of a JSON value. Records are plain JSON (see `_plain`), for which the
    standard library writes the same bytes four times faster; anything else goes to rfc8785."""
    if _plain(document):
        try:
            text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            return text.encode("utf-8")
        except UnicodeEncodeError:
            pass  # a lone surrogate: rfc8785 refuses it with its own error
    return bytes(rfc8785.dumps(document))


def chain_hash(prev_hash: bytes, body: dict[str, Any]) -> bytes:
    return hashlib.sha256(prev_hash + canonical(body)).digest()


@dataclass(frozen=True)
class AuditRecord:
    """A stored record: its body (with its index), the hash before it, and its own."""

    index: int
    body: dict[str, Any]
    prev_hash: bytes
    hash: bytes

    @classmethod
    def seal(cls, new: NewRecord, index: int, prev_hash: bytes) -> AuditRecord:
        body = new.body(index)
        return cls(index, body, prev_hash, chain_hash(prev_hash, body))

    def as_json(self) -> dict[str, Any]:
        """The exported form (one JSON line of `audit export`, the receipt's `record`)."""
        return {**self.body, "prev_hash": self.prev_hash.hex(), "hash": self.hash.hex()}

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> AuditRecord:
        """The reverse of `as_json()`; the hash is taken as written (the verifier recomputes it)."""
        body = {k: v for k, v in document.items() if k not in ("prev_hash", "hash")}
        return cls(
            index=int(document["index"]),
            body=body,
            prev_hash=bytes.fromhex(document["prev_hash"]),
            hash=bytes.fromhex(document["hash"]),
        )

    def recomputed_hash(self) -> bytes:
        return chain_hash(self.prev_hash, self.body)
