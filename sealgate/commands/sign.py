"""`sealgate sign`: detached CAdES-BES signatures (ARTIFACT.p7s) made by an HSM or KMS key."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from sealgate.errors import SealgateError
from sealgate.options import TSA_OPTIONS, add_tsa_options, resolve, tsa_settings
from sealgate.output import byte_progress, emit_json
from signer.algorithms import HASH_NAMES
from signer.certificates import load_certificate, load_certificates
from signer.keys import open_key
from signer.sign import SignedArtifact, SignOptions, sign_artifacts

KEY_ENV = "SEALGATE_KEY"


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "sign",
        help="sign artifacts through an HSM or KMS key",
        description="Write ARTIFACT.p7s for each artifact: a detached DER CMS signature "
        "(CAdES-BES) that `openssl cms -verify` accepts. All signatures appear only when "
        "every artifact succeeded.",
    )
    parser.add_argument(
        "--key",
        default=os.environ.get(KEY_ENV),
        help=f"key URI: pkcs11:..., hashivault://KEY[/VERSION], awskms://... (or ${KEY_ENV})",
    )
    parser.add_argument(
        "--cert",
        type=Path,
        help="signer certificate (PEM or DER); default: the certificate stored with the key",
    )
    parser.add_argument(
        "--chain",
        type=Path,
        action="append",
        default=[],
        help="intermediate certificates to embed (PEM bundle; repeatable)",
    )
    parser.add_argument(
        "--out-dir", type=Path, help="write signatures here instead of beside each artifact"
    )
    parser.add_argument(
        "--digest",
        choices=HASH_NAMES,
        default="sha256",
        help="digest for RSA keys (EC keys use the digest of their curve)",
    )
    parser.add_argument(
        "--rsa-padding",
        choices=("pkcs1v15", "pss"),
        default="pkcs1v15",
        help="RSA signature padding (default: pkcs1v15, the most widely verified)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print a JSON report of what was signed"
    )
    add_tsa_options(parser)
    parser.add_argument("artifacts", nargs="+", type=Path, metavar="ARTIFACT", help="files to sign")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if not args.key:
        raise SealgateError(
            f"--key is required (or set {KEY_ENV})", code="missing-option", field="key"
        )
    options = SignOptions(
        cert=load_certificate(args.cert) if args.cert else None,
        chain=[c for path in args.chain for c in load_certificates(path)],
        out_dir=args.out_dir,
        rsa_digest=args.digest,
        rsa_padding=args.rsa_padding,
        cert_source=str(args.cert) if args.cert else "--cert",
        tsa=tsa_settings(resolve(args, TSA_OPTIONS)),
    )
    total = sum(p.stat().st_size for p in args.artifacts if p.is_file())
    with open_key(args.key) as key, byte_progress("hashing", total) as progress:
        signed = sign_artifacts(key, args.artifacts, options, progress=progress)
    report(signed, as_json=args.json)
    return 0


def report(signed: list[SignedArtifact], *, as_json: bool) -> None:
    if as_json:
        emit_json({"signed": [s.as_json() for s in signed]})
        return
    for s in signed:
        stamped = (
            f", timestamped {s.timestamp.gen_time.isoformat()} by {s.timestamp.tsa_subject!r}"
            if s.timestamp
            else ""
        )
        print(
            f"signed {s.artifact} -> {s.signature} "
            f"({s.scheme}, {s.hash_name}:{s.digest_hex[:16]}…{stamped})"
        )
    print(
        f"{len(signed)} artifact(s) signed with {signed[0].key} as {signed[0].certificate_subject!r}"
    )
