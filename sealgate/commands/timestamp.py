"""`sealgate timestamp`: add an RFC 3161 token to signatures made earlier (CAdES-BES -> CAdES-T)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sealgate.options import TSA_OPTIONS, add_tsa_options, resolve, tsa_settings
from sealgate.output import emit_json
from signer.sign import timestamp_signatures


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "timestamp",
        help="add RFC 3161 timestamps to existing .p7s signatures",
        description="Sign in one zone, timestamp later: each token is verified (nonce, "
        "imprint, TSA chain) before it is added, and all files are rewritten together.",
    )
    add_tsa_options(parser, required=True)
    parser.add_argument("--json", action="store_true", help="print a JSON report")
    parser.add_argument(
        "signatures", nargs="+", type=Path, metavar="ARTIFACT.p7s", help="signatures to stamp"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = tsa_settings(resolve(args, TSA_OPTIONS), required=True)
    assert settings is not None  # noqa: S101 - required=True never returns None
    stamped = timestamp_signatures(args.signatures, settings)
    if args.json:
        emit_json(
            {
                "timestamped": [
                    {"signature": str(path), "timestamp": token.as_json()}
                    for path, token in stamped
                ]
            }
        )
    else:
        for path, token in stamped:
            print(f"timestamped {path}: {token.gen_time.isoformat()} by {token.tsa_subject!r}")
    return 0
