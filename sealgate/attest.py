"""Signed verification summaries: integrity builds the statement, signer wraps it in DSSE.

This is the one place the two meet (the house rule keeps `integrity` and `signer` apart),
so `tree`, `watch` and `rebuild` all write attestations the same way through
`add_attest_options` and `attest_from_args`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from integrity.attestation import statement_bytes
from sealgate.errors import SealgateError
from signer.atomic import write_all
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
        raise SealgateError(f"--attest needs --attest-key URI (or ${ATTEST_KEY_ENV})")
    return str(args.attest_key)
