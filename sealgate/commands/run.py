"""`sealgate run`: commits, tree, the watched build, sign, verify and attest, in one command.

Settings come from flags, then `SEALGATE_*` variables, then `sealgate.yml` in the repository
root. Exit: 0 all stages passed, 1 a check or verification failed (a failure before `sign`
leaves no signature), 2 bad input, 3 HSM/KMS/TSA unavailable.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from sealgate.options import add_tsa_options, add_verify_options
from sealgate.pipeline import Pipeline, human_lines, resolve_config, write_outputs

_S = argparse.SUPPRESS


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `sealgate run`; every unset flag falls back to $SEALGATE_*, then sealgate.yml."""
    parser = commands.add_parser(
        "run",
        help="the whole pipeline: commits, tree, watched build, sign, verify, attest",
        description="Proves the source, runs the build under watch, signs the artifacts "
        "through the HSM/KMS, verifies the signatures and writes a signed VSA. Each flag "
        "may come from $SEALGATE_<NAME> or from sealgate.yml (snake_case keys); flags win "
        "over the environment, which wins over the file.",
        argument_default=_S,
    )
    add = parser.add_argument
    add("--repo", type=Path, help="repository (default: .; or $SEALGATE_REPO)")
    add("--config", type=Path, help="settings file (default: REPO/sealgate.yml)")
    add(
        "--range",
        metavar="BASE..HEAD",
        help="commits to verify (default: from the newest tag signed under a fixed --policy, "
        "else the merge base with the protected branch, to HEAD)",
    )
    add(
        "--base-branch",
        metavar="REF",
        help="protected branch whose merge base with HEAD starts the default range "
        "(default: origin/$GITHUB_BASE_REF, origin/$CI_MERGE_REQUEST_TARGET_BRANCH_NAME, "
        "the default branch)",
    )
    add("--policy", type=Path, help="commit policy file from outside the repository")
    add("--build-command", metavar="CMD", help="the build, run with /bin/sh -c under watch")
    add(
        "--artifacts",
        action="extend",
        nargs="+",
        metavar="GLOB",
        help="what to sign: repo-relative gitignore-style globs, matched after the build",
    )
    add(
        "--outputs",
        action="extend",
        nargs="+",
        metavar="GLOB",
        help="other untracked paths the build may create",
    )
    add("--key", metavar="URI", help="signing key URI (pkcs11:, hashivault://, awskms://)")
    add(
        "--certificate",
        "--cert",
        dest="certificate",
        type=Path,
        help="signer certificate (default: the one stored with the key)",
    )
    add("--chain", action="append", metavar="PEM", help="intermediate certificates (repeatable)")
    add("--service", metavar="URL", help="sign through the signing service (no --key then)")
    add("--service-key", metavar="NAME", help="the service's key name (with --service)")
    add("--service-audience", metavar="AUD", help="the OIDC token's audience (default: --service)")
    add("--id-token-var", metavar="NAME", help="GitLab id_tokens variable (SEALGATE_ID_TOKEN)")
    add("--attest-key", metavar="URI", help="key that signs the VSA (default: --key)")
    add(
        "--attestation",
        type=Path,
        metavar="FILE",
        help="where the VSA goes (default: sealgate-vsa.intoto.json beside the report)",
    )
    add("--report", type=Path, metavar="FILE", help="JSON report (default: ./sealgate-report.json)")
    add(
        "--no-commits",
        dest="verify_commits",
        action="store_const",
        const=False,
        help="skip the commits stage ($SEALGATE_VERIFY_COMMITS=false)",
    )
    add(
        "--no-tree",
        dest="check_tree",
        action="store_const",
        const=False,
        help="skip the tree stage ($SEALGATE_CHECK_TREE=false)",
    )
    add(
        "--no-verify",
        dest="verify",
        action="store_const",
        const=False,
        help="skip the verify stage ($SEALGATE_VERIFY=false)",
    )
    add(
        "--no-attest",
        dest="attest",
        action="store_const",
        const=False,
        help="skip the attestation ($SEALGATE_ATTEST=false)",
    )
    add_tsa_options(parser)
    add_verify_options(parser, with_tsa_trust=False)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Resolve the configuration, run the stages, write the report and summaries."""
    flags = {k: v for k, v in vars(args).items() if k not in ("handler", "command")}
    repo = flags.pop("repo", None) or Path(os.environ.get("SEALGATE_REPO") or ".")
    config_file = flags.pop("config", None) or (
        Path(os.environ["SEALGATE_CONFIG"]) if os.environ.get("SEALGATE_CONFIG") else None
    )
    config = resolve_config(flags, os.environ, repo=repo, config_file=config_file)
    result = Pipeline(config, build_output=sys.stderr.fileno()).run()
    write_outputs(result, config, os.environ)
    for line in human_lines(result):
        print(line)
    print(f"report: {config['report']}")
    return result.exit_code
