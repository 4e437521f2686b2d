"""`sealgate commits`: prove the source before anything is signed.

Every commit in the range must carry a valid SSH or OpenPGP signature by a key that the
policy of the trusted base allows for the paths it touches. Exit 1 when any commit fails.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from integrity.commits import CommitChecker, Repository, Verdict, load_cache, save_cache
from integrity.errors import InputError
from integrity.repository import parse_range
from sealgate.options import policy_file
from sealgate.output import emit_json


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "commits",
        help="verify that every commit of a range is signed by a key the policy allows",
        description="The policy is read from the trusted base revision (.sealgate/policy.yml), "
        "never from the commits under test; key rotation follows the commit graph.",
    )
    parser.add_argument("--repo", type=Path, default=Path("."), help="repository (default: .)")
    parser.add_argument(
        "--range",
        default=os.environ.get("SEALGATE_RANGE"),
        metavar="BASE..HEAD",
        help="commits to verify; the policy comes from BASE (or $SEALGATE_RANGE)",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--policy", type=Path, help="a policy file from outside the repository")
    source.add_argument("--policy-rev", help="take the policy from this revision (default: BASE)")
    parser.add_argument(
        "--tag", action="append", default=[], help="also verify this signed tag (repeatable)"
    )
    parser.add_argument("--no-cache", action="store_true", help="ignore cached verdicts")
    parser.add_argument("--json", action="store_true", help="print a JSON report")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if not args.range and not args.tag:
        raise InputError("--range BASE..HEAD is required (or --tag, or $SEALGATE_RANGE)")
    repo = Repository(args.repo)
    try:
        base, head = parse_range(args.range) if args.range else (None, None)
        policy_rev = args.policy_rev or base
        if args.policy:
            policy = policy_file(args.policy)
        elif policy_rev:
            if args.policy_rev:
                at = repo.resolve(policy_rev, field="policy_rev", code="commit-unresolved")
            else:
                at = repo.resolve(policy_rev)
            policy = repo.policy_at(at)
        else:
            raise InputError("--tag without --range needs --policy or --policy-rev")
        checker = CommitChecker(repo, policy, fixed_policy=args.policy is not None)
        cache = None if args.no_cache else load_cache(repo)
        verdicts: list[Verdict] = []
        head_oid = None
        if base and head:
            verdicts += checker.check_range(base, head, cache=cache)
            head_oid = repo.resolve(head)
        verdicts += [checker.check_tag(tag, head_oid) for tag in args.tag]
        if cache is not None:
            save_cache(repo, cache)
    finally:
        repo.reader.close()
    failed = [v for v in verdicts if not v.verified]
    if args.json:
        emit_json(
            {
                "range": args.range,
                "policy": policy.source,
                "checked": len(verdicts),
                "failed": len(failed),
                "commits": [v.as_json() for v in verdicts],
            }
        )
    else:
        for verdict in failed:
            print(verdict.line())
        print(f"{len(verdicts) - len(failed)} verified, {len(failed)} failed ({policy.source})")
    return 1 if failed else 0
