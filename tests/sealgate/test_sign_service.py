"""`sealgate sign --service` against a MALICIOUS service: a local HTTP server that answers with
real `.p7s` files made by the SoftHSM key, then bent (wrong digest, another artifact's
signature, another key, truncated, missing or doubled items, a huge answer, a lying receipt).
None may be written; each is refused with its exit code and reason. The honest answers are the
controls: they are written, and `sealgate verify` and stock OpenSSL accept them."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import cms as asn1cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from sealgate.localpki import LocalCA, write_pem
from sealgate.service.protocol import SignRequest, parse_sign_request
from signer import cms
from signer.algorithms import KeyKind, SignatureScheme
from signer.keys import RemoteKey, open_key
from signer.sign import DigestToSign, SignOptions, sign_digests
from tests.components.cli import openssl_cms_verify, sealgate
from tests.components.hsm import HsmFixture
from tests.components.tsa import TsaPki
from tests.sealgate.test_idtoken import TokenEndpoint, fake_jwt, start_endpoint

Answer = dict[str, Any]
#: (request, honest answer) -> (status, body): what the service under test says
Behaviour = Callable[[SignRequest, Answer], tuple[int, bytes]]


@dataclass
class FakeService:
    """A signing service on 127.0.0.1 that signs honestly with the HSM key, then lets the test
    bend the answer before it goes out."""

    sign: Callable[[SignRequest], Answer]
    behaviour: Behaviour = lambda _request, answer: (200, json.dumps(answer).encode())
    requests: list[dict[str, Any]] = field(default_factory=list)
    #: where a 3xx answer points
    location: str = "http://127.0.0.2:1/v1/sign"
    server: ThreadingHTTPServer | None = None

    scheme: str = "http"

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"{self.scheme}://127.0.0.1:{self.server.server_address[1]}"


@contextmanager
def serve(service: FakeService, tls: ssl.SSLContext | None = None) -> Iterator[FakeService]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            service.requests.append(
                {"path": self.path, "authorization": self.headers.get("Authorization"),
                 "body": body}
            )  # fmt: skip
            request = parse_sign_request(body)
            status, answer = service.behaviour(request, service.sign(request))
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", service.location)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *_: object) -> None:
            pass

    service.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        service.server.socket = tls.wrap_socket(service.server.socket, server_side=True)
        service.scheme = "https"
    thread = threading.Thread(target=service.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield service
    finally:
        service.server.shutdown()
        service.server.server_close()
        thread.join(timeout=10)


def _answer(request: SignRequest, items: list[tuple[str, str, bytes, bytes]]) -> Answer:
    """The protocol's answer, with a receipt whose record names exactly these items."""
    record = {
        "index": 41, "time": "2026-01-01T00:00:00.000000Z", "request_id": "req-1",
        "event": "sign", "actor": {"iss": "https://issuer.test"}, "key": request.key,
        "key_version": 1, "artifacts": [a.as_json() for a in request.artifacts],
        "outputs": [hashlib.sha256(p7s).hexdigest() for *_, p7s in items],
        "grant": "release", "decision": "allow", "reason_code": "signed", "reason": "",
    }  # fmt: skip
    return {
        "request_id": "req-1",
        "key": request.key,
        "key_version": 1,
        "signatures": [
            {
                "name": name,
                "digest_algorithm": alg,
                "digest": digest.hex(),
                "p7s": base64.b64encode(p7s).decode(),
                "timestamp": None,
            }
            for name, alg, digest, p7s in items
        ],
        "receipt": {"index": 41, "hash": "ab" * 32, "record": record},
    }


@dataclass
class Signing:
    """The HSM key and the options the honest service signs with."""

    key: RemoteKey
    options: SignOptions

    def items(
        self, request: SignRequest, digests: list[bytes] | None = None
    ) -> list[tuple[str, str, bytes, bytes]]:
        """(name, alg, digest, p7s) per artifact; `digests` overrides what is really signed."""
        signed = digests or [a.digest for a in request.artifacts]
        batch = sign_digests(
            self.key,
            [DigestToSign(a.name, a.digest_algorithm, d)
             for a, d in zip(request.artifacts, signed, strict=True)],
            self.options,
        )  # fmt: skip
        return [
            (a.name, a.digest_algorithm, a.digest, item.cms_der)
            for a, item in zip(request.artifacts, batch.items, strict=True)
        ]

    def honest(self, request: SignRequest) -> Answer:
        return _answer(request, self.items(request))


