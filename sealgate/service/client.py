"""`sealgate sign --service`: hash locally, send digests and the job's OIDC token, and write
the returned `.p7s` files only when each one verifies against our own digest.

The service is trusted to hold the key, not to answer honestly: every signature it returns is
parsed, matched to our name, algorithm and digest, and verified with the certificate inside
(and the trust roots, when given) before anything is written, all-or-nothing. Stdlib, the
signer and the wire format only: the Action's pinned requirements carry no web stack.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509

from sealgate.errors import SealgateError
from sealgate.service.errors import ServiceError
from sealgate.service.idtoken import TokenSource, check_transport
from sealgate.service.protocol import (
    API_SIGN,
    DIGEST_SIZES,
    ArtifactDigest,
    Receipt,
    SignRequest,
    SignResponse,
    parse_sign_response,
)
from signer.atomic import ensure_directory, write_all
from signer.certificates import CODE_SIGNING, describe, fingerprint
from signer.chain import check_validity, validate_path
from signer.cmsverify import (
    check_signing_certificate,
    parse_signed_data,
    scheme_of,
    signer_certificate,
    verify_signer_info,
)
from signer.errors import SignerError, VerificationError
from signer.http import HttpClient, HttpFailedError, HttpResponse, HttpUnavailableError, RetryPolicy
from signer.redact import redact_text, redact_url
from signer.sign import SignedArtifact, hash_all, plan_outputs
from signer.timestamp import TimestampToken, verify_token

RECEIPT_SUFFIX = ".receipt.json"
#: One request, one attempt per token: the service spends the token's jti on it.
_POST_POLICY = RetryPolicy(attempts=1, timeout=60.0, budget=120.0)
#: Attempts when the connection is refused (nothing was sent), or a 503 with a fresh token.
ATTEMPTS = 3
#: A `.p7s` with a chain and a token is a few KB; base64 and JSON add a third.
_ANSWER_BASE = 256 * 1024
_ANSWER_PER_ARTIFACT = 128 * 1024
#: A service's message is shown on one line, at most this long, escaped.
_MESSAGE_LIMIT = 500

#: HTTP status -> (exit code, default reason code) of a refusal the service explains.
STATUS_EXIT = {401: 2, 403: 1, 404: 2, 409: 2, 413: 2, 422: 2, 429: 2}


class ServiceAnswerError(SealgateError):
    """The service's answer cannot be used: not a signing answer, or for something else."""

    code = "bad-answer"
    exit_code = 3


class ServiceSignatureError(SealgateError):
    """A returned signature does not prove what we asked for: the gate would refuse it too."""

    code = "service-signature-invalid"
    exit_code = 1


@dataclass(frozen=True)
class RemoteSigning:
    """What `sign_remote` did: the signed artifacts (the shape local `sign` reports), and the
    audit receipt of the one request."""

    service: str
    key: str
    key_version: int
    request_id: str
    signed: list[SignedArtifact]
    receipt: Receipt
    receipts: list[Path] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return {
            "signed": [
                {**s.as_json(), "receipt": str(r)}
                for s, r in zip(self.signed, self.receipts, strict=True)
            ],
            "service": self.service,
            "key": self.key,
            "key_version": self.key_version,
            "request_id": self.request_id,
            "receipt": self.receipt.as_json(),
        }


@dataclass(frozen=True)
class Trust:
    """What a returned signature is checked against beyond our digest (optional)."""

    roots: Sequence[x509.Certificate] = ()
    tsa_roots: Sequence[x509.Certificate] = ()
    tsa_certs: Sequence[x509.Certificate] = ()


def service_base(url: str) -> str:
    """The service URL, checked: https (or loopback http), no credentials, query or fragment."""
    check_transport(url, "--service", field="service")
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise SealgateError(
            f"--service {redact_url(url)!r}: a URL with credentials; the job's OIDC token is "
            "the only credential the service takes",
            code="bad-url",
            field="service",
        )
    if parts.query or parts.fragment:
        raise SealgateError(
            f"--service {redact_url(url)!r}: give the service's base URL, without a query or "
            "fragment",
            code="bad-url",
            field="service",
        )
    return url.rstrip("/")


def check_key_name(name: str) -> str:
    """A service key name, never a key URI: a URI may carry a PIN, and the service names keys."""
    if not name or not name.strip():
        raise SealgateError("--key is required: the service's key name", code="missing-option",
                            field="key")  # fmt: skip
    if ":" in name or "/" in name or len(name) > 128 or not name.isprintable():
        raise SealgateError(
            "--key: with --service, give the service's key name (a key URI or path is not one; "
            "the service holds the key)",
            code="bad-key-name",
            field="key",
        )
    return name


