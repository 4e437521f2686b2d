"""`sealgate demo`: the main job on an embedded default, with no cloud account.

Creates a local SoftHSM token with a key generated inside it, a throwaway CA that issues
the key's code-signing certificate and a local RFC 3161 TSA; signs and timestamps a sample
artifact through the token, passes it through the gate, and shows (and runs) the stock
OpenSSL command that verifies it.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
from pathlib import Path

from sealgate.errors import SealgateError
from sealgate.localpki import LocalCA, write_pem
from sealgate.localtsa import LocalTsa
from sealgate.openssl import cms_verify, cms_verify_command
from sealgate.softhsm import KEY_TYPES, SoftHsmToken
from signer.chain import load_trust_roots
from signer.keys import open_key
from signer.sign import SignOptions, sign_artifacts
from signer.timestamp import TsaSettings
from signer.verify import VerifyPolicy, verify_artifact

MARKER = ".sealgate-demo"


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "demo", help="sign and timestamp a sample with a local SoftHSM token, CA and TSA"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("sealgate-demo"),
        help="folder for the token, certificates and sample (default: ./sealgate-demo)",
    )
    parser.add_argument(
        "--key-type",
        choices=[t for t in KEY_TYPES if t != "ed25519"],  # OpenSSL 3.0 cannot verify EdDSA in CMS
        default="ec-p256",
    )
    parser.set_defaults(handler=run)


def prepare_workdir(workdir: Path) -> None:
    """Start clean, but never wipe a folder that an earlier demo did not create."""
    if workdir.exists():
        if any(workdir.iterdir()) and not (workdir / MARKER).exists():
            raise SealgateError(
                f"--workdir {workdir}: exists and was not made by `sealgate demo`",
                hint="choose an empty or new folder",
            )
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    (workdir / MARKER).touch()


def run(args: argparse.Namespace) -> int:
    workdir: Path = args.workdir.absolute()
    prepare_workdir(workdir)
    token = SoftHsmToken.create(workdir / "hsm", label="sealgate-demo")
    token.generate("release", args.key_type)
    uri = token.uri("release")

    ca = LocalCA(name="Sealgate Demo Root CA")
    with open_key(uri) as key:
        cert = ca.issue(key.public_key(), "Sealgate demo release signer")  # type: ignore[arg-type]
    token.store_certificate("release", cert)
    root_pem = write_pem(workdir / "root.pem", ca.root)
    write_pem(workdir / "release-cert.pem", cert)

    artifact = workdir / "sample-artifact.txt"
    artifact.write_text("Sealgate sample artifact: signed inside a SoftHSM token.\n")
    with LocalTsa(workdir / "tsa") as tsa:
        settings = TsaSettings(urls=(tsa.url,), roots=tuple(load_trust_roots(tsa.root_pem, "TSA")))
        with open_key(uri) as key:
            [signed] = sign_artifacts(key, [artifact], SignOptions(tsa=settings))
    verdict = verify_artifact(
        artifact,
        VerifyPolicy(trust_roots=[ca.root], tsa_roots=settings.roots, require_timestamp=True),
    )
    stamp = signed.timestamp
    assert stamp is not None  # noqa: S101 - sign_artifacts fails closed without a token

    print(
        f"token:     SoftHSM2 token 'sealgate-demo' in {token.home} (key 'release', {args.key_type})"
    )
    print(f"signed:    {artifact} -> {signed.signature} ({signed.scheme})")
    print(f"signer:    {signed.certificate_subject} (issued by the demo CA {root_pem})")
    print(f"timestamp: {stamp.gen_time.isoformat()} by {stamp.tsa_subject!r} (local RFC 3161 TSA)")
    if not verdict.verified:
        raise SealgateError(f"the gate refused the demo signature: {verdict.reason}", exit_code=1)
    print(
        "gate:      sealgate verify says verified "
        f"(try: sealgate verify --trust-roots {root_pem} --tsa-roots {tsa.root_pem} "
        f"--require-timestamp {artifact})"
    )
    print("verify it with stock OpenSSL:")
    print("  " + shlex.join(cms_verify_command(signed.signature, artifact, root_pem)))
    result = cms_verify(signed.signature, artifact, root_pem)
    outcome = (result.stderr or result.stdout).strip().splitlines()
    print(f"openssl says: {outcome[-1] if outcome else result.returncode}")
    if result.returncode != 0:
        raise SealgateError("OpenSSL did not verify the demo signature", exit_code=1)
    print("sign more artifacts with the same token:")
    print(
        f"  SOFTHSM2_CONF={shlex.quote(str(token.conf))} sealgate sign --key {shlex.quote(uri)} FILE..."
    )
    return 0
