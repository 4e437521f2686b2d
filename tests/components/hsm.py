"""SoftHSM2 tokens for the tests, reached locally and through `p11-kit server` (the remote-HSM path)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from sealgate.localpki import LocalCA, write_pem
from sealgate.softhsm import SoftHsmToken, softhsm_module
from signer.keys.pkcs11 import Pkcs11Key
from tests.components import require

P11_KIT_CLIENT_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so",
    "/usr/lib/aarch64-linux-gnu/pkcs11/p11-kit-client.so",
    "/usr/lib/pkcs11/p11-kit-client.so",
)
#: label -> key type; every key is generated inside the token.
KEYS = {
    "ec256": "ec-p256",
    "ec384": "ec-p384",
    "rsa2048": "rsa-2048",
    "rsa3072": "rsa-3072",
    "rsa4096": "rsa-4096",
    "ed25519": "ed25519",
    "nocert": "ec-p256",
}


@dataclass
class HsmFixture:
    """A token holding one key per type, each with a code-signing certificate from `ca`."""

    token: SoftHsmToken
    ca: LocalCA
    root_pem: Path
    chain_pem: Path
    certs: dict[str, x509.Certificate] = field(default_factory=dict)
    cert_pems: dict[str, Path] = field(default_factory=dict)

    def uri(self, label: str) -> str:
        return self.token.uri(label)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, **self.token.env}


def make_hsm(home: Path) -> HsmFixture:
    require(softhsm_module() is not None and shutil.which("softhsm2-util") is not None, "SoftHSM2")
    token = SoftHsmToken.create(home / "hsm", label="sealgate-test")
    ca = LocalCA(name="Sealgate Test Root CA", with_intermediate=True)
    fixture = HsmFixture(
        token=token,
        ca=ca,
        root_pem=write_pem(home / "root.pem", ca.root),
        chain_pem=write_pem(home / "chain.pem", *ca.chain()),
    )
    for label, key_type in KEYS.items():
        token.generate(label, key_type)
        with Pkcs11Key(token.uri(label)) as key:
            public_key = key.public_key()
        cert = ca.issue(public_key, f"Sealgate test signer {label}")  # type: ignore[arg-type]
        fixture.certs[label] = cert
        fixture.cert_pems[label] = write_pem(home / f"{label}.pem", cert)
    token.store_certificate("ec256", fixture.certs["ec256"])
    return fixture


def p11_kit_client() -> str | None:
    return next((p for p in P11_KIT_CLIENT_CANDIDATES if Path(p).is_file()), None)


@dataclass
class RemoteHsm:
    """`p11-kit server` exporting a SoftHSM token on a unix socket; clients load p11-kit-client.so."""

    hsm: HsmFixture
    socket: Path
    client_module: str
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.socket.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            [
                "p11-kit",
                "server",
                "-f",
                "-n",
                str(self.socket),
                "--provider",
                self.hsm.token.module,
                f"pkcs11:token={self.hsm.token.label}",
            ],
            env=self.hsm.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not self.socket.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("p11-kit server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=10)
        self.process = None
        self.socket.unlink(missing_ok=True)

    def uri(self, label: str) -> str:
        return (
            f"pkcs11:token={self.hsm.token.label};object={label}"
            f"?module-path={self.client_module}&pin-source=file:{self.hsm.token.pin_file}"
        )

    @property
    def env(self) -> dict[str, str]:
        """A client environment without SOFTHSM2_CONF: the token is reachable only through the server."""
        env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"}
        env["P11_KIT_SERVER_ADDRESS"] = f"unix:path={self.socket}"
        return env


def remote_hsm(hsm: HsmFixture, home: Path) -> Iterator[RemoteHsm]:
    client = p11_kit_client()
    require(client is not None and shutil.which("p11-kit") is not None, "p11-kit server and client")
    assert client is not None
    remote = RemoteHsm(hsm=hsm, socket=home / "p11-kit.sock", client_module=client)
    remote.start()
    try:
        yield remote
    finally:
        remote.stop()
