"""A local RFC 3161 TSA for the embedded demo: OpenSSL's `ts -reply` behind a small HTTP server.

Public TSAs may be out of reach (air-gapped runners, these test machines), and the demo must
run with no account anywhere. The TSA's root key stays in memory; `openssl ts -reply` needs
its signing key as a file, which is written (mode 0600) only into the caller's folder.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from sealgate.errors import SealgateError
from sealgate.localpki import LocalCA, write_pem

_CONFIG = """[ tsa ]
default_tsa = local_tsa
[ local_tsa ]
serial = $ENV::SEALGATE_TSA_SERIAL
crypto_device = builtin
signer_digest = sha256
default_policy = 1.3.6.1.4.1.4146.2.2
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = no
tsa_name = yes
ess_cert_id_alg = sha256
"""
_MAX_QUERY = 64 * 1024


class LocalTsa:
    """A running TSA on 127.0.0.1; `url` to ask it, `root_pem` to trust it."""

    def __init__(self, home: Path) -> None:
        openssl = shutil.which("openssl")
        if openssl is None:
            raise SealgateError("openssl is not installed", hint="apt-get install openssl")
        self._openssl = openssl
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        ca = LocalCA(name="Sealgate Local TSA Root")
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name.from_rfc4514_string("CN=Sealgate Local TSA,O=Sealgate local PKI")
            )
            .issuer_name(ca.root.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.root_key.public_key()),
                critical=False,
            )
            .sign(ca.root_key, hashes.SHA256())
        )
        self.root_pem = write_pem(home / "tsa-root.pem", ca.root)
        self._cert = write_pem(home / "tsa-cert.pem", cert)
        self._key = home / "tsa-key.pem"
        self._key.touch(mode=0o600)
        self._key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        self._config = home / "tsa.cnf"
        self._config.write_text(_CONFIG)
        self._serials = itertools.count(secrets.randbits(48))
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"

    def start(self) -> LocalTsa:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> LocalTsa:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def reply(self, query: bytes) -> bytes:
        """Run `openssl ts -reply` for one query (each with its own serial file)."""
        with self._lock:
            serial = next(self._serials)
        with tempfile.TemporaryDirectory(dir=self.home) as tmp:
            work = Path(tmp)
            (work / "serial").write_text(f"{serial:016X}")
            (work / "query.tsq").write_bytes(query)
            result = subprocess.run(  # noqa: S603 - fixed tool over our own files
                [self._openssl, "ts", "-reply", "-config", str(self._config),
                 "-queryfile", str(work / "query.tsq"), "-signer", str(self._cert),
                 "-inkey", str(self._key), "-chain", str(self.root_pem),
                 "-out", str(work / "reply.tsr")],
                env={**os.environ, "SEALGATE_TSA_SERIAL": str(work / "serial")},
                capture_output=True, text=True, check=False, timeout=30,
            )  # fmt: skip
            if result.returncode != 0:
                raise SealgateError(f"openssl ts -reply failed: {result.stderr.strip()}")
            return (work / "reply.tsr").read_bytes()


def _handler(tsa: LocalTsa) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the demo prints its own lines."""

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if self.headers.get("Content-Type") != "application/timestamp-query" or not (
                0 < length <= _MAX_QUERY
            ):
                self._send(400, b"expected an application/timestamp-query", "text/plain")
                return
            try:
                answer = tsa.reply(self.rfile.read(length))
            except SealgateError as exc:
                self._send(500, exc.message.encode(), "text/plain")
                return
            self._send(200, answer, "application/timestamp-reply")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler
