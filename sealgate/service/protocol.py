"""The wire format of the signing service, shared by the server and the client (stdlib only, so
the client needs no web stack). Requests are parsed here strictly: unknown fields, wrong types
and digests of the wrong length are refusals with a reason code, never a 5xx.

POST /v1/sign, body::

    {"key": "release",
     "artifacts": [{"name": "dist/app.tar.gz", "digest_algorithm": "sha256", "digest": "<hex>"}]}

answer (200)::

    {"request_id": "...", "key": "release", "key_version": 1,
     "signatures": [{"name": ..., "digest_algorithm": ..., "digest": ..., "p7s": "<base64 DER>",
                     "timestamp": {...} | null}],
     "receipt": {"index": 41, "hash": "<hex>", "record": {...the audit record...}}}

every refusal::

    {"error": {"code": "no-grant", "message": "...", "field": "ref" | null}, "request_id": "..."}
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from sealgate.service.errors import ServiceError

API_SIGN = "/v1/sign"
API_CHECKPOINT = "/v1/audit/checkpoint"
API_PROOF = "/v1/audit/proof/{index}"
API_HEALTH = "/v1/health"

#: Digest sizes the service accepts, by algorithm name (the signer's names).
DIGEST_SIZES = {"sha256": 32, "sha384": 48, "sha512": 64}
#: A request body is a list of digests, never data: this is plenty for 1,000 artifacts.
MAX_BODY = 1 << 20
MAX_NAME = 4096
MAX_KEY_NAME = 128
#: Hard cap whatever a grant allows: one request, one bounded batch of HSM work.
MAX_ARTIFACTS = 1000

_REQUEST_FIELDS = frozenset({"key", "artifacts"})
_ARTIFACT_FIELDS = frozenset({"name", "digest_algorithm", "digest"})


class ProtocolError(ServiceError):
    """422: the body is not a request this service understands."""

    status = 422
    code = "malformed-request"


@dataclass(frozen=True)
class ArtifactDigest:
    """One artifact as the client names it, and the digest of its content."""

    name: str
    digest_algorithm: str
    digest: bytes

    def as_json(self) -> dict[str, str]:
        return {"name": self.name, "digest_algorithm": self.digest_algorithm,
                "digest": self.digest.hex()}  # fmt: skip


@dataclass(frozen=True)
class SignRequest:
    key: str
    artifacts: tuple[ArtifactDigest, ...]

    def as_json(self) -> dict[str, Any]:
        return {"key": self.key, "artifacts": [a.as_json() for a in self.artifacts]}


@dataclass(frozen=True)
class SignedArtifact:
    """One returned signature: the detached CMS (CAdES-T when timestamped) over `digest`."""

    name: str
    digest_algorithm: str
    digest: bytes
    p7s: bytes
    timestamp: dict[str, object] | None = None

    def as_json(self) -> dict[str, object]:
        return {**ArtifactDigest(self.name, self.digest_algorithm, self.digest).as_json(),
                "p7s": base64.b64encode(self.p7s).decode(), "timestamp": self.timestamp}  # fmt: skip


@dataclass(frozen=True)
class Receipt:
    """Where the signing event sits in the audit log: enough to prove it later."""

    index: int
    hash: str
    record: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"index": self.index, "hash": self.hash, "record": self.record}


@dataclass(frozen=True)
class SignResponse:
    request_id: str
    key: str
    key_version: int
    signatures: tuple[SignedArtifact, ...]
    receipt: Receipt

    def as_json(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "key": self.key,
            "key_version": self.key_version,
            "signatures": [s.as_json() for s in self.signatures],
            "receipt": self.receipt.as_json(),
        }


def error_body(error: ServiceError, request_id: str | None) -> dict[str, Any]:
    return {
        "error": {"code": error.code, "message": error.message, "field": error.field},
        "request_id": request_id,
    }


def _load_json(body: bytes, what: str) -> Any:
    if len(body) > MAX_BODY:
        raise ProtocolError(
            f"{what}: {len(body)} bytes, more than the {MAX_BODY} allowed",
            status=413, code="body-too-large",
        )  # fmt: skip
    try:
        return json.loads(body, parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
        raise ProtocolError(f"{what}: not JSON ({reason})", code="malformed-json") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _object(
    value: Any, allowed: frozenset[str], where: str, required: frozenset[str]
) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError(f"{where}: expected an object, got {_kind(value)}", code="wrong-type")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ProtocolError(
            f"{where}: unknown field {unknown[0][:60]!r}",
            code="unknown-field",
            field=unknown[0][:60],
        )
    for name in sorted(required - set(value)):
        raise ProtocolError(f"{where}: field {name!r} is missing", code="missing-field", field=name)
    return value


def _string(value: Any, where: str, field: str, limit: int) -> str:
    if not isinstance(value, str):
        raise ProtocolError(
            f"{where}: {field} must be a string, got {_kind(value)}", code="wrong-type", field=field
        )
    if not value.strip():
        raise ProtocolError(f"{where}: {field} is empty", code="empty-field", field=field)
    if not is_unicode(value):
        raise ProtocolError(
            f"{where}: {field} holds a lone surrogate (\\u-escaped half of a character)",
            code="bad-unicode", field=field,
        )  # fmt: skip
    if len(value) > limit:
        raise ProtocolError(
            f"{where}: {field} is {len(value)} characters, more than {limit}",
            code="field-too-long", field=field,
        )  # fmt: skip
    return value


def is_unicode(text: str) -> bool:
    """Whether `text` is real Unicode: JSON's `\\ud800` escapes give lone surrogates, which no
    canonical JSON, database or log line can hold."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")  # fmt: skip


