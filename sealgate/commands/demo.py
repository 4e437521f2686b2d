"""`sealgate demo`: the main job on an embedded default, with no cloud account.

Creates a local SoftHSM token with a key generated inside it, a throwaway CA that issues
the key's code-signing certificate and a local RFC 3161 TSA; signs and timestamps a sample
artifact through the token, passes it through the gate, and shows (and runs) the stock
OpenSSL command that verifies it. With `--serve` the TSA stays up for "sign now, stamp later".
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import signal
import sys
import sysconfig
import threading
from pathlib import Path
from types import FrameType

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
DEMO_KEY_TYPES = [t for t in KEY_TYPES if t != "ed25519"]  # OpenSSL 3.0 cannot verify EdDSA in CMS


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "demo",
        help="sign and timestamp a sample with a local SoftHSM token, CA and TSA",
        description="The main job with no account anywhere: a SoftHSM token whose key is "
        "generated inside it, a throwaway CA, a local RFC 3161 TSA; sign, timestamp, gate, "
        "and the stock OpenSSL check.",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("sealgate-demo"),
        metavar="DIR",
        help="folder for the token, certificates and sample; its parent must exist, and a "
        "non-empty folder is reused only if an earlier demo made it (default: ./sealgate-demo)",
    )
    parser.add_argument(
        "--key-type",
        choices=DEMO_KEY_TYPES,
        default="ec-p256",
        help="the key generated inside the token (default: ec-p256; no ed25519: OpenSSL 3.0 "
        "cannot verify EdDSA in CMS)",
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help="after the demo, keep its TSA running for `sealgate timestamp` (sign now, stamp "
        "later) until Ctrl-C or SIGTERM",
    )
    parser.set_defaults(handler=run)


def prepare_workdir(workdir: Path) -> None:
    """Start clean, but never wipe a folder that an earlier demo did not create."""
    try:
        if workdir.exists():
            if any(workdir.iterdir()) and not (workdir / MARKER).exists():
                raise SealgateError(
                    f"--workdir {workdir}: exists and was not made by `sealgate demo`",
                    hint="choose an empty or new folder",
                    code="foreign-workdir",
                    field="workdir",
                )
            shutil.rmtree(workdir)
        workdir.mkdir()  # only the last level: a missing parent is more likely a typo
        (workdir / MARKER).touch()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if isinstance(exc, FileNotFoundError) and not workdir.parent.is_dir():
            reason = f"its parent folder {workdir.parent} does not exist"
        raise SealgateError(
            f"--workdir {workdir}: {reason}", code="path-error", field="workdir"
        ) from None


def shell_command() -> tuple[str, str | None]:
    """How the user's shell reaches this `sealgate`, and the line to run first if it cannot.

    `dev.sh` installs into a venv that is not on the caller's PATH, so bare `sealgate` would
    fail (or find another install); the venv's activate line fixes that for the session.
    """
    mine = Path(sysconfig.get_path("scripts")) / "sealgate"
    found = shutil.which("sealgate")
    if found is not None and Path(found).resolve() == mine.resolve():
        return "sealgate", None
    activate = mine.parent / "activate"
    if sys.prefix != sys.base_prefix and activate.is_file():
        return "sealgate", f". {shlex.quote(str(activate))}"
    return shlex.quote(str(mine)), None


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

        print(f"token:     SoftHSM2 token 'sealgate-demo' in {token.home} (key 'release', "
              f"{args.key_type})")  # fmt: skip
        print(f"signed:    {artifact} -> {signed.signature} ({signed.scheme})")
        print(f"signer:    {signed.certificate_subject} (issued by the demo CA {root_pem})")
        print(f"timestamp: {stamp.gen_time.isoformat()} by {stamp.tsa_subject!r} (local RFC 3161 "
              "TSA)")  # fmt: skip
        if not verdict.verified:
            raise SealgateError(
                f"the gate refused the demo signature: {verdict.reason}",
                exit_code=1,
                code="verification-failed",
            )
        print("gate:      sealgate verify says verified")
        print("verify it with stock OpenSSL:")
        print("  " + shlex.join(cms_verify_command(signed.signature, artifact, root_pem)))
        result = cms_verify(signed.signature, artifact, root_pem)
        outcome = (result.stderr or result.stdout).strip().splitlines()
        print(f"openssl says: {outcome[-1] if outcome else result.returncode}")
        if result.returncode != 0:
            raise SealgateError(
                "OpenSSL did not verify the demo signature", exit_code=1, code="verification-failed"
            )
        _print_next_steps(token, uri, root_pem, tsa, artifact, serving=args.serve)
        if args.serve:
            _serve_until_stopped()
    return 0


def _print_next_steps(
    token: SoftHsmToken, uri: str, root_pem: Path, tsa: LocalTsa, artifact: Path, *, serving: bool
) -> None:
    command, activate = shell_command()
    q = shlex.quote
    if activate is not None:
        print("sealgate is not on this shell's PATH; for the commands below, run first:")
        print(f"  {activate}")
    print("check it with the gate:")
    print(f"  {command} verify --trust-roots {q(str(root_pem))} --tsa-roots "
          f"{q(str(tsa.root_pem))} --require-timestamp {q(str(artifact))}")  # fmt: skip
    print("sign more artifacts with the same token:")
    print(f"  SOFTHSM2_CONF={q(str(token.conf))} {command} sign --key {q(uri)} FILE...")
    if not serving:
        print("to timestamp them later, run the demo with --serve: it keeps its TSA up")
        return
    print("stamp them later (sign now, stamp later), while this TSA runs:")
    print(f"  {command} timestamp --tsa {tsa.url} --tsa-roots {q(str(tsa.root_pem))} FILE.p7s")
    print(f"serving:   the demo TSA at {tsa.url} (--tsa-roots {tsa.root_pem}); "
          "Ctrl-C or SIGTERM stops it", flush=True)  # fmt: skip


def _serve_until_stopped() -> None:
    """Block until Ctrl-C or SIGTERM; the caller's `with` then stops the TSA cleanly."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stop.wait(0.2):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    print("stopped:   the demo TSA is down", flush=True)
