"""`sealgate rebuild`: build the signed commit again elsewhere and demand the same bytes.

The backstop for a build server tampered with during the build: a fresh clone of the commit,
the same command in a normalised environment, and a digest comparison of every artifact.
Exit 0 when every artifact was reproduced, 1 otherwise (with an explanation of each mismatch).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from integrity.rebuild import RebuildReport, rebuild
from sealgate.attest import add_attest_options, attest_key, attest_result
from sealgate.output import emit_json


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "rebuild",
        help="rebuild the signed commit on a fresh clone and compare the artifacts bit for bit",
        description="Clones COMMIT into a temporary directory (never a copy of the workspace), "
        "runs `bash -c COMMAND` there with SOURCE_DATE_EPOCH = the commit time, TZ=UTC, "
        "LC_ALL/LANG=C.UTF-8, PYTHONHASHSEED=0, a fresh HOME, the caller's PATH and nothing else "
        "(see --pass-env), then compares each workspace artifact with the rebuilt one.",
    )
    # dest: `command` is the subcommand's own dest (the CLI finds the running parser by it)
    parser.add_argument(
        "--command",
        dest="build_command",
        required=True,
        help="the build command (run with bash -c)",
    )
    parser.add_argument(
        "--artifacts",
        action="append",
        required=True,
        metavar="GLOB",
        help="artifacts of the main build, relative to the repository root (repeatable)",
    )
    parser.add_argument("--commit", default="HEAD", help="the signed commit (default: HEAD)")
    parser.add_argument("--repo", type=Path, default=Path("."), help="repository (default: .)")
    parser.add_argument(
        "--pass-env",
        action="append",
        default=[],
        metavar="NAME",
        help="pass this variable of the caller to the build (repeatable; values never shown)",
    )
    parser.add_argument("--timeout", type=float, help="stop the build after SECONDS")
    parser.add_argument(
        "--no-diffoscope", action="store_true", help="do not run diffoscope on mismatches"
    )
    parser.add_argument("--keep", action="store_true", help="keep the clone and the build log")
    parser.add_argument("--json", action="store_true", help="print a JSON report")
    add_attest_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    attest_key(args)  # a missing key fails before the work
    report = rebuild(
        args.repo,
        args.commit,
        args.build_command,
        args.artifacts,
        args.pass_env,
        keep=args.keep,
        timeout=args.timeout,
        diffoscope=not args.no_diffoscope,
    )
    if args.json:
        emit_json(report.to_json())
    else:
        _print_text(report)
    attest_result(
        args,
        check="rebuild",
        repo=args.repo,
        commit=report.commit,
        subject_list=[(a.path, a.expected_sha256) for a in report.artifacts],
        passed=report.reproduced,
    )
    return 0 if report.reproduced else 1


def _print_text(report: RebuildReport) -> None:
    if report.failure:
        print(f"commit {report.commit}: {report.failure}")
        if report.log_tail.strip():
            print("build log (tail):", file=sys.stderr)
            print(report.log_tail, file=sys.stderr)
    for artifact in report.artifacts:
        rebuilt = artifact.rebuilt_sha256 or "-"
        print(
            f"{artifact.status} {artifact.path}: expected sha256 {artifact.expected_sha256}, "
            f"rebuilt sha256 {rebuilt}"
        )
        for line in artifact.differences:
            print(f"  {line}")
        if artifact.diffoscope:
            print("  diffoscope:")
            for line in artifact.diffoscope.splitlines():
                print(f"    {line}")
    done = sum(a.reproduced for a in report.artifacts)
    print(f"{done} of {len(report.artifacts)} artifacts reproduced from commit {report.commit}")
    if report.clone_dir:
        print(f"clone kept in {report.clone_dir} (build log {report.log_file})")
