"""`sealgate policy`: check a signing policy, or import one from allowed-signers or sequoia-git."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from integrity.errors import InputError
from integrity.files import POLICY_LIMIT, read_regular
from integrity.policy import load_policy_file
from integrity.policy_import import Imported, from_allowed_signers, from_sequoia_policy


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("policy", help="check or import a commit-signing policy")
    sub = parser.add_subparsers(dest="policy_command", required=True, metavar="{check,import}")
    check = sub.add_parser("check", help="validate a policy and print what it allows")
    check.add_argument("file", type=Path, metavar="FILE")
    check.set_defaults(handler=run_check)
    imp = sub.add_parser("import", help="write a policy from keys users already have")
    source = imp.add_mutually_exclusive_group(required=True)
    source.add_argument("--allowed-signers", type=Path, metavar="FILE",
                        help="git's gpg.ssh.allowedSignersFile")  # fmt: skip
    source.add_argument("--openpgp-policy", type=Path, metavar="FILE",
                        help="sequoia-git's openpgp-policy.toml")  # fmt: skip
    imp.add_argument("--out", type=Path, help="write the policy here (default: stdout)")
    imp.set_defaults(handler=run_import)


def run_check(args: argparse.Namespace) -> int:
    policy = load_policy_file(args.file)
    print(f"{args.file}: valid policy (sha256 {policy.digest[:16]}…)")
    for signer in policy.signers:
        keys = [k.fingerprint for k in signer.ssh] + [k.fingerprint for k in signer.openpgp]
        print(f"  {signer.name}: roles {', '.join(sorted(signer.roles)) or 'none'}; "
              f"keys {', '.join(keys)}")  # fmt: skip
    print("  every commit needs: developer; changes to .sealgate/ need: policy-admin")
    for rule in policy.rules:
        print(f"  commits touching {', '.join(rule.patterns)} need: {rule.require}")
    if policy.forge_web_flow:
        print(f"  forge (github-web-flow) commits accepted: {policy.forge_web_flow}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    path: Path = args.allowed_signers or args.openpgp_policy
    what = "--allowed-signers" if args.allowed_signers else "--openpgp-policy"
    data = read_regular(path, what=what, limit=POLICY_LIMIT)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} {path}: not UTF-8 text (byte {exc.start})") from None
    imported: Imported = (
        from_allowed_signers(text, source=str(path))
        if args.allowed_signers
        else from_sequoia_policy(text, source=str(path))
    )
    document = yaml.safe_dump(imported.document, sort_keys=False, width=1000)
    header = "".join(f"# note: {note}\n" for note in imported.notes)
    if args.out:
        args.out.write_text(header + document)
        print(f"wrote {args.out}; check it with `sealgate policy check {args.out}`")
    else:
        sys.stdout.write(header + document)
    for note in imported.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0
