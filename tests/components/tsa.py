"""A real RFC 3161 Time-Stamp Authority for the tests, and deliberately broken ones.

Public TSAs cannot be reached from the test machines, so the suite runs its own: OpenSSL's
`openssl ts -reply` behind a small HTTP server (POST application/timestamp-query, answer
application/timestamp-reply), on 127.0.0.1 and a free port, with its own CA. The broken modes
each produce exactly one defect so that every failure path of a TSA client can be exercised.

The TSA signing keys are written to the PKI directory because `openssl ts -reply` reads key
files; that directory is always a pytest temp dir, never the repository.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import requests
from asn1crypto import cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sealgate.localpki import CA_KEY_USAGE
from tests.components import require

QUERY_CONTENT_TYPE = "application/timestamp-query"
REPLY_CONTENT_TYPE = "application/timestamp-reply"
#: The policy the TSA stamps under (OpenSSL's documented example OID; its default openssl.cnf
#: names it `tsa_policy1`), and a second policy a client may request.
TSA_POLICY = "1.2.3.4.1"
TSA_OTHER_POLICY = "1.2.3.4.5"
#: The config sections: ESSCertIDv2 (SHA-256, RFC 5816) and the legacy ESSCertID (SHA-1).
SECTION_ESS_V2 = "tsa_ess_v2"
SECTION_ESS_V1 = "tsa_ess_v1"
ID_CT_TSTINFO = "1.2.840.113549.1.9.16.1.4"
_SERIAL_ENV = "SEALGATE_TSA_SERIAL"
_OPENSSL_TIMEOUT = 30.0
_MAX_QUERY = 64 * 1024

Mode = Literal[
    "good",  # a correct TSA (ESSCertIDv2, EC P-256 signer)
    "ess_v1",  # correct, but the token names its signer with the SHA-1 ESSCertID (v1)
    "rsa",  # correct, signed by an RSA-2048 TSA certificate
    "refuse",  # nothing listens on the port: connection refused
    "garbage",  # HTTP 200 with random bytes
    "http_error",  # HTTP 500
    "slow",  # waits `delay` seconds, then answers like good
    "wrong_nonce",  # a valid token for the query with another nonce
    "wrong_imprint",  # a valid token for the query with another messageImprint
    "untrusted",  # signed by a TSA whose root is not in root_pem
    "no_eku",  # signed by a certificate without the timeStamping EKU
    "noncritical_eku",  # signed by a certificate whose timeStamping EKU is not critical
    "expired",  # signed by a TSA certificate that expired before genTime
    "rejection",  # status rejection with a statusString and failInfo
    "no_token",  # status granted, but no timeStampToken
    "no_cert",  # a valid token that carries no certificate (certReq forced false)
    "fail_then_ok",  # HTTP 503 for the first `failures` requests, then good
    "chained",  # a public-TSA-style chain: root -> timeStamping intermediate -> TSA leaf
    "chained_no_certs",  # the same TSA, its token carrying no certificate (certReq forced false)
]
MODES: tuple[Mode, ...] = get_args(Mode)


def _openssl() -> str:
    path = shutil.which("openssl")
    require(path is not None, "openssl")
    assert path is not None
    return path


# --------------------------------------------------------------------------------------------
# PKI


@dataclass(frozen=True)
class TsaSigner:
    """One TSA signing identity: its certificate, key file, and the chain its tokens carry."""

    name: str
    cert: Path
    key: Path
    chain: Path
    certificate: x509.Certificate


@dataclass(frozen=True)
class TsaPki:
    """The TSA's CA and its signing certificates, one per defect a client must detect."""

    directory: Path
    root_pem: Path  # the trust anchor to pass as --tsa-roots
    untrusted_root_pem: Path  # the impostor root: same name as root_pem, another key
    config: Path  # the openssl ts config (sections SECTION_ESS_V2 and SECTION_ESS_V1)
    root: x509.Certificate
    untrusted_root: x509.Certificate
    good: TsaSigner  # EC P-256, EKU timeStamping (critical)
    rsa: TsaSigner  # RSA-2048, EKU timeStamping (critical)
    no_eku: TsaSigner  # no extendedKeyUsage at all
    noncritical_eku: TsaSigner  # EKU timeStamping, not critical
    untrusted: TsaSigner  # EKU timeStamping (critical), issued by untrusted_root
    expired: TsaSigner  # EKU timeStamping (critical), validity ended 30 days ago
    #: Like IdenTrust's "TrustID Timestamping CA 3": an intermediate CA whose EKU is
    #: timeStamping, under root; `chained` is the TSA leaf it issued (chain = intermediate).
    intermediate: x509.Certificate
    intermediate_pem: Path
    chained: TsaSigner
    #: `intermediate_pem` + the leaf: what a user passes as --tsa-certs for chained_no_certs.
    chained_certs_pem: Path

    def signer(self, name: str) -> TsaSigner:
        """A signer by name (good, rsa, no_eku, noncritical_eku, untrusted, expired, chained)."""
        signer = getattr(self, name)
        if not isinstance(signer, TsaSigner):
            raise KeyError(name)
        return signer


_PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Sealgate Tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _make_ca(
    name: x509.Name,
    issuer: tuple[x509.Certificate, _PrivateKey] | None,
    now: dt.datetime,
    *,
    path_length: int,
    days: int,
    eku: list[x509.ObjectIdentifier] | None = None,
) -> tuple[x509.Certificate, _PrivateKey]:
    """A CA certificate: self-signed when `issuer` is None, else under it; `eku` None leaves
    out extendedKeyUsage (the CA/B Forum profiles let an intermediate's EKU constrain what it
    issues)."""
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_name, issuer_key = (name, key) if issuer is None else (issuer[0].subject, issuer[1])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(CA_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return builder.sign(issuer_key, hashes.SHA256()), key


def _make_signer(
    directory: Path,
    name: str,
    issuer: tuple[x509.Certificate, _PrivateKey],
    chain: Path,
    *,
    eku: bool | None,  # None: no EKU; otherwise the EKU's criticality
    not_before: dt.datetime,
    not_after: dt.datetime,
    use_rsa: bool = False,
) -> TsaSigner:
    issuer_cert, issuer_key = issuer
    key: _PrivateKey = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if use_rsa
        else ec.generate_private_key(ec.SECP256R1())
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(f"Sealgate Test TSA ({name})"))
        .issuer_name(issuer_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if eku is not None:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=eku
        )
    cert = builder.sign(issuer_key, hashes.SHA256())
    cert_path = directory / f"{name}.pem"
    key_path = directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return TsaSigner(name=name, cert=cert_path, key=key_path, chain=chain, certificate=cert)


def _config_section(section: str, ess_cert_id_alg: str) -> str:
    return f"""[ {section} ]
serial = $ENV::{_SERIAL_ENV}
crypto_device = builtin
signer_digest = sha256
default_policy = {TSA_POLICY}
other_policies = {TSA_OTHER_POLICY}
digests = sha256, sha384, sha512
accuracy = secs:1, millisecs:500, microsecs:100
clock_precision_digits = 0
ordering = no
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = {ess_cert_id_alg}
"""


