"""`sealgate sign`: detached CAdES-BES signatures (ARTIFACT.p7s) made by an HSM or KMS key, or
by the signing service (`--service URL`), which holds the key and takes the job's OIDC token."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from sealgate.errors import SealgateError
from sealgate.options import TSA_OPTIONS, add_tsa_options, resolve, tsa_certs, tsa_settings
from sealgate.output import byte_progress, emit_json
from sealgate.service.client import Trust, check_key_name, service_base, sign_remote
from sealgate.service.idtoken import TOKEN_ENV, TokenSource
from signer.algorithms import HASH_NAMES
from signer.certificates import load_certificate, load_certificates
from signer.chain import load_trust_roots
from signer.keys import open_key
from signer.sign import SignedArtifact, SignOptions, sign_artifacts

KEY_ENV = "SEALGATE_KEY"
SERVICE_ENV = "SEALGATE_SERVICE"
AUDIENCE_ENV = "SEALGATE_SERVICE_AUDIENCE"
#: Options that choose how a local key signs: the service decides those, so they are refused.
_LOCAL_ONLY = {
    "cert": "--cert", "chain": "--chain", "rsa_padding": "--rsa-padding", "tsa_urls": "--tsa",
    "tsa_timeout": "--tsa-timeout", "tsa_retries": "--tsa-retries",
    "tsa_concurrency": "--tsa-concurrency",
}  # fmt: skip


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
        help=f"key URI: pkcs11:..., hashivault://KEY[/VERSION], awskms://... (or ${KEY_ENV}); "
        "with --service, the service's key name",
    )
    service = parser.add_argument_group(
        "signing service (the service holds the key; the job's OIDC ID token authenticates)"
    )
    service.add_argument(
        "--service",
        default=os.environ.get(SERVICE_ENV) or None,
        metavar="URL",
        help=f"sign through `sealgate serve` at URL (https; or ${SERVICE_ENV})",
    )
    service.add_argument(
        "--audience",
        default=os.environ.get(AUDIENCE_ENV) or None,
        help=f"audience of the ID token (default: the service URL; or ${AUDIENCE_ENV})",
    )
    service.add_argument(
        "--id-token-var",
        default=TOKEN_ENV,
        metavar="NAME",
        help="GitLab: the id_tokens variable holding the token (default: %(default)s)",
    )
    service.add_argument(
        "--trust-roots",
        type=Path,
        metavar="PEM",
        help="also require each returned signature to chain to these roots (code signing)",
    )
    service.add_argument(
        "--service-ca", type=Path, metavar="PEM", help="CA bundle for the service's TLS"
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
        help="digest for RSA keys (EC keys use the digest of their curve); with --service, the "
        "digest sent (the key's algorithm)",
    )
    parser.add_argument(
        "--rsa-padding",
        choices=("pkcs1v15", "pss"),
        default=None,
        help="RSA signature padding (default: pkcs1v15, the most widely verified)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print a JSON report of what was signed"
    )
    add_tsa_options(parser)
    parser.add_argument("artifacts", nargs="+", type=Path, metavar="ARTIFACT", help="files to sign")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.service:
        return run_remote(args)
    for name, flag in (("trust_roots", "--trust-roots"), ("service_ca", "--service-ca"),
                       ("audience", "--audience")):  # fmt: skip
        if getattr(args, name):
            raise SealgateError(f"{flag} is for --service only", code="option-conflict",
                                field=name)  # fmt: skip
    if not args.key:
        raise SealgateError(
            f"--key is required (or set {KEY_ENV})", code="missing-option", field="key"
        )
    options = SignOptions(
        cert=load_certificate(args.cert) if args.cert else None,
        chain=[c for path in args.chain for c in load_certificates(path)],
        out_dir=args.out_dir,
        rsa_digest=args.digest,
        rsa_padding=args.rsa_padding or "pkcs1v15",
        cert_source=str(args.cert) if args.cert else "--cert",
        tsa=tsa_settings(resolve(args, TSA_OPTIONS)),
    )
    total = sum(p.stat().st_size for p in args.artifacts if p.is_file())
    with open_key(args.key) as key, byte_progress("hashing", total) as progress:
        signed = sign_artifacts(key, args.artifacts, options, progress=progress)
    report(signed, as_json=args.json)
    return 0


def run_remote(args: argparse.Namespace) -> int:
    """Hash here, sign there, verify here, write here: no key, PIN or certificate in the job."""
    for name, flag in _LOCAL_ONLY.items():
        if getattr(args, name, None) not in (None, []):
            raise SealgateError(
                f"{flag} cannot be used with --service: the service chooses the key's "
                "certificate, padding and timestamps",
                code="option-conflict",
                field=name,
            )
    values = resolve(args, TSA_OPTIONS)
    if values.get("tsa_urls"):
        raise SealgateError(
            "$SEALGATE_TSA_URLS cannot be used with --service: the service timestamps",
            code="option-conflict",
            field="tsa_urls",
        )
    base = service_base(args.service)
    trust = Trust(
        roots=load_trust_roots(args.trust_roots, "--trust-roots") if args.trust_roots else (),
        tsa_roots=load_trust_roots(Path(values["tsa_roots"]), "--tsa-roots")
        if values.get("tsa_roots")
        else (),
        tsa_certs=tsa_certs(values),
    )
    source = TokenSource(args.audience or base, os.environ, args.id_token_var)
    result = sign_remote(
        base,
        check_key_name(args.key or ""),
        args.artifacts,
        token_source=source,
        out_dir=args.out_dir,
        digest_algorithm=args.digest,
        trust=trust,
        service_ca=args.service_ca,
    )
    if args.json:
        emit_json(result.as_json())
    else:
        report(result.signed, as_json=False)
        print(f"audit receipt: record {result.receipt.index} ({result.receipts[0]}, ...)")
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
