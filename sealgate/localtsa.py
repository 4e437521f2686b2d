"""A local RFC 3161 TSA for the embedded demo and the tests: `openssl ts -reply` behind HTTP.

Public TSAs may be out of reach (air-gapped runners, these test machines), and the demo must
run with no account anywhere. The TSA's root key stays in memory; `openssl ts -reply` needs
its signing key as a file, which is written (mode 0600) only into the caller's folder.
`TsaServer` is the HTTP side (the tests' deliberately broken TSAs build on it too).
"""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from cryptography.hazmat.primitives.asymmetric import ec

from sealgate.errors import SealgateError
from sealgate.localpki import LocalCA, pki_name, tsa_certificate, write_pem, write_private_key

QUERY_CONTENT_TYPE = "application/timestamp-query"
REPLY_CONTENT_TYPE = "application/timestamp-reply"
#: OpenSSL's documented example policy (its default openssl.cnf calls it `tsa_policy1`).
TSA_POLICY = "1.2.3.4.1"
SERIAL_ENV = "SEALGATE_TSA_SERIAL"
MAX_QUERY = 64 * 1024
OPENSSL_TIMEOUT = 30.0


def tsa_config_section(
    section: str,
    *,
    policy: str = TSA_POLICY,
    other_policies: str | None = None,
    ess_cert_id_alg: str = "sha256",
) -> str:
    """One `openssl ts` config section; the serial file is per request, named by SERIAL_ENV."""
    others = f"other_policies = {other_policies}\n" if other_policies else ""
    return f"""[ {section} ]
serial = $ENV::{SERIAL_ENV}
crypto_device = builtin
signer_digest = sha256
default_policy = {policy}
{others}digests = sha256, sha384, sha512
accuracy = secs:1, millisecs:500, microsecs:100
clock_precision_digits = 0
ordering = no
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = {ess_cert_id_alg}
"""


def find_openssl() -> str:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise SealgateError(
            "openssl is not installed", hint="apt-get install openssl", exit_code=3,
            code="backend-unavailable",
        )  # fmt: skip
    return openssl


def openssl_ts_reply(
    query: bytes,
    *,
    config: Path,
    section: str,
    cert: Path,
    key: Path,
    chain: Path,
    serial: int,
    workdir: Path,
) -> bytes:
    """`openssl ts -reply` for one query, with its own serial file in a fresh folder."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        work = Path(tmp)
        hex_serial = f"{serial:X}"
        (work / "serial").write_text(hex_serial.zfill(len(hex_serial) + len(hex_serial) % 2))
        (work / "query.tsq").write_bytes(query)
        result = subprocess.run(  # noqa: S603 - fixed tool over our own files
            [find_openssl(), "ts", "-reply", "-config", str(config), "-section", section,
             "-queryfile", str(work / "query.tsq"), "-signer", str(cert), "-inkey", str(key),
             "-chain", str(chain), "-out", str(work / "reply.tsr")],
            env={**os.environ, SERIAL_ENV: str(work / "serial")},
            capture_output=True, text=True, check=False, timeout=OPENSSL_TIMEOUT,
        )  # fmt: skip
        if result.returncode != 0:
            raise SealgateError(
                f"openssl ts -reply failed: {result.stderr.strip()}", exit_code=3,
                code="backend-unavailable",
            )  # fmt: skip
        return (work / "reply.tsr").read_bytes()


class TsaServer:
    """The HTTP side of a TSA on 127.0.0.1:<free port>; subclasses say what `answer` is.

    `request_count` counts POSTs and `connections` accepted TCP connections (keep-alive is
    on, so a client's connection reuse can be seen); stop() joins every thread it started.
    """

    def __init__(self) -> None:
        self.url = ""
        self.request_count = 0
        self.connections = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._serve_thread: threading.Thread | None = None
        self._open: set[Any] = set()
        self._threads: list[threading.Thread] = []

    def answer(self, query: bytes, number: int) -> tuple[int, str, bytes]:
        """Status, content type and body for the `number`-th query."""
        raise NotImplementedError

    def received(self, body: bytes) -> int:
        """Count one POST; returns its number (from 1)."""
        with self._lock:
            self.request_count += 1
            return self.request_count

    def start(self) -> Self:
        self._server = _Server(self)
        port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{port}/"
        self._serve_thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"tsa-{port}-serve",
            daemon=True,
        )
        self._serve_thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, drop open keep-alive connections, wake sleepers and join every thread."""
        self._stopping.set()
        if self._server is None:
            return
        self._server.shutdown()
        with self._lock:
            still_open = list(self._open)
        for conn in still_open:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._server.server_close()
        if self._serve_thread is not None:
            self._serve_thread.join(timeout=10)
        for thread in self.threads():
            thread.join(timeout=10)
        self._server = None

    def threads(self) -> list[threading.Thread]:
        """This server's threads that are still alive (empty after stop())."""
        with self._lock:
            alive = [t for t in self._threads if t.is_alive()]
        if self._serve_thread is not None and self._serve_thread.is_alive():
            alive.append(self._serve_thread)
        return alive

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _accepted(self, conn: Any, thread: threading.Thread) -> None:
        with self._lock:
            self.connections += 1
            self._open.add(conn)
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)

    def _closed(self, conn: Any) -> None:
        with self._lock:
            self._open.discard(conn)


class LocalTsa(TsaServer):
    """The demo's TSA: its own root (`root_pem` to trust it), one EC signer, `url` to ask it."""

    def __init__(self, home: Path) -> None:
        super().__init__()
        find_openssl()
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        ca = LocalCA(name="Sealgate Local TSA Root")
        key = ec.generate_private_key(ec.SECP256R1())
        cert = tsa_certificate(
            key.public_key(), pki_name("Sealgate Local TSA"), ca.root, ca.root_key
        )
        self.root_pem = write_pem(home / "tsa-root.pem", ca.root)
        self._cert = write_pem(home / "tsa-cert.pem", cert)
        self._key = write_private_key(home / "tsa-key.pem", key)
        self._config = home / "tsa.cnf"
        self._config.write_text(tsa_config_section("tsa"))
        self._serials = itertools.count(secrets.randbits(48) + 1)

    def reply(self, query: bytes) -> bytes:
        with self._lock:
            serial = next(self._serials)
        return openssl_ts_reply(
            query, config=self._config, section="tsa", cert=self._cert, key=self._key,
            chain=self.root_pem, serial=serial, workdir=self.home,
        )  # fmt: skip

    def answer(self, query: bytes, number: int) -> tuple[int, str, bytes]:
        return 200, REPLY_CONTENT_TYPE, self.reply(query)


class _Server(ThreadingHTTPServer):
    """Keeps its own handler threads so that stop() can join them."""

    daemon_threads = True  # a safety net only: stop() joins every handler thread
    block_on_close = False

    def __init__(self, tsa: TsaServer) -> None:
        self.tsa = tsa
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"tsa-{self.server_address[1]}-conn",
            daemon=True,
        )
        self.tsa._accepted(request, thread)
        thread.start()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Keep errors instead of printing tracebacks (a client hanging up is fine)."""
        exc = sys.exc_info()[1]
        if exc is not None and not isinstance(exc, ConnectionError | TimeoutError):
            self.tsa.errors.append(f"{type(exc).__name__}: {exc}")

    def shutdown_request(self, request: Any) -> None:
        self.tsa._closed(request)
        super().shutdown_request(request)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse can be observed
    timeout = 30  # an idle keep-alive connection is dropped after this
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the demo prints its own lines, the tests read counters."""

    def do_GET(self) -> None:
        self._send(405, "text/plain", b"POST an application/timestamp-query\n", {"Allow": "POST"})

    def do_POST(self) -> None:
        tsa = self.server.tsa
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit() or int(length) > MAX_QUERY:
            tsa.received(b"")
            self._send(411, "text/plain", b"a Content-Length up to 64 KiB is required\n")
            self.close_connection = True
            return
        body = self.rfile.read(int(length))
        number = tsa.received(body)
        if self.headers.get_content_type() != QUERY_CONTENT_TYPE:
            self._send(415, "text/plain", f"send {QUERY_CONTENT_TYPE}\n".encode())
            return
        try:
            status, content_type, reply = tsa.answer(body, number)
        except Exception as exc:  # answer 500 and keep the reason for whoever runs the TSA
            tsa.errors.append(f"{type(exc).__name__}: {exc}")
            status, content_type, reply = 500, "text/plain", str(exc).encode()
        self._send(status, content_type, reply)

    def _send(
        self, status: int, content_type: str, body: bytes, headers: dict[str, str] | None = None
    ) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the client gave up (e.g. a timed-out request to a slow TSA)
            self.close_connection = True