def shown(text: str, secrets: Sequence[str]) -> str:
    """A service's text as it may reach our log: secrets masked, one line, nothing hidden."""
    text = redact_text(str(text)[: _MESSAGE_LIMIT * 2], secrets)
    escaped = "".join(
        c if unicodedata.category(c)[0] != "C" and c not in "\u2028\u2029" else f"\\x{ord(c):02x}"
        for c in text
    )
    return escaped if len(escaped) <= _MESSAGE_LIMIT else escaped[:_MESSAGE_LIMIT] + "…"


def sign_remote(
    service_url: str,
    key_name: str,
    artifacts: Sequence[Path],
    *,
    token_source: TokenSource,
    out_dir: Path | None = None,
    digest_algorithm: str = "sha256",
    trust: Trust | None = None,
    service_ca: Path | None = None,
) -> RemoteSigning:
    """Sign `artifacts` with the service's key `key_name`; the `.p7s` files and their receipts
    appear only when every returned signature verified against its artifact's digest."""
    base = service_base(service_url)
    key_name = check_key_name(key_name)
    if digest_algorithm not in DIGEST_SIZES:
        raise SealgateError(
            f"--digest {digest_algorithm!r}: use one of {', '.join(DIGEST_SIZES)}",
            code="unknown-digest-algorithm",
            field="digest",
        )
    outputs = plan_outputs(artifacts, out_dir)
    digests = hash_all(artifacts, digest_algorithm, None)
    request = SignRequest(
        key_name,
        tuple(ArtifactDigest(str(d.path), d.hash_name, d.digest) for d in digests),
    )
    response = _post(base, request, token_source, service_ca)
    checked = check_response(response, request, trust or Trust(), where=redact_url(base))
    receipts = [out.with_name(out.name + RECEIPT_SUFFIX) for out in outputs]
    if out_dir is not None:
        ensure_directory(out_dir, field="out_dir")
    files: list[tuple[Path, bytes]] = []
    for target, receipt_path, item, der in zip(
        outputs, receipts, request.artifacts, checked.p7s, strict=True
    ):
        files.append((target, der))
        files.append((receipt_path, receipt_document(redact_url(base), response, item, target)))
    write_all(files)
    signed = [
        SignedArtifact(
            artifact=d.path,
            signature=out,
            size=d.size,
            hash_name=d.hash_name,
            digest_hex=d.digest.hex(),
            key=f"{redact_url(base)} key {key_name!r} version {response.key_version}",
            scheme=checked.scheme,
            certificate_fingerprint=fingerprint(checked.certificate),
            certificate_subject=checked.certificate.subject.rfc4514_string(),
            timestamp=token,
        )
        for d, out, token in zip(digests, outputs, checked.tokens, strict=True)
    ]
    return RemoteSigning(
        service=redact_url(base),
        key=key_name,
        key_version=response.key_version,
        request_id=response.request_id,
        signed=signed,
        receipt=response.receipt,
        receipts=receipts,
    )


def receipt_document(
    service: str, response: SignResponse, item: ArtifactDigest, signature: Path
) -> bytes:
    """One artifact's proof of its signing event: the audit record and where it sits; what
    `sealgate audit prove` checks against a checkpoint kept elsewhere."""
    document = {
        "version": 1,
        "service": service,
        "request_id": response.request_id,
        "key": response.key,
        "key_version": response.key_version,
        "artifact": item.as_json(),
        "signature": signature.name,
        "receipt": response.receipt.as_json(),
    }
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()


def _post(
    base: str, request: SignRequest, source: TokenSource, service_ca: Path | None
) -> SignResponse:
    """POST once per token. Retried only when nothing reached the service (connection refused)
    or on a 503 when the source mints a fresh token: a fixed token is spent by one request."""
    url = base + API_SIGN
    where = redact_url(base)
    body = json.dumps(request.as_json()).encode()
    limit = _ANSWER_BASE + _ANSWER_PER_ARTIFACT * len(request.artifacts)
    token = source.token()
    secrets = (token, *source.secrets())
    verify: str | bool = str(service_ca) if service_ca else True
    with HttpClient(_POST_POLICY, verify=verify) as client:
        for attempt in range(1, ATTEMPTS + 1):
            last = attempt == ATTEMPTS
            try:
                answer = client.request(
                    "POST", url, data=body, max_bytes=limit,
                    headers={"Authorization": f"Bearer {token}",
                             "Content-Type": "application/json", "Accept": "application/json"},
                )  # fmt: skip
            except HttpFailedError as exc:
                if exc.kind == "too-large":
                    raise ServiceAnswerError(
                        f"{where}: the answer is larger than the {limit} bytes {len(request.artifacts)} "
                        "signature(s) can take; nothing was written"
                    ) from None
                if exc.kind == "tls":  # the token was not sent: no verified peer to send it to
                    raise SealgateError(
                        f"{where}: {exc.reason}; the token was not sent, nothing was written",
                        hint="give the CA of the service's certificate with --service-ca",
                        code="service-tls",
                    ) from None
                raise SealgateError(
                    f"{where}: {exc.reason}; nothing was written",
                    code="service-unavailable",
                    exit_code=3,
                ) from None
            except HttpUnavailableError as exc:
                if exc.last is not None and exc.last.status != 503:
                    answer = exc.last  # 429 and the like: the service's own refusal
                elif exc.last is None and exc.problem == "connection refused" and not last:
                    time.sleep(_POST_POLICY.pause(attempt))  # nothing was sent: same token
                    continue
                elif exc.last is not None and source.renewable and not last:
                    time.sleep(_POST_POLICY.pause(attempt))
                    token = source.token()  # a fresh token: the old one may be spent
                    secrets = (token, *secrets)
                    continue
                else:
                    raise _unavailable(where, exc, source, secrets) from None
            if answer.status == 200:
                try:
                    return parse_sign_response(answer.body, f"{where}'s answer")
                except ServiceError as exc:
                    raise ServiceAnswerError(
                        f"{shown(exc.message, secrets)}; nothing was written"
                    ) from None
            raise refusal(where, answer, secrets)
    raise AssertionError("unreachable")  # pragma: no cover


