"""In-toto Statement v1 carrying a SLSA Verification Summary (VSA v1) of one integrity check.

Integrity only builds and reads the statement; signing it (DSSE) is the signer's job and
`sealgate` joins the two, so this module knows nothing about keys.

`verifiedLevels` vocabulary. The VSA spec allows custom values but forbids custom values
that start with ``SLSA_``, so Sealgate's own verdicts carry a ``SEALGATE_`` prefix:

- ``SEALGATE_COMMITS_VERIFIED``: every commit in the range is signed by a key the policy allows.
- ``SEALGATE_TREE_VERIFIED``: the workspace bytes equal the signed commit's tree.
- ``SEALGATE_BUILD_WATCHED``: no source file was written while the build ran.
- ``SEALGATE_BUILD_REPRODUCED``: a clean rebuild produced the same artifacts (the issue's
  "SLSA_BUILD_REPRODUCED" verdict, renamed to stay inside the spec).
- ``SLSA_BUILD_LEVEL_0`` .. ``SLSA_BUILD_LEVEL_3``: the spec's own track levels.
- ``FAILED``: what the spec asks for in place of levels when verification failed.

Sealgate's own fields (`check`, `commit`) sit under the URI-named extension key
`EXTENSION_KEY`, as the spec allows ("producers MAY add extension fields using field names
that are URIs").
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from integrity.errors import InputError

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
VSA_PREDICATE_TYPE = "https://slsa.dev/verification_summary/v1"
VERIFIER_ID = "https://sealgate.dev/verifier"
EXTENSION_KEY = "https://sealgate.dev/vsa/v1"
BUILTIN_POLICY_URI = "https://sealgate.dev/policy/builtin/"
SLSA_VERSION = "1.0"

CHECKS = ("commits", "tree", "watch", "rebuild")

LEVEL_COMMITS_VERIFIED = "SEALGATE_COMMITS_VERIFIED"
LEVEL_TREE_VERIFIED = "SEALGATE_TREE_VERIFIED"
LEVEL_BUILD_WATCHED = "SEALGATE_BUILD_WATCHED"
LEVEL_BUILD_REPRODUCED = "SEALGATE_BUILD_REPRODUCED"
SEALGATE_LEVELS = (
    LEVEL_COMMITS_VERIFIED,
    LEVEL_TREE_VERIFIED,
    LEVEL_BUILD_WATCHED,
    LEVEL_BUILD_REPRODUCED,
)
SLSA_LEVELS = tuple(f"SLSA_BUILD_LEVEL_{n}" for n in range(4))
FAILED = "FAILED"

#: The level each check earns when it passes: what the commands put in `levels`.
CHECK_LEVEL = {
    "commits": LEVEL_COMMITS_VERIFIED,
    "tree": LEVEL_TREE_VERIFIED,
    "watch": LEVEL_BUILD_WATCHED,
    "rebuild": LEVEL_BUILD_REPRODUCED,
}

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_HEX = re.compile(r"[0-9a-f]+")


class StatementError(InputError):
    """An attestation statement that is not the strict in-toto VSA we write (exit 2)."""

    code = "statement-invalid"


def _verifier_version() -> str:
    """The installed distribution's version: integrity may not import `sealgate` itself."""
    try:
        return importlib.metadata.version("sealgate")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _rfc3339(moment: dt.datetime) -> str:
    if moment.tzinfo is None:
        raise InputError("verified_at: a naive datetime is ambiguous; give it a timezone")
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_level(level: str) -> None:
    """Refuse custom `SLSA_*` values (the spec forbids them) and empty strings."""
    if not level or level == FAILED:
        raise InputError(f"levels: {level!r} is not a level (FAILED follows from passed=False)")
    if level.startswith("SLSA_") and level not in SLSA_LEVELS:
        raise InputError(
            f"levels: {level!r} is a custom value starting with SLSA_, which the VSA spec forbids",
            hint=f"Sealgate's verdicts are {', '.join(SEALGATE_LEVELS)}",
        )