def make_tsa_pki(directory: Path) -> TsaPki:
    """Create the TSA CA, the impostor CA and every signer variant under `directory`."""
    _openssl()
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    root_name = _name("Sealgate Test TSA Root")
    root = _make_ca(root_name, None, now, path_length=1, days=3650)
    # Same subject as the real root, different key: only a signature check catches it.
    impostor = _make_ca(root_name, None, now, path_length=1, days=3650)
    root_pem = directory / "tsa-root.pem"
    untrusted_root_pem = directory / "tsa-untrusted-root.pem"
    root_pem.write_bytes(root[0].public_bytes(serialization.Encoding.PEM))
    untrusted_root_pem.write_bytes(impostor[0].public_bytes(serialization.Encoding.PEM))
    config = directory / "tsa.cnf"
    config.write_text(
        "# openssl ts -reply sections; the serial file is per request, named by the environment\n"
        + _config_section(SECTION_ESS_V2, "sha256")
        + "\n"
        + _config_section(SECTION_ESS_V1, "sha1")
    )
    start, end = now - dt.timedelta(days=1), now + dt.timedelta(days=365)
    intermediate = _make_ca(
        _name("Sealgate Test Timestamping CA 3"),
        root,
        now,
        path_length=0,
        days=1825,
        eku=[ExtendedKeyUsageOID.TIME_STAMPING],
    )
    intermediate_pem = directory / "tsa-intermediate.pem"
    intermediate_pem.write_bytes(intermediate[0].public_bytes(serialization.Encoding.PEM))
    chained = _make_signer(
        directory,
        "chained",
        intermediate,
        intermediate_pem,
        eku=True,
        not_before=start,
        not_after=end,
    )
    chained_certs_pem = directory / "tsa-chained-certs.pem"
    chained_certs_pem.write_bytes(
        intermediate_pem.read_bytes() + chained.certificate.public_bytes(serialization.Encoding.PEM)
    )
    return TsaPki(
        directory=directory,
        root_pem=root_pem,
        untrusted_root_pem=untrusted_root_pem,
        config=config,
        root=root[0],
        untrusted_root=impostor[0],
        good=_make_signer(
            directory, "good", root, root_pem, eku=True, not_before=start, not_after=end
        ),
        rsa=_make_signer(
            directory,
            "rsa",
            root,
            root_pem,
            eku=True,
            use_rsa=True,
            not_before=start,
            not_after=end,
        ),
        no_eku=_make_signer(
            directory, "no_eku", root, root_pem, eku=None, not_before=start, not_after=end
        ),
        noncritical_eku=_make_signer(
            directory, "noncritical_eku", root, root_pem, eku=False, not_before=start, not_after=end
        ),
        untrusted=_make_signer(
            directory,
            "untrusted",
            impostor,
            untrusted_root_pem,
            eku=True,
            not_before=start,
            not_after=end,
        ),
        expired=_make_signer(
            directory,
            "expired",
            root,
            root_pem,
            eku=True,
            not_before=now - dt.timedelta(days=60),
            not_after=now - dt.timedelta(days=30),
        ),
        intermediate=intermediate[0],
        intermediate_pem=intermediate_pem,
        chained=chained,
        chained_certs_pem=chained_certs_pem,
    )


# --------------------------------------------------------------------------------------------
# Queries, replies and verification


class TimeStampResp(core.Sequence):  # type: ignore[misc]
    """RFC 3161 TimeStampResp with timeStampToken OPTIONAL, as the RFC has it.

    asn1crypto 1.5.1's tsp.TimeStampResp makes the token mandatory, so it can neither parse
    nor build a rejection (a reply without a token).
    """

    _fields: ClassVar[list[tuple[Any, ...]]] = [
        ("status", tsp.PKIStatusInfo),
        ("time_stamp_token", cms.ContentInfo, {"optional": True}),
    ]


def make_query(
    data: bytes, hash_name: str = "sha256", nonce: int | None = None, cert_req: bool = True
) -> bytes:
    """A DER TimeStampReq over `data` (no nonce field when `nonce` is None)."""
    fields: dict[str, Any] = {
        "version": "v1",
        "message_imprint": {
            "hash_algorithm": {"algorithm": hash_name},
            "hashed_message": hashlib.new(hash_name, data).digest(),
        },
        "cert_req": cert_req,
    }
    if nonce is not None:
        fields["nonce"] = nonce
    der: bytes = tsp.TimeStampReq(fields).dump()
    return der


def parse_reply(der: bytes) -> Any:
    """The TimeStampResp of a reply (raises ValueError on malformed DER)."""
    reply = TimeStampResp.load(der, strict=True)
    reply["status"].native  # noqa: B018 -- parse now, so malformed input fails here
    if not isinstance(reply["time_stamp_token"], core.Void):
        reply_tst_info(reply).native  # noqa: B018 -- (not the certificates: slow in asn1crypto)
    return reply


def reply_token(reply: Any) -> bytes:
    """The DER timeStampToken (a CMS ContentInfo) of a parsed reply."""
    der: bytes = reply["time_stamp_token"].dump()
    return der


def reply_tst_info(reply: Any) -> Any:
    """The TSTInfo inside a parsed reply's token."""
    return reply["time_stamp_token"]["content"]["encap_content_info"]["content"].parsed


def post_query(
    url: str,
    query: bytes,
    *,
    session: requests.Session | None = None,
    timeout: float = 10.0,
) -> requests.Response:
    """POST a query the way RFC 3161 section 3.4 says a client must."""
    poster = session.post if session is not None else requests.post
    return poster(url, data=query, headers={"Content-Type": QUERY_CONTENT_TYPE}, timeout=timeout)