def _unavailable(
    where: str, exc: HttpUnavailableError, source: TokenSource, secrets: Sequence[str]
) -> SealgateError:
    """Exit 3, saying whether a retry is safe: a fixed token the service saw is spent."""
    detail = ""
    if exc.last is not None:
        detail = _error_of(exc.last, secrets)[1]
        detail = f": {detail}" if detail else ""
    if exc.last is None and exc.problem == "connection refused":
        again = "nothing reached it; safe to retry"
    elif source.renewable:
        again = "retried with fresh tokens"
    else:
        again = (
            f"the token from {source.describe} was sent and is spent (the service refuses a "
            "replayed jti): re-run the job for a fresh token"
        )
    return SealgateError(
        f"{where}: the signing service is unavailable ({exc.reason}){detail}; {again}; "
        "nothing was written",
        code="service-unavailable",
        exit_code=3,
    )


def _error_of(answer: HttpResponse, secrets: Sequence[str]) -> tuple[str | None, str, str | None]:
    """(code, message, field) of a `{"error": {...}}` body; (None, "", None) when it is not one."""
    try:
        document = json.loads(answer.body)
        error = document["error"]
        code, message, field = error["code"], error.get("message", ""), error.get("field")
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None, "", None
    if not isinstance(code, str) or not code or len(code) > 64 or not code.isascii():
        code = None
    elif not all(c.isalnum() or c == "-" for c in code):
        code = None
    return (
        code.lower() if code else None,
        shown(message if isinstance(message, str) else "", secrets),
        shown(field, secrets)[:60] if isinstance(field, str) else None,
    )


def refusal(where: str, answer: HttpResponse, secrets: Sequence[str]) -> SealgateError:
    """The service's refusal as one CLI line with its own reason code."""
    code, message, field = _error_of(answer, secrets)
    status = answer.status
    if 300 <= status < 400:
        return SealgateError(
            f"{where}: answered HTTP {status} (a redirect, not followed: the token would go "
            "along); give the service's own URL",
            code="service-redirect",
        )
    exit_code = STATUS_EXIT.get(status, 3 if status >= 500 else 2)
    text = message or f"HTTP {status} {shown(answer.reason, secrets)}".rstrip()
    about = f" (field {field})" if field else ""
    hint = None
    if code == "digest-algorithm-mismatch":
        hint = "give --digest with the algorithm the key signs"
    elif code in ("token-replayed",):
        hint = "a token is good for one request: re-run the job for a fresh one"
    return SealgateError(
        f"{where}: refused (HTTP {status}){about}: {text}; nothing was written",
        hint=hint,
        code=code or ("service-refused" if status < 500 else "service-unavailable"),
        exit_code=exit_code,
    )


@dataclass(frozen=True)
class Checked:
    """The returned signatures, in our request's order, once each one proved itself."""

    p7s: list[bytes]
    tokens: list[TimestampToken | None]
    certificate: x509.Certificate
    scheme: str