@pytest.fixture(scope="module")
def signing(hsm: HsmFixture) -> Iterator[Signing]:
    saved = {name: os.environ.get(name) for name in hsm.token.env}
    os.environ.update(hsm.token.env)
    try:
        chain = x509.load_pem_x509_certificates(hsm.chain_pem.read_bytes())
        with open_key(hsm.uri("ec256")) as key:
            yield Signing(key, SignOptions(cert=hsm.certs["ec256"], chain=chain))
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def artifacts(tmp_path: Path) -> list[Path]:
    paths = []
    for name in ("app.tar.gz", "app.sbom.json"):
        path = tmp_path / name
        path.write_bytes(hashlib.shake_256(name.encode()).digest(50_000))
        paths.append(path)
    return paths


def _env(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEALGATE_", "ACTIONS_"))}
    env["SEALGATE_ID_TOKEN"] = fake_jwt(aud=url)
    env.update(extra)
    return env


def _sign(
    url: str, artifacts: list[Path], *extra: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return sealgate(
        "sign", "--service", url, "--key", "release", *extra, *artifacts,
        env=env if env is not None else _env(url),
    )  # fmt: skip


def _nothing_written(artifacts: list[Path]) -> None:
    leftovers = sorted(p.name for p in artifacts[0].parent.iterdir() if p not in artifacts)
    assert leftovers == [], leftovers


def _refused(result: Any, exit_code: int, code: str, *words: str) -> None:
    assert result.returncode == exit_code, result.stderr
    assert f"[{code}]" in result.stderr, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


# -- the controls --------------------------------------------------------------------------


@pytest.mark.slow  # over 3 s on the loaded runner
def test_honest_service_signatures_are_written_and_verify(
    signing: Signing, hsm: HsmFixture, artifacts: list[Path]
) -> None:
    with serve(FakeService(signing.honest)) as service:
        env = _env(service.url)
        result = _sign(service.url, artifacts, "--trust-roots", hsm.root_pem, "--json", env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [s["path"] for s in report["signed"]] == [str(p) for p in artifacts]
    assert report["receipt"]["index"] == 41 and report["key_version"] == 1
    # the digests travelled, the artifacts never did; the token went as the bearer
    (seen,) = service.requests
    assert seen["path"] == "/v1/sign"
    assert seen["authorization"] == f"Bearer {env['SEALGATE_ID_TOKEN']}"
    sent = json.loads(seen["body"])
    assert sent["artifacts"][0]["digest"] == hashlib.sha256(artifacts[0].read_bytes()).hexdigest()
    assert len(seen["body"]) < 1000
    assert env["SEALGATE_ID_TOKEN"] not in result.stdout + result.stderr
    for artifact in artifacts:
        p7s = artifact.with_name(artifact.name + ".p7s")
        assert openssl_cms_verify(p7s, artifact, hsm.root_pem).returncode == 0
        receipt = json.loads(artifact.with_name(artifact.name + ".p7s.receipt.json").read_text())
        assert receipt["receipt"]["index"] == 41
        assert receipt["artifact"]["name"] == str(artifact)
    gate = sealgate("verify", "--trust-roots", hsm.root_pem, *artifacts)
    assert gate.returncode == 0, gate.stdout + gate.stderr


def test_answer_in_another_order_is_matched_by_name(
    signing: Signing, artifacts: list[Path], tmp_path: Path
) -> None:
    def swapped(request: SignRequest, answer: Answer) -> tuple[int, bytes]:
        answer["signatures"].reverse()  # each item still names its own artifact
        return 200, json.dumps(answer).encode()

    out = tmp_path / "out"
    out.mkdir()
    with serve(FakeService(signing.honest, swapped)) as service:
        result = _sign(service.url, artifacts, "--out-dir", out)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(
        n for a in artifacts for n in (a.name + ".p7s", a.name + ".p7s.receipt.json")
    )


# -- a malicious service: nothing is written ---------------------------------------------


def _bent(bend: Callable[[Answer], None]) -> Behaviour:
    def behaviour(_request: SignRequest, answer: Answer) -> tuple[int, bytes]:
        bend(answer)
        return 200, json.dumps(answer).encode()

    return behaviour


def _p7s(answer: Answer, index: int) -> bytes:
    return base64.b64decode(answer["signatures"][index]["p7s"])


def _set_p7s(answer: Answer, index: int, der: bytes) -> None:
    answer["signatures"][index]["p7s"] = base64.b64encode(der).decode()


def _swap_p7s(answer: Answer) -> None:
    first, second = _p7s(answer, 0), _p7s(answer, 1)
    _set_p7s(answer, 0, second)
    _set_p7s(answer, 1, first)


def _other_digest(answer: Answer) -> None:
    answer["signatures"][1]["digest"] = "00" * 32


def _truncate(answer: Answer) -> None:
    _set_p7s(answer, 1, _p7s(answer, 1)[:-40])


def _garbage(answer: Answer) -> None:
    _set_p7s(answer, 0, os.urandom(600))


def _not_base64(answer: Answer) -> None:
    answer["signatures"][0]["p7s"] = "%%%not base64%%%"


def _drop(answer: Answer) -> None:
    del answer["signatures"][1]


def _double(answer: Answer) -> None:
    answer["signatures"].append(copy.deepcopy(answer["signatures"][0]))


def _stranger(answer: Answer) -> None:
    answer["signatures"][1]["name"] = "../../etc/passwd"


def _other_key_name(answer: Answer) -> None:
    answer["key"] = "staging"


def _receipt_for_others(answer: Answer) -> None:
    answer["receipt"]["record"]["artifacts"][0]["digest"] = "11" * 32


def _receipt_other_outputs(answer: Answer) -> None:
    answer["receipt"]["record"]["outputs"].reverse()


def _receipt_denied(answer: Answer) -> None:
    answer["receipt"]["record"]["decision"] = "deny"


@pytest.mark.parametrize(
    ("bend", "exit_code", "code", "words"),
    [
        (_swap_p7s, 1, "digest-mismatch", "digest mismatch"),  # a p7s for the other artifact
        (_other_digest, 1, "digest-mismatch", "another digest than ours"),
        (_truncate, 1, "malformed-signature", "app.sbom.json"),
        (_garbage, 1, "malformed-signature", "app.tar.gz"),
        (_not_base64, 3, "bad-answer", "not a signing answer"),
        (_drop, 1, "service-signature-invalid", "no signature for"),
        (_double, 1, "service-signature-invalid", "two signatures for"),
        (_stranger, 1, "service-signature-invalid", "not asked for"),
        (_other_key_name, 1, "service-signature-invalid", "for key 'staging'"),
        (_receipt_for_others, 3, "receipt-mismatch", "other artifacts or digests"),
        (_receipt_other_outputs, 3, "receipt-mismatch", "other signatures"),
        (_receipt_denied, 3, "receipt-mismatch", "allowed signing"),
    ],
)
def test_a_bent_answer_writes_nothing(
    signing: Signing,
    artifacts: list[Path],
    bend: Callable[[Answer], None],
    exit_code: int,
    code: str,
    words: str,
) -> None:
    old = artifacts[0].with_name(artifacts[0].name + ".p7s")
    old.write_bytes(b"the previous signature")  # a failed batch must not touch it either
    with serve(FakeService(signing.honest, _bent(bend))) as service:
        result = _sign(service.url, artifacts)
    _refused(result, exit_code, code, words, "nothing was written")
    assert old.read_bytes() == b"the previous signature"
    old.unlink()
    _nothing_written(artifacts)


def test_a_signature_over_another_digest_with_our_digest_in_the_json(
    signing: Signing, artifacts: list[Path]
) -> None:
    """The JSON says our digest; the CMS's messageDigest is another file's."""

    def lying(request: SignRequest) -> Answer:
        return _answer(request, signing.items(request, [b"\x01" * 32, b"\x02" * 32]))

    with serve(FakeService(lying)) as service:
        result = _sign(service.url, artifacts)
    _refused(result, 1, "digest-mismatch", "digest mismatch", "nothing was written")
    _nothing_written(artifacts)


def _foreign_cms(digest: bytes, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bytes:
    """A CAdES-BES that names `cert` and is signed by `key` (any key the test holds)."""
    scheme = SignatureScheme(KeyKind.EC_P256, "sha256")
    builder = cms.CadesBesBuilder(scheme, cms.to_asn1(cert), [], cms.utc_now())
    payload = builder.signed_attributes(digest)
    return builder.signed_data(payload, key.sign(payload, ec.ECDSA(hashes.SHA256())), b"")


def test_a_signature_by_another_key_under_our_certificate(
    signing: Signing, hsm: HsmFixture, artifacts: list[Path]
) -> None:
    other = ec.generate_private_key(ec.SECP256R1())

    def forged(request: SignRequest, answer: Answer) -> tuple[int, bytes]:
        digest = request.artifacts[0].digest
        _set_p7s(answer, 0, _foreign_cms(digest, hsm.certs["ec256"], other))
        return 200, json.dumps(answer).encode()

    with serve(FakeService(signing.honest, forged)) as service:
        result = _sign(service.url, artifacts)
    _refused(result, 1, "bad-signature", "does not verify", "nothing was written")
    _nothing_written(artifacts)


@pytest.mark.slow  # over 3 s on the loaded runner
def test_a_signer_from_another_ca(
    signing: Signing, hsm: HsmFixture, artifacts: list[Path], tmp_path: Path
) -> None:
    """Self-consistent signatures by a key and CA of the service's own choosing: a mixed batch
    is refused as it is; a wholly foreign one is refused by --trust-roots (and only by it)."""
    ca = LocalCA(name="Mallory Root")
    other = ec.generate_private_key(ec.SECP256R1())
    cert = ca.issue(other.public_key(), "Sealgate test signer ec256")

    def mixed(request: SignRequest, answer: Answer) -> tuple[int, bytes]:
        _set_p7s(answer, 1, _foreign_cms(request.artifacts[1].digest, cert, other))
        return 200, json.dumps(answer).encode()

    def foreign(request: SignRequest) -> Answer:
        items = [(a.name, a.digest_algorithm, a.digest, _foreign_cms(a.digest, cert, other))
                 for a in request.artifacts]  # fmt: skip
        return _answer(request, items)

    with serve(FakeService(signing.honest, mixed)) as service:
        result = _sign(service.url, artifacts)
    _refused(result, 1, "signer-mismatch", "another certificate", "nothing was written")
    _nothing_written(artifacts)
    with serve(FakeService(foreign)) as service:
        result = _sign(service.url, artifacts, "--trust-roots", hsm.root_pem)
    _refused(result, 1, "untrusted-chain", "app.tar.gz", "Mallory Root", "nothing was written")
    _nothing_written(artifacts)
    with serve(FakeService(foreign)) as service:  # control: the roots decide, nothing else
        roots = write_pem(tmp_path / "mallory.pem", ca.root)
        result = _sign(service.url, artifacts, "--trust-roots", roots)
    assert result.returncode == 0, result.stderr


def test_a_huge_answer_is_cut_off(signing: Signing, artifacts: list[Path]) -> None:
    def huge(_request: SignRequest, answer: Answer) -> tuple[int, bytes]:
        answer["padding"] = "A" * (8 << 20)
        return 200, json.dumps(answer).encode()

    with serve(FakeService(signing.honest, huge)) as service:
        result = _sign(service.url, artifacts)
    _refused(result, 3, "bad-answer", "larger than", "nothing was written")
    _nothing_written(artifacts)


# -- the service's refusals ------------------------------------------------------------------


def _error(status: int, code: str, message: str, field: str | None = None) -> Behaviour:
    body = json.dumps({"error": {"code": code, "message": message, "field": field},
                       "request_id": "r"}).encode()  # fmt: skip
    return lambda _request, _answer: (status, body)


@pytest.mark.parametrize(
    ("status", "code", "exit_code"),
    [
        (401, "bad-token", 2),
        (401, "token-replayed", 2),
        (403, "no-grant", 1),
        (404, "unknown-key", 2),
        (413, "too-many-artifacts", 2),
        (422, "digest-algorithm-mismatch", 2),
        (429, "rate-limited", 2),
        (500, "internal", 3),
    ],
)
def test_service_refusals_keep_the_service_code(
    signing: Signing, artifacts: list[Path], status: int, code: str, exit_code: int
) -> None:
    with serve(FakeService(signing.honest, _error(status, code, "ref 'refs/heads/x' failed",
                                                  "ref"))) as service:  # fmt: skip
        result = _sign(service.url, artifacts)
    _refused(result, exit_code, code, f"HTTP {status}", "(field ref)", "refs/heads/x")
    assert len(service.requests) == 1  # a refusal is never retried with the same token
    _nothing_written(artifacts)


def test_a_service_message_cannot_echo_the_token_or_forge_log_lines(
    signing: Signing, artifacts: list[Path]
) -> None:
    with serve(FakeService(signing.honest)) as service:
        env = _env(service.url)
        token = env["SEALGATE_ID_TOKEN"]
        service.behaviour = _error(
            403, "no-grant", f"your token {token}\n::error::all verified\r\x1b[2Kok"
        )
        result = _sign(service.url, artifacts, env=env)
    _refused(result, 1, "no-grant", "REDACTED")
    assert token not in result.stderr + result.stdout
    assert "\n::error::" not in result.stderr and "\x1b" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_redirect_is_not_followed(signing: Signing, artifacts: list[Path]) -> None:
    with serve(FakeService(signing.honest)) as target:
        redirect = FakeService(signing.honest, lambda _r, _a: (307, b""))
        redirect.location = target.url + "/v1/sign"
        with serve(redirect) as service:
            result = _sign(service.url, artifacts)
    _refused(result, 2, "service-redirect", "not followed")
    assert target.requests == []
    _nothing_written(artifacts)


def test_503_with_a_fixed_token_is_one_request_and_says_the_token_is_spent(
    signing: Signing, artifacts: list[Path]
) -> None:
    with serve(FakeService(signing.honest, _error(503, "backend-unavailable", "HSM down"))) as s:
        result = _sign(s.url, artifacts)
    _refused(result, 3, "service-unavailable", "HSM down", "is spent", "fresh token")
    assert len(s.requests) == 1
    _nothing_written(artifacts)


def test_503_with_github_tokens_retries_with_a_fresh_token(
    signing: Signing, artifacts: list[Path]
) -> None:
    with serve(FakeService(signing.honest)) as service:
        down = _error(503, "backend-unavailable", "HSM down")
        calls: list[int] = []

        def once_down(request: SignRequest, answer: Answer) -> tuple[int, bytes]:
            calls.append(1)
            return down(request, answer) if len(calls) == 1 else (200, json.dumps(answer).encode())

        service.behaviour = once_down
        with start_endpoint(TokenEndpoint(mint=lambda aud: fake_jwt(aud=aud))) as github:
            env = _env(service.url, **github.env())
            del env["SEALGATE_ID_TOKEN"]
            result = _sign(service.url, artifacts, env=env)
    assert result.returncode == 0, result.stderr
    bearers = [r["authorization"] for r in service.requests]
    assert len(bearers) == 2 and bearers[0] != bearers[1]  # never the same token twice
    assert bearers == [f"Bearer {t}" for t in github.minted]
    assert github.seen[0]["query"] == {"api-version": ["2.0"], "audience": [service.url]}


def test_nobody_listening_is_exit_3_and_safe_to_retry(artifacts: list[Path]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    url = f"http://127.0.0.1:{port}"
    result = _sign(url, artifacts)
    _refused(result, 3, "service-unavailable", "connection refused", "safe to retry")
    _nothing_written(artifacts)


@pytest.mark.parametrize(
    ("extra", "code", "words"),
    [
        (["--cert", "x.pem"], "option-conflict", "--cert cannot be used with --service"),
        (["--tsa", "https://tsa.test/"], "option-conflict", "--tsa"),
        (["--rsa-padding", "pss"], "option-conflict", "--rsa-padding"),
        (["--key", "pkcs11:token=t;object=k?pin-value=1234"], "bad-key-name", "key name"),
    ],
)
def test_local_signing_options_are_refused_with_service(
    artifacts: list[Path], extra: list[str], code: str, words: str
) -> None:
    result = sealgate("sign", "--service", "https://sign.example.test", "--key", "release",
                      *extra, *artifacts, env=_env("https://sign.example.test"))  # fmt: skip
    _refused(result, 2, code, words)
    assert "1234" not in result.stderr
    _nothing_written(artifacts)


@pytest.mark.parametrize(
    ("url", "code", "words"),
    [
        ("http://sign.example.test", "insecure-url", "in clear"),
        ("http://10.0.0.1:8443", "insecure-url", "https is required"),
        ("https://user:hunter2@sign.example.test", "bad-url", "credentials"),
        ("https://sign.example.test/?token=abc", "bad-url", "without a query"),
        ("ftp://sign.example.test", "insecure-url", "https is required"),
    ],
)
def test_service_urls_that_would_leak_the_token(
    artifacts: list[Path], url: str, code: str, words: str
) -> None:
    result = _sign(url, artifacts)
    _refused(result, 2, code, words)
    assert "hunter2" not in result.stderr


def test_a_token_for_another_audience_is_not_sent(signing: Signing, artifacts: list[Path]) -> None:
    with serve(FakeService(signing.honest)) as service:
        env = _env(service.url, SEALGATE_ID_TOKEN=fake_jwt(aud="https://other.test"))
        result = _sign(service.url, artifacts, env=env)
        _refused(result, 2, "id-token-audience", "https://other.test")
        assert service.requests == []
        ok = _sign(service.url, artifacts, "--audience", "https://other.test", env=env)
    assert ok.returncode == 0, ok.stderr  # control: the audience the user chose


def test_no_token_at_all_says_what_to_set(artifacts: list[Path]) -> None:
    env = _env("https://sign.example.test")
    del env["SEALGATE_ID_TOKEN"]
    result = _sign("https://sign.example.test", artifacts, env=env)
    _refused(result, 2, "no-id-token", "id-token: write", "id_tokens")


def test_an_attached_signature_is_not_a_detached_one(
    signing: Signing, artifacts: list[Path]
) -> None:
    """A SignedData that carries content signs what it carries, not necessarily our file."""

    def attached(answer: Answer) -> None:
        info = asn1cms.ContentInfo.load(_p7s(answer, 0))
        info["content"]["encap_content_info"]["content"] = b"other bytes"
        _set_p7s(answer, 0, info.dump(force=True))

    with serve(FakeService(signing.honest, _bent(attached))) as service:
        result = _sign(service.url, artifacts)
    _refused(result, 1, "unsupported-signature", "not a detached signature", "nothing was written")
    _nothing_written(artifacts)


def test_tsa_roots_given_but_no_timestamp_came_back(
    signing: Signing, tsa_pki: TsaPki, artifacts: list[Path]
) -> None:
    with serve(FakeService(signing.honest)) as service:
        result = _sign(service.url, artifacts, "--tsa-roots", tsa_pki.root_pem)
    _refused(result, 1, "timestamp-required", "no RFC 3161 timestamp", "nothing was written")
    _nothing_written(artifacts)


def test_a_certificate_of_our_ca_without_code_signing(
    signing: Signing, hsm: HsmFixture, artifacts: list[Path]
) -> None:
    """The service signs with a TLS certificate our own CA issued: it chains, but is not a
    code-signing certificate, so --trust-roots refuses it; without roots it would pass."""
    other = ec.generate_private_key(ec.SECP256R1())
    tls = hsm.ca.issue(
        other.public_key(), "sign.example.test", eku=[ExtendedKeyUsageOID.SERVER_AUTH]
    )

    def as_tls(request: SignRequest) -> Answer:
        items = [(a.name, a.digest_algorithm, a.digest, _foreign_cms(a.digest, tls, other))
                 for a in request.artifacts]  # fmt: skip
        return _answer(request, items)

    with serve(FakeService(as_tls)) as service:
        result = _sign(service.url, artifacts, "--trust-roots", hsm.root_pem)
        _refused(result, 1, "no-codesigning", "app.tar.gz", "codeSigning", "nothing was written")
        _nothing_written(artifacts)
        control = _sign(service.url, artifacts)
    assert control.returncode == 0, control.stderr  # what --trust-roots is for


def _tls_context(ca: LocalCA, folder: Path) -> ssl.SSLContext:
    """A server certificate for 127.0.0.1 issued by `ca`, loaded into a server context."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca.root.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca.root_key, hashes.SHA256())
    )
    cert_pem = write_pem(folder / "server.pem", cert)
    key_pem = folder / "server.key"  # a test-time TLS key for the local server, never committed
    key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_pem, key_pem)
    return context


def test_https_service_is_verified_before_the_token_is_sent(
    signing: Signing, artifacts: list[Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    ca = LocalCA(name="Service TLS Root")
    folder = tmp_path_factory.mktemp("tls")
    context = _tls_context(ca, folder)
    ca_pem = write_pem(folder / "ca.pem", ca.root)
    with serve(FakeService(signing.honest), tls=context) as service:
        refused = _sign(service.url, artifacts)  # the system CAs do not know this one
        _refused(refused, 2, "service-tls", "the token was not sent", "--service-ca")
        assert service.requests == []
        _nothing_written(artifacts)
        result = _sign(service.url, artifacts, "--service-ca", ca_pem)
    assert result.returncode == 0, result.stderr
    assert len(service.requests) == 1
