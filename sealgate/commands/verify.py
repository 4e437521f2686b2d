"""`sealgate verify`: the release gate. Blocks unsigned, tampered or untrusted builds.

Exit 0 when every artifact verified, 1 when any did not (a missing `.p7s` is a failure,
never a skip), 2 for unusable options, trust files, signature files or artifacts (a FIFO, a
device, an oversized file).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sealgate.errors import SealgateError
from sealgate.options import add_tsa_certs_option, tsa_certs
from sealgate.output import emit_json
from signer.chain import load_trust_roots
from signer.verify import (
    Level,
    Verdict,
    VerifyPolicy,
    load_crl,
    parse_identities,
    verify_artifact,
)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "verify",
        help="the release gate: verify artifacts against their .p7s signatures",
        description="Checks digest, signature, chain to a trust root with the codeSigning "
        "usage, identity and time (a trusted RFC 3161 token proves when the signature was "
        "made). Exit 1 when any artifact fails, 2 when a signature, certificate or CRL file "
        "is unusable (not a regular file, too large) or an option is malformed.",
    )
    parser.add_argument(
        "--trust-roots",
        type=Path,
        default=os.environ.get("SEALGATE_TRUST_ROOTS"),
        help="trust anchors (PEM) for signer certificates (or $SEALGATE_TRUST_ROOTS)",
    )
    parser.add_argument(
        "--tsa-roots",
        type=Path,
        default=os.environ.get("SEALGATE_TSA_ROOTS"),
        help="trust anchors (PEM) for timestamp authorities",
    )
    add_tsa_certs_option(parser)
    parser.add_argument(
        "--require-timestamp", action="store_true", help="refuse signatures without a trusted token"
    )
    parser.add_argument(
        "--identity",
        action="append",
        default=[],
        metavar="[subject:|email:|dns:|uri:]VALUE",
        help="allowed signer: subject:CN=..,O=.. (a bare value is a subject DN), email:ADDR, "
        "dns:NAME or uri:URI, each matched only against names of its own kind; repeatable",
    )
    parser.add_argument("--at", help="judge validity at this ISO 8601 time instead of now")
    parser.add_argument(
        "--crl", type=Path, action="append", default=[], help="CRL file (PEM or DER); repeatable"
    )
    parser.add_argument(
        "--level",
        choices=[level.value for level in Level],
        default=Level.STRICT.value,
        help="strict (default): enforce everything; audit: expiry, timestamp and revocation "
        "problems are warnings",
    )
    parser.add_argument(
        "--signature-dir", type=Path, help="look for ARTIFACT.p7s here instead of beside it"
    )
    parser.add_argument("--json", action="store_true", help="print a JSON report")
    parser.add_argument("artifacts", nargs="+", type=Path, metavar="ARTIFACT")
    parser.set_defaults(handler=run)


def parse_time(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SealgateError(
            f"{text!r}: not an ISO 8601 time", code="bad-time", field="at"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def policy_from(args: argparse.Namespace) -> VerifyPolicy:
    if args.trust_roots is None:
        raise SealgateError("--trust-roots is required (or set SEALGATE_TRUST_ROOTS)")
    parse_identities(args.identity)  # a malformed --identity is a usage error (exit 2) now
    return VerifyPolicy(
        trust_roots=load_trust_roots(Path(args.trust_roots), "--trust-roots"),
        tsa_roots=load_trust_roots(Path(args.tsa_roots), "--tsa-roots") if args.tsa_roots else (),
        tsa_certs=tsa_certs(args),
        identities=args.identity,
        at=parse_time(args.at) if args.at else None,
        require_timestamp=args.require_timestamp,
        crls=[load_crl(path) for path in args.crl],
        level=Level(args.level),
        signature_dir=args.signature_dir,
    )


def run(args: argparse.Namespace) -> int:
    policy = policy_from(args)
    workers = min(len(args.artifacts), os.cpu_count() or 1, 8)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        verdicts = list(pool.map(lambda a: verify_artifact(a, policy), args.artifacts))
    failed = [v for v in verdicts if not v.verified]
    if args.json:
        emit_json(
            {
                "level": policy.level.value,
                "verified": len(verdicts) - len(failed),
                "failed": len(failed),
                "artifacts": [v.as_json() for v in verdicts],
            }
        )
    else:
        for verdict in verdicts:
            print(describe(verdict))
        print(f"{len(verdicts) - len(failed)} verified, {len(failed)} failed")
    # 2 when a file was unusable (a FIFO, a device, oversized); 1 for a verification failure
    return max((v.exit_code for v in failed), default=0)


def describe(verdict: Verdict) -> str:
    lines = []
    if verdict.verified:
        stamp = (
            f"timestamp {verdict.timestamp.gen_time.isoformat()} by {verdict.timestamp.tsa_subject!r}"
            if verdict.timestamp
            else "no timestamp"
        )
        lines.append(f"verified {verdict.artifact}: signer {verdict.signer!r}, {stamp}")
    else:
        lines.append(f"FAILED {verdict.artifact}: {verdict.reason}")
    lines += [f"  warning: {warning}" for warning in verdict.warnings]
    return "\n".join(lines)