def check_response(
    response: SignResponse, request: SignRequest, trust: Trust, *, where: str
) -> Checked:
    """Every item answered exactly once, for our name, algorithm and digest, by one certificate;
    each `.p7s` verified against OUR digest; the receipt names what we asked."""
    if response.key != request.key:
        raise ServiceSignatureError(
            f"{where}: answered for key {shown(response.key, ())!r}, not {request.key!r}; "
            "nothing was written"
        )
    asked = {a.name: a for a in request.artifacts}
    by_name: dict[str, bytes] = {}
    for item in response.signatures:
        name = shown(item.name, ())
        if item.name not in asked:
            raise ServiceSignatureError(
                f"{where}: returned a signature for {name!r}, which was not asked for; "
                "nothing was written"
            )
        if item.name in by_name:
            raise ServiceSignatureError(
                f"{where}: returned two signatures for {name!r}; nothing was written"
            )
        ours = asked[item.name]
        if item.digest_algorithm != ours.digest_algorithm or item.digest != ours.digest:
            raise ServiceSignatureError(
                f"{where}: the signature for {name!r} names another digest than ours "
                f"({ours.digest_algorithm}:{ours.digest.hex()[:16]}…); nothing was written",
                code="digest-mismatch",
            )
        by_name[item.name] = item.p7s
    missing = [name for name in asked if name not in by_name]
    if missing:
        raise ServiceSignatureError(
            f"{where}: returned no signature for {shown(missing[0], ())!r} "
            f"({len(missing)} of {len(asked)} missing); nothing was written"
        )
    p7s: list[bytes] = []
    tokens: list[TimestampToken | None] = []
    certificate: x509.Certificate | None = None
    scheme = ""
    for ours in request.artifacts:
        der = by_name[ours.name]
        label = f"{where}: the signature for {shown(ours.name, ())!r}"
        try:
            cert, scheme, token = verify_returned(der, ours, trust, label)
        except SignerError as exc:
            message = exc.message if exc.message.startswith(label) else f"{label}: {exc.message}"
            raise ServiceSignatureError(f"{message}; nothing was written", code=exc.code) from None
        if certificate is None:
            certificate = cert
        elif cert != certificate:
            raise ServiceSignatureError(
                f"{label} is made by {describe(cert)!r}, another certificate than the rest "
                f"({describe(certificate)!r}); nothing was written",
                code="signer-mismatch",
            )
        p7s.append(der)
        tokens.append(token)
    assert certificate is not None  # noqa: S101 - a request has at least one artifact
    check_receipt(response, request, p7s, where)
    return Checked(p7s, tokens, certificate, scheme)


def verify_returned(
    der: bytes, ours: ArtifactDigest, trust: Trust, where: str
) -> tuple[x509.Certificate, str, TimestampToken | None]:
    """One `.p7s` against our digest: detached over data, our algorithm, the messageDigest ours,
    the signature by the certificate inside (bound by signingCertificateV2); the chain and the
    timestamp too when their roots are given."""
    message = parse_signed_data(der, where)
    encap = message.signed_data["encap_content_info"]
    if encap["content_type"].native != "data" or message.econtent is not None:
        raise VerificationError(
            f"{where}: not a detached signature over data", code="unsupported-signature"
        )
    if message.digest_name != ours.digest_algorithm:
        raise VerificationError(
            f"{where}: made with {message.digest_name}, not the {ours.digest_algorithm} asked for",
            code="digest-mismatch",
        )
    cert = signer_certificate(message, where)
    attrs = verify_signer_info(
        message, cert, content_digest=ours.digest, content_type="data", where=where
    )
    check_signing_certificate(attrs, cert, where, required=True)
    scheme = scheme_of(message, cert.public_key(), where).describe()
    token: TimestampToken | None = None
    if trust.tsa_roots:
        if not message.timestamp_tokens:
            raise VerificationError(
                f"{where}: carries no RFC 3161 timestamp, and TSA roots were given",
                code="timestamp-required",
            )
        token = verify_token(
            message.timestamp_tokens[0],
            signed_value=message.signature,
            roots=trust.tsa_roots,
            where=f"{where}: its timestamp",
            certs=trust.tsa_certs,
        )
    if trust.roots:
        moment = token.gen_time if token else dt.datetime.now(dt.UTC)
        check_validity(cert, moment, "signer certificate")
        validate_path(cert, message.certificates, trust.roots, at=moment, purpose=CODE_SIGNING)
    return cert, scheme, token


def check_receipt(
    response: SignResponse, request: SignRequest, p7s: Sequence[bytes], where: str
) -> None:
    """The receipt must record this signing: our key, our digests, these outputs. A receipt for
    another event would prove nothing later (`audit prove` checks its place in the log)."""
    record = response.receipt.record
    expected = [a.as_json() for a in request.artifacts]
    outputs = [hashlib.sha256(der).hexdigest() for der in p7s]
    problem = None
    if record.get("index") != response.receipt.index:
        problem = "its index is not the receipt's"
    elif record.get("key") != request.key or record.get("decision") != "allow":
        problem = "it does not record an allowed signing with this key"
    elif record.get("artifacts") != expected:
        problem = "it records other artifacts or digests than ours"
    elif record.get("outputs") != outputs:
        problem = "it records other signatures than the ones returned"
    if problem:
        raise ServiceAnswerError(
            f"{where}: the audit receipt (record {response.receipt.index}) does not match the "
            f"request: {problem}; nothing was written",
            code="receipt-mismatch",
        )
