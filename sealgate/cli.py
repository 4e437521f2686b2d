"""The `sealgate` command line.

Exit codes (every command): 0 verified / done; 1 policy or verification failure (the gate
blocks); 2 usage or configuration error; 3 infrastructure failure (HSM, KMS, TSA or network
unavailable after retries). Every failure is one line naming the file, key or field.
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import sys
from collections.abc import Mapping, Sequence

from integrity.errors import IntegrityError
from sealgate import __version__
from sealgate.errors import SealgateError
from sealgate.output import emit_json, os_error_line
from signer.errors import SignerError
from signer.redact import environment_secrets, redact_text

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INFRA = 0, 1, 2, 3
#: the reason code of an OS error on a path that escaped a command
PATH_ERROR = "path-error"
#: the output's reader closed it early: 128 + SIGPIPE, as a shell reports a killed writer
EXIT_BROKEN_PIPE = 141


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
    "serve": "sealgate.commands.serve",
    "audit": "sealgate.commands.audit",
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


def _chosen_parsers(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> list[argparse.ArgumentParser]:
    """The parser of the running command and its parents (`keys csr`: top, keys, csr)."""
    chain: list[argparse.ArgumentParser] = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices.get(getattr(args, action.dest, None) or "")
            if chosen is not None:
                chain += _chosen_parsers(chosen, args)
    return chain


def flag_names(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, str]:
    """dest -> option string of the running command, read from its parser (never a second list)."""
    names: dict[str, str] = {}
    for each in _chosen_parsers(parser, args):
        for action in each._actions:
            longs = [o for o in action.option_strings if o.startswith("--")]
            if longs and action.dest not in ("help", "version"):
                names[action.dest] = longs[0]
    return names


def error_line(exc: SignerError | IntegrityError | SealgateError, flags: Mapping[str, str]) -> str:
    """The message, led by the flag of the field it is about unless it already names it."""
    message = exc.diagnostics()
    flag = flags.get(exc.field or "")
    if flag and not message.startswith(flag):
        message = f"{flag}: {message}"
    return message


def _fail(args: argparse.Namespace, code: str, message: str, field: str | None) -> None:
    """The error line on stderr; with --json also the error document on stdout."""
    message = redact_text(message, environment_secrets(os.environ))
    if getattr(args, "json", False) is True:
        try:
            emit_json({"error": {"code": code, "message": message, "field": field}})
        except BrokenPipeError:  # the error line below still tells the story
            _silence_stdout()
    print(f"sealgate: error: [{code}] {message}", file=sys.stderr)


def _printable_streams() -> None:
    """A file name that is not UTF-8 is printed escaped, never a UnicodeEncodeError traceback
    (which would be exit 1, "verification failed") under a strict locale."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper) and stream.errors == "strict":
            stream.reconfigure(errors="backslashreplace")


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail a second time."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    _printable_streams()
    arguments = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in arguments if not a.startswith("-")), None)
    parser = build_parser(first if first in COMMANDS else None)
    args = parser.parse_args(arguments)
    try:
        code: int = args.handler(args)
        sys.stdout.flush()  # a reader that went away shows here, not at the interpreter's exit
    except (SignerError, IntegrityError, SealgateError) as exc:
        _fail(args, exc.code, error_line(exc, flag_names(parser, args)), exc.field)
        return exc.exit_code
    except BrokenPipeError:  # the reader went away (`| head`): no traceback, and never a pass
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except OSError as exc:  # a path too long, not a directory, not permitted: usage, not a verdict
        _fail(args, PATH_ERROR, os_error_line(exc), None)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("sealgate: interrupted; nothing was written", file=sys.stderr)
        return 130
    return code
