"""Signed verification summaries: integrity builds the statement, signer wraps it in DSSE.

This is the one place the two meet (the house rule keeps `integrity` and `signer` apart),
so `tree`, `watch` and `rebuild` all write attestations the same way through
`add_attest_options` and `attest_from_args`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from integrity.artifacts import select_artifacts
from integrity.attestation import CHECK_LEVEL, statement_bytes, vsa_statement
from integrity.tree import display_path
from sealgate.errors import SealgateError
from signer.atomic import write_all
from signer.digest import digest_file
from signer.dsse import IN_TOTO_PAYLOAD_TYPE, envelope_bytes, sign_envelope
from signer.keys import open_key

ATTEST_KEY_ENV = "SEALGATE_ATTEST_KEY"


def write_attestation(key_uri: str, statement: Mapping[str, Any], out: Path) -> None:
    """Sign the statement as a DSSE envelope and write it atomically: no half-written file."""
    payload = statement_bytes(statement)
    with open_key(key_uri) as key:
        envelope = sign_envelope(key, payload, IN_TOTO_PAYLOAD_TYPE)
    write_all([(out, envelope_bytes(envelope))])


def add_attest_options(parser: argparse.ArgumentParser) -> None:
    """`--attest FILE --attest-key URI`, shared by the checks that can attest their result."""
    parser.add_argument(
        "--attest",
        type=Path,
        metavar="FILE",
        help="write a DSSE-signed in-toto verification summary (SLSA VSA v1) of the result",
    )
    parser.add_argument(
        "--attest-key",
        default=os.environ.get(ATTEST_KEY_ENV),
        metavar="URI",
        help=f"key URI that signs the summary (or ${ATTEST_KEY_ENV})",
    )


def attest_key(args: argparse.Namespace) -> str | None:
    """The key URI when `--attest` was asked for; checked before the work so a typo costs nothing."""
    if args.attest is None:
        return None
    if not args.attest_key:
        raise SealgateError(
            f"--attest needs --attest-key URI (or ${ATTEST_KEY_ENV})",
            code="missing-option",
            field="attest_key",
        )
    return str(args.attest_key)


def add_subject_option(parser: argparse.ArgumentParser, default_help: str) -> None:
    parser.add_argument(
        "--attest-subject",
        action="append",
        default=[],
        metavar="GLOB",
        help=f"files the summary is about (repo-relative, gitignore-style); {default_help}",
    )


def subjects(root: Path, globs: Sequence[str]) -> list[tuple[str, str]]:
    """(repo-relative name, sha256) of the regular files under `root` matching `globs`, chosen
    by the one artifact matcher and hashed by the one file hasher."""
    if not globs:
        return []
    found = {path for hits in select_artifacts(root, globs) for path in hits}
    return [
        (subject_name(root, path, field="attest_subject"), subject_digest(path))
        for path in sorted(found)
    ]


def subject_name(root: Path, path: Path, *, field: str) -> str:
    """The subject's repo-relative name; a VSA is UTF-8 JSON, so a name that is not UTF-8 is
    refused here (before signing, in `run`), not as an encoding error in the statement."""
    relative = path.relative_to(root).as_posix()
    try:
        relative.encode("utf-8")
    except UnicodeEncodeError:
        raise SealgateError(
            f"{display_path(relative)}: the name is not UTF-8, so the attestation cannot "
            "name it (rename the file, or switch the attestation off)",
            code="name-not-utf8",
            field=field,
        ) from None
    return relative


def subject_digest(path: Path) -> str:
    """The sha256 a VSA subject carries."""
    return digest_file(path, "sha256").digest.hex()


def attest_result(
    args: argparse.Namespace,
    *,
    check: str,
    repo: Path,
    commit: str,
    subject_list: Sequence[tuple[str, str]],
    passed: bool,
    policy: tuple[str, str] | None = None,
) -> None:
    """Write the check's signed summary when `--attest` was given (the verdict either way)."""
    key_uri = attest_key(args)
    if key_uri is None:
        return
    if not subject_list:
        raise SealgateError(
            "--attest: no subject to attest to",
            hint="name the files with --attest-subject GLOB",
            code="missing-option",
            field="attest_subject",
        )
    statement = vsa_statement(
        check=check,
        commit=commit,
        resource_uri=f"git+file://{repo.resolve()}@{commit}",
        subjects=subject_list,
        policy_uri=policy[0] if policy else None,
        policy_digest=policy[1] if policy else None,
        passed=passed,
        levels=[CHECK_LEVEL[check]],
    )
    write_attestation(key_uri, statement, args.attest)
    print(
        f"attestation ({'PASSED' if passed else 'FAILED'}) written to {args.attest}",
        file=sys.stderr,
    )
