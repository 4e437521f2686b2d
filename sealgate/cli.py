"""The `sealgate` command line.

Exit codes (every command): 0 verified / done; 1 policy or verification failure (the gate
blocks); 2 usage or configuration error; 3 infrastructure failure (HSM, KMS, TSA or network
unavailable after retries). Every failure is one line naming the file, key or field.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from integrity.errors import IntegrityError
from sealgate import __version__
from sealgate.commands import commits, demo, keys, policy, sign, timestamp, verify
from sealgate.errors import SealgateError
from signer.errors import SignerError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INFRA = 0, 1, 2, 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sealgate",
        description="The code-signing gate for CI/CD.",
        epilog="exit codes: 0 done, 1 verification failure, 2 usage/configuration error, "
        "3 HSM/KMS/TSA unavailable",
    )
    parser.add_argument("--version", action="version", version=f"sealgate {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (sign, timestamp, verify, commits, policy, keys, demo):
        module.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except (SignerError, IntegrityError, SealgateError) as exc:
        print(f"sealgate: error: {exc.diagnostics()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("sealgate: interrupted; nothing was written", file=sys.stderr)
        return 130
    return code