def parse_sign_request(body: bytes, *, max_artifacts: int = MAX_ARTIFACTS) -> SignRequest:
    """The request in `body`, or a ProtocolError naming the first field that is wrong."""
    document = _object(
        _load_json(body, "the request"), _REQUEST_FIELDS, "the request", _REQUEST_FIELDS
    )
    key = _string(document["key"], "the request", "key", MAX_KEY_NAME)
    items = document["artifacts"]
    if not isinstance(items, list):
        raise ProtocolError(
            f"the request: artifacts must be a list, got {_kind(items)}",
            code="wrong-type", field="artifacts",
        )  # fmt: skip
    if not items:
        raise ProtocolError("the request: no artifacts", code="nothing-to-sign", field="artifacts")
    if len(items) > max_artifacts:
        raise ProtocolError(
            f"the request: {len(items)} artifacts, more than the {max_artifacts} allowed",
            status=413, code="too-many-artifacts", field="artifacts",
        )  # fmt: skip
    artifacts: list[ArtifactDigest] = []
    names: set[str] = set()
    for number, item in enumerate(items, 1):
        where = f"artifact {number}"
        _object(item, _ARTIFACT_FIELDS, where, _ARTIFACT_FIELDS)
        name = _string(item["name"], where, "name", MAX_NAME)
        if name in names:
            raise ProtocolError(f"{where}: the name {name[:80]!r} is given twice",
                                code="duplicate-name", field="name")  # fmt: skip
        names.add(name)
        algorithm = _string(item["digest_algorithm"], where, "digest_algorithm", 16)
        size = DIGEST_SIZES.get(algorithm)
        if size is None:
            raise ProtocolError(
                f"{where}: unknown digest algorithm {algorithm!r} (use {', '.join(DIGEST_SIZES)})",
                code="unknown-digest-algorithm", field="digest_algorithm",
            )  # fmt: skip
        text = _string(item["digest"], where, "digest", 2 * max(DIGEST_SIZES.values()))
        try:
            digest = bytes.fromhex(text) if len(text) % 2 == 0 and text.isascii() else b""
        except ValueError:
            digest = b""
        if not digest and text:
            raise ProtocolError(f"{where}: the digest is not hexadecimal",
                                code="bad-digest", field="digest")  # fmt: skip
        if len(digest) != size:
            raise ProtocolError(
                f"{where}: a {algorithm} digest is {size} bytes, this one is {len(digest)}",
                code="digest-length", field="digest",
            )  # fmt: skip
        artifacts.append(ArtifactDigest(name, algorithm, digest))
    return SignRequest(key, tuple(artifacts))


def parse_sign_response(body: bytes, what: str) -> SignResponse:
    """The client's reading of an answer; anything unexpected is a ProtocolError naming `what`."""
    document = _load_json(body, what)
    try:
        signatures = tuple(
            SignedArtifact(
                name=str(item["name"]),
                digest_algorithm=str(item["digest_algorithm"]),
                digest=bytes.fromhex(item["digest"]),
                p7s=base64.b64decode(item["p7s"], validate=True),
                timestamp=item.get("timestamp"),
            )
            for item in document["signatures"]
        )
        receipt = document["receipt"]
        return SignResponse(
            request_id=str(document["request_id"]),
            key=str(document["key"]),
            key_version=int(document["key_version"]),
            signatures=signatures,
            receipt=Receipt(int(receipt["index"]), str(receipt["hash"]), dict(receipt["record"])),
        )
    except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as exc:
        raise ProtocolError(f"{what}: not a signing answer ({type(exc).__name__}: {exc})",
                            code="bad-answer") from None  # fmt: skip


# -- JSON schemas for the OpenAPI description (the app declares these; the parser above is the
# -- authority, and the schemathesis tests hold the two together) ---------------------------

ARTIFACT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "digest_algorithm", "digest"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME},
        "digest_algorithm": {"type": "string", "enum": list(DIGEST_SIZES)},
        "digest": {"type": "string", "pattern": "^([0-9a-fA-F]{2}){32,64}$"},
    },
}
SIGN_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["key", "artifacts"],
    "properties": {
        "key": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_NAME},
        "artifacts": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_ARTIFACTS,
            "items": ARTIFACT_SCHEMA,
        },
    },
}
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error", "request_id"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "field"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": ["string", "null"]},
            },
        },
        "request_id": {"type": ["string", "null"]},
    },
}
SIGN_RESPONSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["request_id", "key", "key_version", "signatures", "receipt"],
    "properties": {
        "request_id": {"type": "string"},
        "key": {"type": "string"},
        "key_version": {"type": "integer"},
        "signatures": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "digest_algorithm", "digest", "p7s", "timestamp"],
                "properties": {
                    "name": {"type": "string"},
                    "digest_algorithm": {"type": "string"},
                    "digest": {"type": "string"},
                    "p7s": {"type": "string", "contentEncoding": "base64"},
                    "timestamp": {"type": ["object", "null"]},
                },
            },
        },
        "receipt": {
            "type": "object",
            "required": ["index", "hash", "record"],
            "properties": {
                "index": {"type": "integer", "minimum": 0},
                "hash": {"type": "string"},
                "record": {"type": "object"},
            },
        },
    },
}