def vsa_statement(
    *,
    check: str,
    commit: str,
    resource_uri: str,
    subjects: Sequence[tuple[str, str]],
    policy_uri: str | None,
    policy_digest: str | None,
    passed: bool,
    levels: Sequence[str],
    verified_at: dt.datetime | None = None,
    verifier_version: str | None = None,
) -> dict[str, Any]:
    """The statement one check attests to; refuses anything `parse_vsa` would refuse.

    `subjects` are (name, sha256 hex). Without a policy file the check's built-in policy
    URI is named, because the spec requires `policy.uri`. A failed check records
    `verifiedLevels: ["FAILED"]` as the spec asks; `levels` are then ignored.
    """
    if check not in CHECKS:
        raise InputError(f"check: {check!r} is not one of {', '.join(CHECKS)}")
    if not commit or not _HEX.fullmatch(commit):
        raise InputError(f"commit: {commit!r} is not a hex commit id")
    if not resource_uri:
        raise InputError("resourceUri: empty")
    if not subjects:
        raise InputError("subject: at least one subject is required")
    subject_list: list[dict[str, Any]] = []
    for name, digest in subjects:
        if not name:
            raise InputError("subject.name: empty")
        if not _SHA256_HEX.fullmatch(digest):
            raise InputError(f"subject {name!r}: digest {digest!r} is not lowercase sha256 hex")
        subject_list.append({"name": name, "digest": {"sha256": digest}})
    policy: dict[str, Any] = {"uri": policy_uri or BUILTIN_POLICY_URI + check}
    if policy_digest is not None:
        if not _SHA256_HEX.fullmatch(policy_digest):
            raise InputError(f"policy.digest: {policy_digest!r} is not lowercase sha256 hex")
        policy["digest"] = {"sha256": policy_digest}
    if passed:
        for level in levels:
            _check_level(level)
        verified_levels = list(dict.fromkeys(levels))
        if not verified_levels:
            raise InputError("levels: a passed check must name at least one level")
    else:
        verified_levels = [FAILED]
    moment = verified_at or dt.datetime.now(dt.UTC)
    return {
        "_type": STATEMENT_TYPE,
        "subject": subject_list,
        "predicateType": VSA_PREDICATE_TYPE,
        "predicate": {
            "verifier": {
                "id": VERIFIER_ID,
                "version": {"sealgate": verifier_version or _verifier_version()},
            },
            "timeVerified": _rfc3339(moment),
            "resourceUri": resource_uri,
            "policy": policy,
            "inputAttestations": [],
            "verificationResult": "PASSED" if passed else "FAILED",
            "verifiedLevels": verified_levels,
            "slsaVersion": SLSA_VERSION,
            EXTENSION_KEY: {"check": check, "commit": commit},
        },
    }


