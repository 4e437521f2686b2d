"""RFC 3161 timestamps over signature values (CAdES-T), requested and verified before use.

A token is used only when every check passed: status granted, our nonce, our message
imprint, the TSA's signature and ESS certificate binding, a TSA certificate that chains to
the configured TSA roots with the critical timeStamping usage, and a sane genTime. TSAs
are tried in order, each with bounded retries (exponential backoff with jitter); when none
gives a valid token the caller fails closed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import secrets
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar

from asn1crypto import cms, core, tsp
from cryptography import x509

from signer.certificates import TIME_STAMPING, describe
from signer.chain import validate_path
from signer.cmsverify import (
    TIMESTAMP_ATTRIBUTE,
    asn1_utc,
    check_signing_certificate,
    content_digest,
    parse_signed_data,
    signer_certificate,
    verify_signer_info,
)
from signer.errors import BackendUnavailableError, VerificationError
from signer.http import (
    HttpClient,
    HttpFailedError,
    HttpUnavailableError,
    RetryPolicy,
    split_credentials,
)
from signer.redact import redact_url

#: How far a TSA's genTime may stray from our clock around the request.
CLOCK_SKEW = dt.timedelta(minutes=5)
#: A timestamp reply is a few kilobytes; anything much larger is not one.
MAX_RESPONSE_BYTES = 1 << 20


@dataclass(frozen=True)
class TsaSettings:
    """Where to ask for timestamps, whom to trust for them, and how patiently."""

    urls: tuple[str, ...]
    roots: tuple[x509.Certificate, ...]
    #: Untrusted TSA certificates and intermediates, for tokens that do not carry them.
    certs: tuple[x509.Certificate, ...] = ()
    timeout: float = 10.0
    retries: int = 2
    backoff: float = 0.5
    concurrency: int = 8
    #: Seconds one TSA may take for one token, every retry included: it can never stall longer.
    budget: float = 30.0


@dataclass(frozen=True)
class TimestampToken:
    """A verified token: the DER ContentInfo and what it proves."""

    der: bytes
    gen_time: dt.datetime
    tsa_subject: str
    hash_name: str
    serial: int
    url: str | None = None
    #: The TSA policy OID (TSTInfo.policy), dotted.
    policy: str = ""

    def as_json(self) -> dict[str, object]:
        """The one JSON shape of a timestamp, shared by sign, timestamp, verify and run."""
        return {
            "gen_time": self.gen_time.astimezone(dt.UTC).isoformat(),
            "tsa": self.tsa_subject,
            "serial": format(self.serial, "x"),
            "policy": self.policy,
            "digest_algorithm": self.hash_name,
            "tsa_url": None if self.url is None else redact_url(self.url),
        }


class TimeStampResp(core.Sequence):  # type: ignore[misc]
    """RFC 3161 TimeStampResp with its token OPTIONAL, as the RFC has it: asn1crypto's makes
    the token mandatory and so cannot read a rejection."""

    _fields: ClassVar[list[tuple[Any, ...]]] = [
        ("status", tsp.PKIStatusInfo),
        ("time_stamp_token", cms.ContentInfo, {"optional": True}),
    ]


class _TsaError(Exception):
    """One TSA failed for one request, with the reason code of that failure."""

    def __init__(self, reason: str, *, code: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


def build_request(digest: bytes, hash_name: str, nonce: int) -> bytes:
    return bytes(
        tsp.TimeStampReq(
            {
                "version": "v1",
                "message_imprint": {
                    "hash_algorithm": {"algorithm": hash_name},
                    "hashed_message": digest,
                },
                "nonce": nonce,
                "cert_req": True,
            }
        ).dump()
    )


def verify_token(
    token_der: bytes,
    *,
    signed_value: bytes,
    roots: Sequence[x509.Certificate],
    where: str,
    nonce: int | None = None,
    window: tuple[dt.datetime, dt.datetime] | None = None,
    certs: Sequence[x509.Certificate] = (),
) -> TimestampToken:
    """Verify a TimeStampToken over `signed_value` (a signature value); raise with the reason.

    `certs` are untrusted candidates for the TSA certificate and its intermediates."""
    message = parse_signed_data(token_der, where)
    encap = message.signed_data["encap_content_info"]
    if encap["content_type"].native != "tst_info" or message.econtent is None:
        raise VerificationError(
            f"{where}: the token does not hold a TSTInfo", code="timestamp-malformed"
        )
    try:
        tst_der = message.econtent
        tst = tsp.TSTInfo.load(tst_der, strict=True)
        imprint = tst["message_imprint"]
        imprint_hash = imprint["hash_algorithm"]["algorithm"].native
        imprinted = imprint["hashed_message"].native
        gen_time = asn1_utc(tst["gen_time"], "genTime", where)
        token_nonce = tst["nonce"].native
        serial = int(tst["serial_number"].native)
        policy = str(tst["policy"].dotted)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise VerificationError(
            f"{where}: malformed TSTInfo ({exc})", code="timestamp-malformed"
        ) from None
    if imprint_hash not in ("sha256", "sha384", "sha512"):
        raise VerificationError(
            f"{where}: the token's imprint uses unaccepted hash {imprint_hash}",
            code="timestamp-weak-hash",
        )
    if imprinted != hashlib.new(imprint_hash, signed_value).digest():
        raise VerificationError(
            f"{where}: the token's message imprint is not over this signature",
            code="timestamp-imprint-mismatch",
        )
    if nonce is not None and token_nonce != nonce:
        raise VerificationError(
            f"{where}: the token's nonce does not match the request's", code="nonce-mismatch"
        )
    cert = signer_certificate(message, where, certs)
    attrs = verify_signer_info(
        message,
        cert,
        content_digest=content_digest(message.signer_info["digest_algorithm"], tst_der),
        content_type="tst_info",
        where=where,
    )
    check_signing_certificate(attrs, cert, where, required=True)
    if window is not None:
        earliest, latest = window
        if not earliest - CLOCK_SKEW <= gen_time <= latest + CLOCK_SKEW:
            raise VerificationError(
                f"{where}: genTime {gen_time.isoformat()} is outside the request window "
                f"{earliest.isoformat()} .. {latest.isoformat()}",
                code="timestamp-outside-window",
            )
    try:
        validate_path(
            cert,
            [*message.certificates, *certs],
            roots,
            at=gen_time,
            purpose=TIME_STAMPING,
            roots_name="the TSA roots",
            roots_field="tsa_roots",
        )
    except VerificationError as exc:
        raise VerificationError(
            f"{where}: TSA {exc.message}", code="tsa-untrusted", field=exc.field or "tsa_roots"
        ) from None
    return TimestampToken(
        der=token_der,
        gen_time=gen_time,
        tsa_subject=describe(cert),
        hash_name=imprint_hash,
        serial=serial,
        policy=policy,
    )


def verify_response(
    response_der: bytes,
    *,
    signed_value: bytes,
    nonce: int,
    roots: Sequence[x509.Certificate],
    window: tuple[dt.datetime, dt.datetime],
    where: str,
    certs: Sequence[x509.Certificate] = (),
) -> TimestampToken:
    """Check a TimeStampResp's status, then verify its token as `verify_token` does."""
    try:
        response = TimeStampResp.load(response_der, strict=True)
        status = response["status"]
        granted = status["status"].native
        token = response["time_stamp_token"]
        token_der = None if isinstance(token, core.Void) else bytes(token.dump())
    except (ValueError, TypeError, KeyError) as exc:
        raise VerificationError(
            f"{where}: not a timestamp response ({str(exc)[:80]})", code="timestamp-malformed"
        ) from None
    if granted not in ("granted", "granted_with_mods"):
        # the TSA's own words, on one line: a newline in them must not forge an output line
        detail = " ".join("; ".join(status["status_string"].native or []).split())[:200]
        fail_info = status["fail_info"].native
        reasons = ", ".join(sorted(fail_info)) if fail_info else ""
        raise VerificationError(
            f"{where}: TSA answered status {granted}"
            + (f" ({reasons})" if reasons else "")
            + (f": {detail}" if detail else ""),
            code="tsa-rejected",
        )
    if token_der is None:
        raise VerificationError(
            f"{where}: TSA granted the request but sent no token", code="timestamp-malformed"
        )
    return verify_token(
        token_der,
        signed_value=signed_value,
        roots=roots,
        where=where,
        nonce=nonce,
        window=window,
        certs=certs,
    )


