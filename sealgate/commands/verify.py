"""`sealgate verify`: the release gate. Blocks unsigned, tampered or untrusted builds.

Exit 0 when every artifact verified, 1 when any did not (a missing `.p7s` is a failure,
never a skip), 2 for unusable options, trust files, signature files or artifacts (a FIFO, a
device, an oversized file).
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sealgate.options import VERIFY_OPTIONS, add_verify_options, resolve, verify_policy
from sealgate.output import emit_json, one_line
from signer.verify import (
    Verdict,
    VerifyPolicy,
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
    add_verify_options(parser)
    parser.add_argument(
        "--signature-dir", type=Path, help="look for ARTIFACT.p7s here instead of beside it"
    )
    parser.add_argument("--json", action="store_true", help="print a JSON report")
    parser.add_argument(
        "artifacts", nargs="+", type=Path, metavar="ARTIFACT", help="files to verify"
    )
    parser.set_defaults(handler=run)


def policy_from(args: argparse.Namespace) -> VerifyPolicy:
    return verify_policy(resolve(args, VERIFY_OPTIONS), signature_dir=args.signature_dir)


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
        lines.append(f"FAILED {verdict.artifact}: {verdict.reason} [{verdict.code}]")
    lines += [
        f"  warning: {warning} [{code}]"
        for warning, code in zip(verdict.warnings, verdict.warning_codes, strict=True)
    ]
    return "\n".join(one_line(line) for line in lines)
