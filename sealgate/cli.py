"""The `sealgate` command line.

Exit codes (every command): 0 verified / done; 1 policy or verification failure (the gate
blocks); 2 usage or configuration error; 3 infrastructure failure (HSM, KMS, TSA or network
unavailable after retries). Every failure is one line naming the file, key or field.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from integrity.errors import IntegrityError
from sealgate import __version__
from sealgate.errors import SealgateError
from signer.errors import SignerError
from signer.redact import environment_secrets, redact_text

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INFRA = 0, 1, 2, 3


#: command -> module with `add_parser()`. Only the command being run is imported, so
#: `sealgate commits` does not pay for the HSM, TSA and HTTP stacks it never uses.
COMMANDS = {
    "sign": "sealgate.commands.sign",
    "timestamp": "sealgate.commands.timestamp",
    "verify": "sealgate.commands.verify",
    "commits": "sealgate.commands.commits",
    "tree": "sealgate.commands.tree",
    "policy": "sealgate.commands.policy",
    "keys": "sealgate.commands.keys",
    "demo": "sealgate.commands.demo",
    "attest": "sealgate.commands.attest",
    "watch": "sealgate.commands.watch",
    "rebuild": "sealgate.commands.rebuild",
    "run": "sealgate.commands.run",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sealgate",
        description="The code-signing gate for CI/CD.",
        epilog="exit codes: 0 done, 1 verification failure, 2 usage/configuration error, "
        "3 HSM/KMS/TSA unavailable",
    )
    parser.add_argument("--version", action="version", version=f"sealgate {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        if only is None or name == only:
            importlib.import_module(module).add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in arguments if not a.startswith("-")), None)
    args = build_parser(first if first in COMMANDS else None).parse_args(arguments)
    try:
        code: int = args.handler(args)
    except (SignerError, IntegrityError, SealgateError) as exc:
        secrets = environment_secrets(os.environ)
        print(f"sealgate: error: {redact_text(exc.diagnostics(), secrets)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("sealgate: interrupted; nothing was written", file=sys.stderr)
        return 130
    return code