class TimestampClient:
    """Asks TSAs for tokens over one pooled HTTP session; batches run concurrently (bounded)."""

    def __init__(self, settings: TsaSettings) -> None:
        if not settings.urls:
            raise ValueError("no TSA URL")
        self.settings = settings
        self._http = HttpClient(
            RetryPolicy(
                attempts=settings.retries + 1,
                backoff=settings.backoff,
                timeout=settings.timeout,
                budget=settings.budget,
            ),
            concurrency=settings.concurrency,
            hosts=len(settings.urls),
        )
        self._failed: dict[str, _TsaError] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> TimestampClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def stamp(self, signed_value: bytes, hash_name: str) -> TimestampToken:
        """A verified token over `signed_value` from the first TSA that gives one."""
        problems: list[tuple[str, _TsaError]] = []
        for url in self.settings.urls:
            shown = redact_url(url)
            with self._lock:
                earlier = self._failed.get(url)
            if earlier is not None:  # it already failed in this batch: do not wait on it again
                problems.append((shown, earlier))
                continue
            try:
                return self._stamp_at(url, signed_value, hash_name)
            except _TsaError as problem:
                with self._lock:
                    self._failed.setdefault(url, problem)
                problems.append((shown, problem))
        codes = {problem.code for _, problem in problems}
        code = "tsa-failed"  # the TSAs failed in different ways; each line says how
        if len(codes) == 1:
            code = codes.pop()
        raise BackendUnavailableError(
            "no TSA issued a valid timestamp; nothing was written:\n"
            + "\n".join(f"  {shown}: {problem.reason}" for shown, problem in problems),
            code=code,
            field="tsa_urls",
        )

    def stamp_many(self, items: Sequence[tuple[bytes, str]]) -> list[TimestampToken]:
        """Tokens for (signature value, hash name) pairs, `concurrency` requests at a time."""
        if len(items) <= 1:
            return [self.stamp(value, hash_name) for value, hash_name in items]
        workers = min(self.settings.concurrency, len(items))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(lambda item: self.stamp(*item), items))

    def _stamp_at(self, url: str, signed_value: bytes, hash_name: str) -> TimestampToken:
        """One TSA: transport failures are retried by the HTTP layer; a wrong answer is not
        (a TSA that lies once is not asked again)."""
        digest = hashlib.new(hash_name, signed_value).digest()
        nonce = secrets.randbits(64)
        target, auth = split_credentials(url)
        started = dt.datetime.now(dt.UTC)
        try:
            answer = self._http.request(
                "POST",
                target,
                data=build_request(digest, hash_name, nonce),
                auth=auth,
                headers={"Content-Type": "application/timestamp-query"},
                max_bytes=MAX_RESPONSE_BYTES,
            )
        except HttpUnavailableError as exc:
            raise _TsaError(exc.reason, code="tsa-unreachable") from None
        except HttpFailedError as exc:
            reason = (
                "answer too large to be a timestamp response"
                if exc.kind == "too-large"
                else exc.reason.replace(target, redact_url(url))
            )
            raise _TsaError(reason, code="tsa-bad-response") from None
        if answer.status != 200:
            raise _TsaError(f"HTTP {answer.status}", code="tsa-bad-response")
        try:
            token = verify_response(
                answer.body,
                signed_value=signed_value,
                nonce=nonce,
                roots=self.settings.roots,
                window=(started, dt.datetime.now(dt.UTC)),
                where="response",
                certs=self.settings.certs,
            )
        except VerificationError as exc:
            raise _TsaError(exc.message.removeprefix("response: "), code=exc.code) from None
        return dataclasses.replace(token, url=redact_url(url))


def token_attribute(token: TimestampToken) -> bytes:
    """The unsigned attribute id-aa-signatureTimeStampToken carrying `token` (DER)."""
    return bytes(
        cms.CMSAttribute(
            {"type": TIMESTAMP_ATTRIBUTE, "values": [cms.ContentInfo.load(token.der)]}
        ).dump()
    )
