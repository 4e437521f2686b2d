"""`sealgate tree`: prove the workspace is exactly the signed commit's tree, before the build."""

from __future__ import annotations

import argparse
from pathlib import Path

from integrity.tree import SUBMODULE_MODES, prove_tree
from sealgate.attest import (
    add_attest_options,
    add_subject_option,
    attest_key,
    attest_result,
    subjects,
)
from sealgate.output import emit_json


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "tree",
        help="prove the working tree equals the commit's tree (bytes, modes, symlinks)",
        description="Recomputes the git tree id from the files themselves (never git's index "
        "or stat cache) and names every modified, added and deleted path. Untracked files, "
        "ignored files present before the build and FIFOs, sockets or devices count unless "
        "declared with --allow-untracked. Exit 1 on any difference.",
    )
    parser.add_argument("--repo", type=Path, default=Path("."), help="work tree (default: .)")
    parser.add_argument("--commit", default="HEAD", help="the signed commit (default: HEAD)")
    parser.add_argument(
        "--allow-untracked",
        action="append",
        default=[],
        metavar="GLOB",
        help="declared build outputs and caches that may exist untracked, ignored or not "
        "(gitignore-style; repeatable)",
    )
    parser.add_argument(
        "--submodules",
        choices=SUBMODULE_MODES,
        default="prove",
        help="prove (default): each submodule's files against the commit its gitlink records, "
        "read from the submodule's own object store; refuse: any submodule fails the proof",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON report")
    add_attest_options(parser)
    add_subject_option(parser, "required with --attest")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    attest_key(args)  # a missing key fails before the work
    report = prove_tree(
        args.repo, args.commit, allow_untracked=args.allow_untracked, submodules=args.submodules
    )
    if args.json:
        emit_json(
            {
                "commit": report.commit,
                "expected_tree": report.expected_tree,
                "actual_tree": report.actual_tree,
                "verified": report.ok,
                "code": report.code,
                "files": report.files,
                "differences": [d.as_json() for d in report.differences],
            }
        )
    else:
        for difference in report.differences:
            print(difference.line())
        verdict = "matches" if report.ok else "DIFFERS from"
        print(
            f"work tree {verdict} commit {report.commit[:12]} "
            f"(tree {report.expected_tree[:12]}, recomputed {report.actual_tree[:12]}; "
            f"{report.files} files, {len(report.differences)} difference(s))"
        )
    attest_result(
        args,
        check="tree",
        repo=args.repo,
        commit=report.commit,
        subject_list=subjects(args.repo, args.attest_subject),
        passed=report.ok,
    )
    return 0 if report.ok else 1
