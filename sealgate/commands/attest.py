"""`sealgate attest verify`: check a DSSE-signed verification summary before trusting its verdict.

Exit 0 when a trusted key signed the envelope and the summary says PASSED; 1 when the
signature does not verify or the summary says FAILED; 2 for input that cannot be read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from integrity.attestation import EXTENSION_KEY, parse_vsa
from integrity.errors import InputError
from sealgate.errors import SealgateError
from sealgate.output import emit_json
from signer.dsse import IN_TOTO_PAYLOAD_TYPE, load_envelope, open_envelope, public_keys_from_pem
from signer.errors import ConfigError, VerificationError
from signer.files import ENVELOPE_LIMIT, read_capped
from signer.keys import open_key


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "attest", help="verify signed verification summaries (DSSE, in-toto, SLSA VSA v1)"
    )
    sub = parser.add_subparsers(dest="attest_command", required=True, metavar="{verify}")
    verify = sub.add_parser(
        "verify",
        help="verify a DSSE envelope and the verdict of the summary inside",
        description="Exit 0 when a trusted key signed the envelope and its verificationResult "
        "is PASSED; 1 when the signature fails or the result is FAILED; 2 for unreadable input.",
    )
    verify.add_argument("envelope", type=Path, metavar="ENVELOPE")
    trust = verify.add_mutually_exclusive_group(required=True)
    trust.add_argument("--key", metavar="URI", help="trust the public key of this key URI")
    trust.add_argument(
        "--public-key",
        type=Path,
        metavar="PEM",
        help="trust the keys in this PEM file (certificates or PUBLIC KEY blocks)",
    )
    verify.add_argument("--json", action="store_true", help="print a JSON report")
    verify.set_defaults(handler=run_verify)


def _read_envelope(path: Path) -> bytes:
    """Unreadable or non-JSON input is a usage error (2), not a verdict on a signature (1).

    A FIFO or device is refused at once; duplicate fields and NaN are refused here too, so
    no two readers of one file can see two envelopes.
    """
    if not path.exists():
        raise SealgateError(f"{path}: no such envelope file")
    try:
        data = read_capped(path, what="envelope", limit=ENVELOPE_LIMIT)
    except ConfigError as exc:
        raise SealgateError(exc.message) from None
    try:
        load_envelope(data)
    except VerificationError as exc:
        detail = exc.message.removeprefix("envelope: ")
        raise SealgateError(f"{path}: not a JSON DSSE envelope ({detail})") from None
    return data


def _trusted_keys(args: argparse.Namespace) -> tuple[list[PublicKeyTypes], str]:
    if args.key:
        with open_key(args.key) as key:
            return [key.public_key()], key.display_uri
    return public_keys_from_pem(args.public_key), str(args.public_key)


def _summary(statement: dict[str, Any]) -> dict[str, Any]:
    predicate = statement["predicate"]
    extension = predicate.get(EXTENSION_KEY) or {}
    return {
        "check": extension.get("check"),
        "commit": extension.get("commit"),
        "result": predicate["verificationResult"],
        "levels": list(predicate["verifiedLevels"]),
        "resource": predicate["resourceUri"],
        "verified_at": predicate["timeVerified"],
        "verifier": predicate["verifier"]["id"],
        "subjects": [
            {"name": s["name"], "digest": dict(s["digest"])} for s in statement["subject"]
        ],
    }


def run_verify(args: argparse.Namespace) -> int:
    data = _read_envelope(args.envelope)
    keys, trusted_from = _trusted_keys(args)
    report: dict[str, Any] = {"envelope": str(args.envelope), "trusted": trusted_from}
    try:
        verified = open_envelope(data, keys, expected_type=IN_TOTO_PAYLOAD_TYPE)
    except VerificationError as exc:
        return _fail(args, report, exc.diagnostics())
    try:
        statement = parse_vsa(verified.payload)
    except InputError as exc:  # signed, but not a statement Sealgate can read: name the file
        raise SealgateError(f"{args.envelope}: {exc.message}", hint=exc.hint) from None
    summary = _summary(statement)
    report |= {"keyid": verified.keyid, **summary}
    if summary["result"] != "PASSED":
        return _fail(
            args,
            report,
            f"verificationResult is {summary['result']} "
            f"(check {summary['check']}, commit {summary['commit']})",
            show=summary,
        )
    if args.json:
        emit_json(report | {"verified": True})
    else:
        print(f"verified {args.envelope}: signed by keyid {verified.keyid[:16]}… ({trusted_from})")
        _print_summary(summary)
    return 0


def _print_summary(summary: dict[str, Any]) -> None:
    print(f"  check   {summary['check']}")
    print(f"  commit  {summary['commit']}")
    print(f"  result  {summary['result']}")
    print(f"  levels  {', '.join(summary['levels'])}")
    for subject in summary["subjects"]:
        digests = ", ".join(f"{k}:{v}" for k, v in sorted(subject["digest"].items()))
        print(f"  subject {subject['name']} {digests}")


def _fail(
    args: argparse.Namespace,
    report: dict[str, Any],
    reason: str,
    *,
    show: dict[str, Any] | None = None,
) -> int:
    """One line naming the envelope and the reason; the gate blocks (exit 1)."""
    if args.json:
        emit_json(report | {"verified": False, "reason": reason})
    elif show is not None:
        _print_summary(show)
    print(f"sealgate: error: {args.envelope}: {reason}", file=sys.stderr)
    return 1
