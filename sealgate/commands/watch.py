"""`sealgate watch`: run the build under a watch of the sources, then prove the tree.

A source swapped during the build and restored afterwards (SUNSPOT) passes the tree proof;
the watch sees the writes. Exit: the build's own status if it failed, else 1 for tampering
(a violation or a tree difference; a tracked file with hard links refuses the build), else 0.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from integrity.errors import InputError
from integrity.tree import SUBMODULE_MODES, display_path
from integrity.watch import WatchReport, watch_build
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
        "watch",
        help="run the build and prove no tracked source was touched while it ran",
        description="Watches every directory of the work tree with inotify from before the "
        "build starts until it exits, and every tracked file's inode (writes through a hard "
        "link elsewhere); any write, rename, delete, attribute or link-count change or "
        "re-creation of a tracked path, or a new untracked path outside --outputs, is "
        "tampering. A tracked file with more than one hard link refuses the build (exit 1). "
        "The tree is proven against the commit afterwards.",
        usage="%(prog)s [--repo DIR] [--commit REV] [--outputs GLOB ...] [--json] "
        "-- BUILD COMMAND...",
    )
    parser.add_argument("--repo", type=Path, default=Path("."), help="repository (default: .)")
    parser.add_argument("--commit", default="HEAD", help="the signed commit (default: HEAD)")
    parser.add_argument(
        "--outputs",
        action="extend",
        nargs="+",
        default=[],
        metavar="GLOB",
        help="gitignore-style patterns of untracked paths the build may create (repeatable); "
        "git's ignore rules are not an allow-list here",
    )
    parser.add_argument(
        "--submodules",
        choices=SUBMODULE_MODES,
        default="prove",
        help="prove (default): submodule files are watched and proven at the commit their "
        "gitlink records; refuse: any submodule fails the final tree proof",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print a JSON report (the build's stdout goes to stderr)",
    )
    add_attest_options(parser)
    add_subject_option(parser, "default: the files matching --outputs")
    parser.add_argument("build", nargs=argparse.REMAINDER, help="the build command, after --")
    parser.set_defaults(handler=run)


def exit_status(report: WatchReport) -> int:
    """The build's failure first (the user needs to see it), then tampering."""
    if report.build_exit != 0:
        return report.build_exit
    return 1 if report.tampered else 0


def run(args: argparse.Namespace) -> int:
    attest_key(args)  # a missing key fails before the work
    command = list(args.build)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise InputError(
            "no build command given (sealgate watch ... -- BUILD COMMAND)",
            code="no-build-command",
            field="build",
        )
    sys.stdout.flush()
    report = watch_build(
        args.repo,
        command,
        outputs=args.outputs,
        commit=args.commit,
        stdout=sys.stderr.fileno() if args.json else None,
        submodules=args.submodules,
    )
    tree = report.tree
    if args.json:
        emit_json(
            {
                "build": command,
                "build_exit": report.build_exit,
                "build_ran": report.build_ran,
                "ok": report.ok,
                "tampered": report.tampered,
                "code": report.code,
                "outputs": list(args.outputs),
                "violations": [v.as_json() for v in report.violations],
                "tree": {
                    "commit": tree.commit,
                    "expected_tree": tree.expected_tree,
                    "actual_tree": tree.actual_tree,
                    "ok": tree.ok,
                    "code": tree.code,
                    "differences": [d.as_json() for d in tree.differences],
                },
            }
        )
    else:
        for violation in report.violations:
            print(violation.line())
        for difference in tree.differences:
            print(f"TREE {display_path(difference.path)}: {difference.kind} ({difference.detail})")
        build = (
            "build NOT RUN (refused before it started)"
            if not report.build_ran
            else "build succeeded"
            if report.build_exit == 0
            else f"build FAILED ({report.build_exit})"
        )
        proof = (
            f"tree matches {tree.commit[:12]}"
            if tree.ok
            else f"tree differs from {tree.commit[:12]} ({len(tree.differences)} paths)"
        )
        print(f"{build}; {len(report.violations)} violations during the build; {proof}")
    attest_result(
        args,
        check="watch",
        repo=args.repo,
        commit=tree.commit,
        subject_list=subjects(args.repo, args.attest_subject or args.outputs),
        passed=report.ok,
    )
    return exit_status(report)