def openssl_ts_verify_token(
    token_der: bytes, data: bytes, ca_file: Path, untrusted: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Let stock OpenSSL judge a token over `data` (pass `untrusted` if it lacks its cert)."""
    with tempfile.TemporaryDirectory(prefix="tsa-verify-") as tmp:
        token_path = Path(tmp) / "token.der"
        data_path = Path(tmp) / "data"
        token_path.write_bytes(token_der)
        data_path.write_bytes(data)
        cmd = [_openssl(), "ts", "-verify", "-token_in", "-in", str(token_path)]
        cmd += ["-data", str(data_path), "-CAfile", str(ca_file)]
        if untrusted is not None:
            cmd += ["-untrusted", str(untrusted)]
        return subprocess.run(
            cmd, capture_output=True, text=True, check=False, timeout=_OPENSSL_TIMEOUT
        )


def _rejection(text: str, fail_info: str) -> bytes:
    der: bytes = TimeStampResp(
        {"status": {"status": "rejection", "status_string": [text], "fail_info": {fail_info}}}
    ).dump()
    return der


class TsaError(RuntimeError):
    """The local TSA could not produce a reply (an openssl failure: a bug in the fixture)."""


# --------------------------------------------------------------------------------------------
# The HTTP server


class _Server(ThreadingHTTPServer):
    """Counts connections and keeps its own handler threads so that stop() can join them."""

    daemon_threads = True  # a safety net only: stop() joins every handler thread
    block_on_close = False

    def __init__(self, tsa: LocalTsa) -> None:
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
        """Keep errors for the test instead of printing tracebacks (a client hanging up is fine)."""
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
        """Quiet: the tests read counters, not logs."""

    def do_GET(self) -> None:
        self._send(405, "text/plain", b"POST an application/timestamp-query\n", {"Allow": "POST"})

    def do_POST(self) -> None:
        tsa = self.server.tsa
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit() or int(length) > _MAX_QUERY:
            tsa._count(b"")
            self._send(411, "text/plain", b"a Content-Length up to 64 KiB is required\n")
            self.close_connection = True
            return
        body = self.rfile.read(int(length))
        number = tsa._count(body)
        if self.headers.get_content_type() != QUERY_CONTENT_TYPE:
            self._send(415, "text/plain", f"send {QUERY_CONTENT_TYPE}\n".encode())
            return
        try:
            status, content_type, reply = tsa._answer(body, number)
        except Exception as exc:  # a fixture bug: answer 500 and keep it for the test to see
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
        except OSError:  # the client gave up (e.g. a timed-out request to the slow TSA)
            self.close_connection = True


class LocalTsa:
    """A TSA on 127.0.0.1:<free port> in one `mode` (see Mode); start() / stop() or `with`.

    `request_count` counts POSTs, `connections` counts accepted TCP connections (so a test can
    assert that a client reuses its connection), `queries` holds the request bodies received.
    """

    def __init__(
        self,
        pki: TsaPki,
        mode: Mode = "good",
        *,
        delay: float = 2.0,
        failures: int = 2,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown TSA mode {mode!r}; one of {', '.join(MODES)}")
        self.pki = pki
        self.mode: Mode = mode
        self.delay = delay  # slow: seconds before answering
        self.failures = failures  # fail_then_ok: how many 503s first
        self.url = ""
        self.request_count = 0
        self.connections = 0
        self.queries: list[bytes] = []
        self.errors: list[str] = []
        #: The certificate that signs this TSA's tokens (None for modes that send no token).
        self.signer: TsaSigner | None = pki.good
        if mode in {"rsa", "untrusted", "no_eku", "noncritical_eku", "expired", "chained"}:
            self.signer = pki.signer(mode)
        elif mode == "chained_no_certs":
            self.signer = pki.chained
        elif mode in {"refuse", "garbage", "http_error", "rejection", "no_token"}:
            self.signer = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._serials = itertools.count(secrets.randbits(62) + 1)
        self._server: _Server | None = None
        self._serve_thread: threading.Thread | None = None
        self._placeholder: socket.socket | None = None
        self._open: set[Any] = set()
        self._threads: list[threading.Thread] = []
        self._work: tempfile.TemporaryDirectory[str] | None = None

    # lifecycle ---------------------------------------------------------------------------

    def start(self) -> LocalTsa:
        """Bind a free port and serve (refuse: bind without listening, so connects fail)."""
        _openssl()
        if self.mode == "refuse":
            # Bound but not listening: the port stays ours, and a connect gets ECONNREFUSED.
            self._placeholder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._placeholder.bind(("127.0.0.1", 0))
            self.url = f"http://127.0.0.1:{self._placeholder.getsockname()[1]}/"
            return self
        self._work = tempfile.TemporaryDirectory(prefix="tsa-", dir=self.pki.directory)
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
        if self._placeholder is not None:
            self._placeholder.close()
            self._placeholder = None
        if self._server is not None:
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
        if self._work is not None:
            self._work.cleanup()
            self._work = None

    def threads(self) -> list[threading.Thread]:
        """This TSA's threads that are still alive (empty after stop())."""
        with self._lock:
            alive = [t for t in self._threads if t.is_alive()]
        if self._serve_thread is not None and self._serve_thread.is_alive():
            alive.append(self._serve_thread)
        return alive

    def __enter__(self) -> LocalTsa:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # server callbacks --------------------------------------------------------------------

    def _accepted(self, conn: Any, thread: threading.Thread) -> None:
        with self._lock:
            self.connections += 1
            self._open.add(conn)
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)

    def _closed(self, conn: Any) -> None:
        with self._lock:
            self._open.discard(conn)

    def _count(self, body: bytes) -> int:
        with self._lock:
            self.request_count += 1
            self.queries.append(body)
            return self.request_count

    # answers -----------------------------------------------------------------------------

    def _answer(self, query: bytes, number: int) -> tuple[int, str, bytes]:
        """Status, content type and body for the `number`-th request in this mode."""
        mode = self.mode
        if mode == "http_error":
            return 500, "text/plain", b"internal error (deliberate)\n"
        if mode == "fail_then_ok" and number <= self.failures:
            return 503, "text/plain", b"busy (deliberate)\n"
        if mode == "garbage":
            # Never starts with 0x30 (SEQUENCE), so it can never parse as a TimeStampResp.
            return 200, REPLY_CONTENT_TYPE, b"\x00" + secrets.token_bytes(255)
        if mode == "rejection":
            return 200, REPLY_CONTENT_TYPE, _rejection("rejected (deliberate)", "bad_request")
        if mode == "no_token":
            der: bytes = TimeStampResp({"status": {"status": "granted"}}).dump()
            return 200, REPLY_CONTENT_TYPE, der
        if mode == "slow" and self._stopping.wait(self.delay):
            return 503, "text/plain", b"shutting down\n"
        return 200, REPLY_CONTENT_TYPE, self._stamp(self._rewrite(query))

    def _rewrite(self, query: bytes) -> bytes:
        """The query openssl really answers: nonce, imprint or certReq altered by the mode."""
        if self.mode not in {"wrong_nonce", "wrong_imprint", "no_cert", "chained_no_certs"}:
            return query
        try:
            req = tsp.TimeStampReq.load(query, strict=True)
            req.native  # noqa: B018 -- a query openssl would reject passes through unaltered
        except ValueError:
            return query
        if self.mode == "wrong_nonce":
            nonce = req["nonce"].native
            req["nonce"] = (nonce + 1) if nonce is not None else secrets.randbits(63)
        elif self.mode == "wrong_imprint":
            imprint = bytearray(req["message_imprint"]["hashed_message"].native)
            imprint[0] ^= 0xFF
            req["message_imprint"] = {
                "hash_algorithm": req["message_imprint"]["hash_algorithm"].native,
                "hashed_message": bytes(imprint),
            }
        else:
            req["cert_req"] = False
        out: bytes = req.dump(force=True)
        return out

    def _stamp(self, query: bytes) -> bytes:
        """A TimeStampResp from `openssl ts -reply` (re-signed for signers openssl refuses)."""
        signer = self.signer or self.pki.good
        section = SECTION_ESS_V1 if self.mode == "ess_v1" else SECTION_ESS_V2
        if self.mode in {"no_eku", "noncritical_eku"}:
            return self._resign(self._openssl_reply(query, self.pki.good, section), signer)
        return self._openssl_reply(query, signer, section)

    def _openssl_reply(self, query: bytes, signer: TsaSigner, section: str) -> bytes:
        assert self._work is not None
        with self._lock:
            serial = next(self._serials)
        with tempfile.TemporaryDirectory(dir=self._work.name) as tmp:
            work = Path(tmp)
            hex_serial = f"{serial:X}"
            (work / "serial").write_text(hex_serial.zfill(len(hex_serial) + len(hex_serial) % 2))
            (work / "query.tsq").write_bytes(query)
            cmd = [_openssl(), "ts", "-reply", "-config", str(self.pki.config)]
            cmd += ["-section", section, "-queryfile", str(work / "query.tsq")]
            cmd += ["-signer", str(signer.cert), "-inkey", str(signer.key)]
            cmd += ["-chain", str(signer.chain), "-out", str(work / "reply.tsr")]
            env = {**os.environ, _SERIAL_ENV: str(work / "serial")}
            result = subprocess.run(
                cmd, capture_output=True, text=True, env=env, check=False, timeout=_OPENSSL_TIMEOUT
            )
            if result.returncode != 0:
                raise TsaError(f"openssl ts -reply failed: {result.stderr.strip()}")
            return (work / "reply.tsr").read_bytes()

    def _resign(self, reply_der: bytes, signer: TsaSigner) -> bytes:
        """Re-sign openssl's TSTInfo with a certificate `openssl ts -reply` refuses to use.

        OpenSSL checks the signer's purpose (EKU timeStamping, critical) before signing, so
        for no_eku / noncritical_eku the TSTInfo comes from a good reply and is signed again
        with `openssl cms -sign -cades` (signingCertificateV2), naming the new signer as tsa.
        """
        reply = TimeStampResp.load(reply_der)
        if reply["status"]["status"].native != "granted":
            return reply_der
        token = reply["time_stamp_token"]
        tst = tsp.TSTInfo.load(token["content"]["encap_content_info"]["content"].parsed.dump())
        subject = asn1_x509.Name.load(signer.certificate.subject.public_bytes())
        tst["tsa"] = asn1_x509.GeneralName(name="directory_name", value=subject)
        assert self._work is not None
        with tempfile.TemporaryDirectory(dir=self._work.name) as tmp:
            work = Path(tmp)
            (work / "tstinfo.der").write_bytes(tst.dump(force=True))
            cmd = [_openssl(), "cms", "-sign", "-binary", "-nodetach", "-cades", "-nosmimecap"]
            cmd += ["-md", "sha256", "-econtent_type", ID_CT_TSTINFO, "-outform", "DER"]
            cmd += ["-signer", str(signer.cert), "-inkey", str(signer.key)]
            if len(token["content"]["certificates"]) > 0:
                cmd += ["-certfile", str(signer.chain)]
            else:
                cmd += ["-nocerts"]
            cmd += ["-in", str(work / "tstinfo.der"), "-out", str(work / "token.der")]
            result = subprocess.run(
                cmd, capture_output=True, text=True, check=False, timeout=_OPENSSL_TIMEOUT
            )
            if result.returncode != 0:
                raise TsaError(f"openssl cms -sign failed: {result.stderr.strip()}")
            new_token = cms.ContentInfo.load((work / "token.der").read_bytes())
        out: bytes = TimeStampResp(
            {"status": {"status": "granted"}, "time_stamp_token": new_token}
        ).dump()
        return out


@contextmanager
def start_tsa(
    pki: TsaPki, mode: Mode = "good", *, delay: float = 2.0, failures: int = 2
) -> Iterator[LocalTsa]:
    """A running LocalTsa for the `with` block; stopped (threads joined) afterwards."""
    tsa = LocalTsa(pki, mode, delay=delay, failures=failures)
    tsa.start()
    try:
        yield tsa
    finally:
        tsa.stop()


__all__ = [
    "MODES",
    "QUERY_CONTENT_TYPE",
    "REPLY_CONTENT_TYPE",
    "SECTION_ESS_V1",
    "SECTION_ESS_V2",
    "TSA_OTHER_POLICY",
    "TSA_POLICY",
    "LocalTsa",
    "Mode",
    "TimeStampResp",
    "TsaError",
    "TsaPki",
    "TsaSigner",
    "make_query",
    "make_tsa_pki",
    "openssl_ts_verify_token",
    "parse_reply",
    "post_query",
    "reply_token",
    "reply_tst_info",
    "start_tsa",
]
