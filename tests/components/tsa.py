"""A real RFC 3161 Time-Stamp Authority for the tests, and deliberately broken ones.

Public TSAs cannot be reached from the test machines, so the suite runs its own: OpenSSL's
`openssl ts -reply` behind a small HTTP server (POST application/timestamp-query, answer
application/timestamp-reply), on 127.0.0.1 and a free port, with its own CA. The certificates
and the HTTP server are the demo's (sealgate.localpki, sealgate.localtsa); what is test-only
lives here: the broken modes, each producing exactly one defect so that every failure path of
a TSA client can be exercised.

The TSA signing keys are written to the PKI directory because `openssl ts -reply` reads key
files; that directory is always a pytest temp dir, never the repository.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import requests
from asn1crypto import cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from sealgate.localpki import LocalCA, pki_name, tsa_certificate, write_pem, write_private_key
from sealgate.localtsa import (
    OPENSSL_TIMEOUT,
    QUERY_CONTENT_TYPE,
    REPLY_CONTENT_TYPE,
    TSA_POLICY,
    TsaServer,
    openssl_ts_reply,
    tsa_config_section,
)
from tests.components import require

#: A second policy a client may request (TSA_POLICY, OpenSSL's example OID, is the default).
TSA_OTHER_POLICY = "1.2.3.4.5"
#: The config sections: ESSCertIDv2 (SHA-256, RFC 5816) and the legacy ESSCertID (SHA-1).
SECTION_ESS_V2 = "tsa_ess_v2"
SECTION_ESS_V1 = "tsa_ess_v1"
ID_CT_TSTINFO = "1.2.840.113549.1.9.16.1.4"
_ORGANIZATION = "Sealgate Tests"
_OPENSSL_TIMEOUT = OPENSSL_TIMEOUT

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


def _make_signer(
    directory: Path,
    name: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    chain: Path,
    *,
    eku: bool | None,  # None: no EKU; otherwise the EKU's criticality
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    use_rsa: bool = False,
) -> TsaSigner:
    """One TSA signer from the demo's certificate builder, its key in a 0600 file."""
    key: _PrivateKey = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if use_rsa
        else ec.generate_private_key(ec.SECP256R1())
    )
    cert = tsa_certificate(
        key.public_key(),
        pki_name(f"Sealgate Test TSA ({name})", _ORGANIZATION),
        *issuer,
        eku_critical=eku,
        not_before=not_before,
        not_after=not_after,
    )
    return TsaSigner(
        name=name,
        cert=write_pem(directory / f"{name}.pem", cert),
        key=write_private_key(directory / f"{name}.key", key),
        chain=chain,
        certificate=cert,
    )


def make_tsa_pki(directory: Path) -> TsaPki:
    """Create the TSA CA, the impostor CA and every signer variant under `directory`."""
    _openssl()
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    root_ca = LocalCA(name="Sealgate Test TSA Root", organization=_ORGANIZATION)
    # Same subject as the real root, different key: only a signature check catches it.
    impostor_ca = LocalCA(name="Sealgate Test TSA Root", organization=_ORGANIZATION)
    root, impostor = (root_ca.root, root_ca.root_key), (impostor_ca.root, impostor_ca.root_key)
    root_pem = write_pem(directory / "tsa-root.pem", root_ca.root)
    untrusted_root_pem = write_pem(directory / "tsa-untrusted-root.pem", impostor_ca.root)
    config = directory / "tsa.cnf"
    config.write_text(
        "# openssl ts -reply sections; the serial file is per request, named by the environment\n"
        + tsa_config_section(SECTION_ESS_V2, other_policies=TSA_OTHER_POLICY)
        + "\n"
        + tsa_config_section(
            SECTION_ESS_V1, other_policies=TSA_OTHER_POLICY, ess_cert_id_alg="sha1"
        )
    )
    intermediate_key = ec.generate_private_key(ec.SECP256R1())
    intermediate_cert = root_ca.intermediate(
        "Sealgate Test Timestamping CA 3",
        intermediate_key,
        path_length=0,
        days=1825,
        eku=[ExtendedKeyUsageOID.TIME_STAMPING],
    )
    intermediate_pem = write_pem(directory / "tsa-intermediate.pem", intermediate_cert)
    chained = _make_signer(
        directory, "chained", (intermediate_cert, intermediate_key), intermediate_pem, eku=True
    )
    chained_certs_pem = write_pem(
        directory / "tsa-chained-certs.pem", intermediate_cert, chained.certificate
    )
    return TsaPki(
        directory=directory,
        root_pem=root_pem,
        untrusted_root_pem=untrusted_root_pem,
        config=config,
        root=root_ca.root,
        untrusted_root=impostor_ca.root,
        good=_make_signer(directory, "good", root, root_pem, eku=True),
        rsa=_make_signer(directory, "rsa", root, root_pem, eku=True, use_rsa=True),
        no_eku=_make_signer(directory, "no_eku", root, root_pem, eku=None),
        noncritical_eku=_make_signer(directory, "noncritical_eku", root, root_pem, eku=False),
        untrusted=_make_signer(directory, "untrusted", impostor, untrusted_root_pem, eku=True),
        expired=_make_signer(
            directory,
            "expired",
            root,
            root_pem,
            eku=True,
            not_before=now - dt.timedelta(days=60),
            not_after=now - dt.timedelta(days=30),
        ),
        intermediate=intermediate_cert,
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
# The TSA: the demo's HTTP server (sealgate.localtsa.TsaServer) with one behaviour per mode


class LocalTsa(TsaServer):
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
        super().__init__()
        self.pki = pki
        self.mode: Mode = mode
        self.delay = delay  # slow: seconds before answering
        self.failures = failures  # fail_then_ok: how many 503s first
        self.queries: list[bytes] = []
        #: The certificate that signs this TSA's tokens (None for modes that send no token).
        self.signer: TsaSigner | None = pki.good
        if mode in {"rsa", "untrusted", "no_eku", "noncritical_eku", "expired", "chained"}:
            self.signer = pki.signer(mode)
        elif mode == "chained_no_certs":
            self.signer = pki.chained
        elif mode in {"refuse", "garbage", "http_error", "rejection", "no_token"}:
            self.signer = None
        self._serials = itertools.count(secrets.randbits(62) + 1)
        self._placeholder: socket.socket | None = None
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
        return super().start()

    def stop(self) -> None:
        """Stop serving (joining every thread) and remove the per-request work folder."""
        self._stopping.set()
        if self._placeholder is not None:
            self._placeholder.close()
            self._placeholder = None
        super().stop()
        if self._work is not None:
            self._work.cleanup()
            self._work = None

    def received(self, body: bytes) -> int:
        with self._lock:
            self.request_count += 1
            self.queries.append(body)
            return self.request_count

    # answers -----------------------------------------------------------------------------

    def answer(self, query: bytes, number: int) -> tuple[int, str, bytes]:
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
        return openssl_ts_reply(
            query, config=self.pki.config, section=section, cert=signer.cert, key=signer.key,
            chain=signer.chain, serial=serial, workdir=Path(self._work.name),
        )  # fmt: skip

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