def statement_bytes(statement: Mapping[str, Any]) -> bytes:
    """Canonical JSON (sorted keys, no spaces, UTF-8): the same statement always signs the same."""
    return json.dumps(
        statement, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Two parsers must never read two different statements from one payload."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise StatementError(f"{key}: duplicate field in the statement")
        result[key] = value
    return result


def _reject_constant(token: str) -> None:
    raise StatementError(f"statement holds {token}, which is not JSON")


def _field(parent: Mapping[str, Any], name: str, kind: type, where: str) -> Any:
    if name not in parent:
        raise StatementError(f"{where}{name}: missing")
    value = parent[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise StatementError(f"{where}{name}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def _digest_set(value: Any, where: str) -> None:
    if not isinstance(value, dict) or not value:
        raise StatementError(f"{where}: expected a non-empty digest set")
    for algorithm, hexdigest in value.items():
        if not isinstance(hexdigest, str) or not _HEX.fullmatch(hexdigest):
            raise StatementError(f"{where}.{algorithm}: not lowercase hex")
    if "sha256" in value and not _SHA256_HEX.fullmatch(value["sha256"]):
        raise StatementError(f"{where}.sha256: not 64 hex digits")


def _timestamp(value: str, where: str) -> None:
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise StatementError(f"{where}: {value!r} is not an RFC 3339 timestamp") from None
    if moment.tzinfo is None:
        raise StatementError(f"{where}: {value!r} has no timezone")


def _printable_strings(value: Any, where: str, depth: int = 0) -> None:
    """JSON escapes can spell lone surrogates (\\ud800) that no UTF-8 output can print."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise StatementError(
                f"{where}: holds an unpaired surrogate (not Unicode text)"
            ) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _printable_strings(key, where, depth + 1)
            _printable_strings(item, f"{where}.{key}" if depth < 4 else where, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _printable_strings(item, where, depth + 1)


def parse_vsa(payload: bytes) -> dict[str, Any]:
    """Read a signed VSA statement, refusing any shape a consumer could misread.

    Every error names the field. Unrecognised fields are ignored, as the in-toto parsing
    rules require; Sealgate's extension is checked when present.
    """
    try:
        statement = json.loads(
            payload, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant
        )
    except (ValueError, RecursionError) as exc:
        raise StatementError(f"statement: not JSON ({exc})") from None
    if not isinstance(statement, dict):
        raise StatementError("statement: expected a JSON object")
    try:
        _printable_strings(statement, "statement")
    except RecursionError:
        raise StatementError("statement: nested too deeply") from None
    if _field(statement, "_type", str, "") != STATEMENT_TYPE:
        raise StatementError(f"_type: {statement['_type']!r} is not {STATEMENT_TYPE}")
    subjects = _field(statement, "subject", list, "")
    if not subjects:
        raise StatementError("subject: empty")
    for index, subject in enumerate(subjects):
        if not isinstance(subject, dict):
            raise StatementError(f"subject[{index}]: expected an object")
        _field(subject, "name", str, f"subject[{index}].")
        _digest_set(
            _field(subject, "digest", dict, f"subject[{index}]."), f"subject[{index}].digest"
        )
    if _field(statement, "predicateType", str, "") != VSA_PREDICATE_TYPE:
        raise StatementError(
            f"predicateType: {statement['predicateType']!r} is not {VSA_PREDICATE_TYPE}"
        )
    predicate = _field(statement, "predicate", dict, "")
    verifier = _field(predicate, "verifier", dict, "predicate.")
    _field(verifier, "id", str, "predicate.verifier.")
    _timestamp(_field(predicate, "timeVerified", str, "predicate."), "predicate.timeVerified")
    _field(predicate, "resourceUri", str, "predicate.")
    policy = _field(predicate, "policy", dict, "predicate.")
    _field(policy, "uri", str, "predicate.policy.")
    if "digest" in policy:
        _digest_set(policy["digest"], "predicate.policy.digest")
    attestations = predicate.get("inputAttestations", [])
    if not isinstance(attestations, list):
        raise StatementError("predicate.inputAttestations: expected list")
    for index, attestation in enumerate(attestations):
        where = f"predicate.inputAttestations[{index}]"
        if not isinstance(attestation, dict):
            raise StatementError(f"{where}: expected an object")
        _digest_set(_field(attestation, "digest", dict, f"{where}."), f"{where}.digest")
    result = _field(predicate, "verificationResult", str, "predicate.")
    if result not in ("PASSED", "FAILED"):
        raise StatementError(f"predicate.verificationResult: {result!r} is not PASSED or FAILED")
    levels = _field(predicate, "verifiedLevels", list, "predicate.")
    if not all(isinstance(level, str) for level in levels):
        raise StatementError("predicate.verifiedLevels: every level must be a string")
    if result == "PASSED" and FAILED in levels:
        raise StatementError("predicate.verifiedLevels: FAILED in a PASSED summary")
    if "dependencyLevels" in predicate:
        dependencies = _field(predicate, "dependencyLevels", dict, "predicate.")
        for level, count in dependencies.items():
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise StatementError(f"predicate.dependencyLevels.{level}: not a count")
    if "slsaVersion" in predicate:
        _field(predicate, "slsaVersion", str, "predicate.")
    if EXTENSION_KEY in predicate:
        extension = _field(predicate, EXTENSION_KEY, dict, "predicate.")
        check = _field(extension, "check", str, f"predicate.{EXTENSION_KEY}.")
        if check not in CHECKS:
            raise StatementError(
                f"predicate.{EXTENSION_KEY}.check: {check!r} is not a Sealgate check"
            )
        _field(extension, "commit", str, f"predicate.{EXTENSION_KEY}.")
    return statement
