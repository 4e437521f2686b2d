"""`sealgate keys`: look at an HSM/KMS key, and ask the organisation's CA for its certificate."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from asn1crypto import pem
from cryptography.hazmat.primitives import serialization

from sealgate.output import emit_json
from signer.algorithms import key_kind
from signer.certificates import fingerprint
from signer.csr import build_csr
from signer.keys import open_key


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("keys", help="inspect keys and request certificates for them")
    sub = parser.add_subparsers(dest="keys_command", required=True, metavar="{inspect,csr}")

    inspect = sub.add_parser(
        "inspect", help="public key, algorithm, fingerprint, stored certificate"
    )
    inspect.add_argument(
        "uri", metavar="URI", help="key URI: pkcs11:..., hashivault://..., awskms://..."
    )
    inspect.add_argument(
        "--json", action="store_true", help="print the key and certificate as JSON"
    )
    inspect.set_defaults(handler=run_inspect)

    csr = sub.add_parser("csr", help="a PKCS#10 request signed by the key, for your CA")
    csr.add_argument(
        "uri", metavar="URI", help="the key that signs the request (and will sign code)"
    )
    csr.add_argument(
        "--subject", required=True, help='RFC 4514 name, e.g. "CN=Release signing,O=Example"'
    )
    csr.add_argument(
        "--email", action="append", default=[], help="subjectAltName e-mail (repeatable)"
    )
    csr.add_argument(
        "--dns", action="append", default=[], help="subjectAltName DNS name (repeatable)"
    )
    csr.add_argument(
        "--rsa-padding",
        choices=("pkcs1v15", "pss"),
        default="pkcs1v15",
        help="RSA padding of the request's own signature (default: pkcs1v15); EC keys ignore it",
    )
    csr.add_argument("--out", type=Path, help="write the PEM request here (default: stdout)")
    csr.set_defaults(handler=run_csr)


def run_inspect(args: argparse.Namespace) -> int:
    with open_key(args.uri) as key:
        public_key = key.public_key()
        spki = key.public_key_der()
        cert = key.certificate()
        info: dict[str, object] = {
            "key": key.display_uri,
            "algorithm": key_kind(public_key).value,
            "public_key_sha256": hashlib.sha256(spki).hexdigest(),
            "public_key_pem": public_key.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ).decode(),
            "certificate": None,
        }
        if cert is not None:
            info["certificate"] = {
                "subject": cert.subject.rfc4514_string(),
                "issuer": cert.issuer.rfc4514_string(),
                "serial": format(cert.serial_number, "x"),
                "not_before": cert.not_valid_before_utc.isoformat(),
                "not_after": cert.not_valid_after_utc.isoformat(),
                "sha256_fingerprint": fingerprint(cert),
            }
    if args.json:
        emit_json(info)
        return 0
    print(f"key:         {info['key']}")
    print(f"algorithm:   {info['algorithm']}")
    print(f"fingerprint: SHA256:{info['public_key_sha256']} (SubjectPublicKeyInfo)")
    print(str(info["public_key_pem"]).rstrip())
    if isinstance(info["certificate"], dict):
        c = info["certificate"]
        print(f"certificate: {c['subject']} (issuer {c['issuer']}, serial {c['serial']})")
        print(f"             valid {c['not_before']} .. {c['not_after']}")
        print(f"             SHA256 fingerprint {c['sha256_fingerprint']}")
    else:
        print("certificate: none stored with the key")
    return 0


def run_csr(args: argparse.Namespace) -> int:
    with open_key(args.uri) as key:
        der = build_csr(
            key, args.subject, emails=args.email, dns_names=args.dns, rsa_padding=args.rsa_padding
        )
    text = pem.armor("CERTIFICATE REQUEST", der).decode()
    if args.out:
        args.out.write_text(text)
        print(
            f"wrote {args.out}: give it to your CA; `openssl req -verify -in {args.out} -noout` checks it"
        )
    else:
        print(text, end="")
    return 0
