"""The HTTP face of the service: the one module that imports the web framework.

`POST /v1/sign` runs one fixed sequence (body cap, token, request, key, grant, rate limit,
replay, sign, record) and every outcome of it appends exactly one audit record. The body is
parsed by `protocol.parse_sign_request`, not by pydantic, so the OpenAPI description declares
the protocol's JSON schemas by hand, and every error, the framework's own included, is our JSON.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sealgate.service import grants
from sealgate.service.audit import proofs
from sealgate.service.audit.records import Decision, Event, NewRecord, format_time
from sealgate.service.auth.identity import Identity
from sealgate.service.config import GrantConfig, KeyConfig, ServiceConfig
from sealgate.service.errors import AuthError, ServiceError
from sealgate.service.limits import RateLimiter, SpentTokens
from sealgate.service.protocol import (
    API_CHECKPOINT,
    API_HEALTH,
    API_PROOF,
    API_SIGN,
    ERROR_SCHEMA,
    MAX_ARTIFACTS,
    MAX_BODY,
    SIGN_REQUEST_SCHEMA,
    SIGN_RESPONSE_SCHEMA,
    ProtocolError,
    Receipt,
    SignedArtifact,
    SignRequest,
    SignResponse,
    error_body,
    parse_sign_request,
)
from sealgate.service.signing import Signer
from sealgate.service.store.base import ReplayedTokenError, Store, StoredSignature

API_CONSISTENCY = "/v1/audit/consistency"
#: The reason code of an allowed request's audit record (not an error: not in the table).
SIGNED_REASON = "signed"
#: A bearer token is a JWT of a few KiB; anything far larger is not one.
MAX_TOKEN = 16 * 1024
#: How long a client should wait after a 503 before it tries again (seconds).
RETRY_AFTER_UNAVAILABLE = 5
#: Seconds a request body may take to arrive (a digest list is small: this is generous).
BODY_TIMEOUT = 30.0

_log = logging.getLogger("sealgate.service")

_SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
_HSTS = (b"strict-transport-security", b"max-age=31536000")


class TokenVerifierLike(Protocol):
    """What the app needs of `auth.tokens.TokenVerifier`."""

    def verify(self, token: str) -> Identity: ...


class CheckpointerLike(Protocol):
    """What the app needs of `audit.checkpointer.Checkpointer`: a cheap note per append."""

    def record_appended(self) -> None: ...


def _json(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def _answer(status: int, document: Any, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer serialised once, here (FastAPI's encoder never walks it)."""
    return Response(_json(document), status, headers, media_type="application/json")


def _error_answer(error: ServiceError, request_id: str | None) -> Response:
    headers: dict[str, str] = {}
    if error.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="sealgate"'
    elif error.status == 503:
        headers["Retry-After"] = str(RETRY_AFTER_UNAVAILABLE)
    retry_after = getattr(error, "retry_after", None)
    if isinstance(retry_after, int):
        headers["Retry-After"] = str(retry_after)
    return _answer(error.status, error_body(error, request_id), headers)


class RequestIdMiddleware:
    """A uuid4 per request (in `scope["state"]`, the answer's `X-Request-Id` and the audit
    record) and the security headers on every answer, errors included; plain ASGI, no copies."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = str(uuid.uuid4())
        scope.setdefault("state", {})["request_id"] = request_id
        extra = [*_SECURITY_HEADERS, (b"x-request-id", request_id.encode())]
        if scope.get("scheme") == "https":
            extra.append(_HSTS)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def request_id_of(request: Request) -> str:
    value = request.scope.get("state", {}).get("request_id")
    return value if isinstance(value, str) else str(uuid.uuid4())


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The body, or a 413 as soon as it is known to be over `limit`: a Content-Length over it is
    refused before a byte is read, and a streamed body stops being read past it."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ProtocolError("the request: Content-Length is not a number", status=400,
                                code="bad-request")  # fmt: skip
        if int(declared) > limit:
            raise _too_large(f"{int(declared)} bytes (Content-Length)", limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(BODY_TIMEOUT):  # a body trickled in holds a worker no longer
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _too_large(f"more than {limit} bytes", limit)
                chunks.append(chunk)
    except TimeoutError:
        raise ProtocolError(
            f"the request: the body did not arrive within {BODY_TIMEOUT:g} s ({size} bytes read)",
            status=408, code="body-timeout",
        ) from None  # fmt: skip
    return b"".join(chunks)


def _too_large(what: str, limit: int) -> ProtocolError:
    return ProtocolError(
        f"the request: {what}, more than the {limit} allowed", status=413, code="body-too-large"
    )


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header, or a 401 saying what is wrong."""
    if not authorization:
        raise AuthError("no bearer token: send 'Authorization: Bearer <OIDC ID token>'",
                        code="token-missing")  # fmt: skip
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthError("the Authorization header is not 'Bearer <token>'", code="token-missing")
    if len(token) > MAX_TOKEN:
        raise AuthError(f"the bearer token is {len(token)} characters, more than {MAX_TOKEN}",
                        code="token-malformed")  # fmt: skip
    return token


@dataclass
class _Outcome:
    """What one sign request came to, as the audit record will hold it."""

    request_id: str
    identity: Identity | None = None
    request: SignRequest | None = None
    key: KeyConfig | None = None
    grant: GrantConfig | None = None
    #: Whether the refusal consumes the token's jti (a grant or limit refusal does).
    consume: bool = False


def _event_of(error: ServiceError) -> tuple[Event, Decision]:
    return ("error", "error") if error.status >= 500 else ("deny", "deny")


class SignService:
    """The sign endpoint's work, run in the thread pool: it calls the HSM and the database."""

    def __init__(
        self,
        config: ServiceConfig,
        store: Store,
        signer: Signer,
        verifier: TokenVerifierLike,
        checkpointer: CheckpointerLike | None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.config = config
        self.store = store
        self.signer = signer
        self.verifier = verifier
        self.checkpointer = checkpointer
        self.clock = clock
        self.limiter = RateLimiter(store, clock=clock)
        self.spent = SpentTokens()
        #: The most artifacts any grant of a key allows: more is refused before the grant match.
        self._key_max = {
            name: min(MAX_ARTIFACTS, max((g.max_artifacts for g in key.grants), default=0))
            for name, key in config.keys.items()
        }

    # -- the sequence ----------------------------------------------------------------------

    def handle(self, outcome: _Outcome, authorization: str | None, body: bytes) -> Response:
        try:
            return self._sign(outcome, authorization, body)
        except ServiceError as error:
            return self._refuse(outcome, error)
        except Exception:  # a bug: still one record, and our JSON, never a traceback
            _log.exception("request %s failed", outcome.request_id)
            outcome.consume = False
            return self._refuse(outcome, _internal_error())

    def _sign(self, outcome: _Outcome, authorization: str | None, body: bytes) -> Response:
        identity = self.verifier.verify(bearer_token(authorization))
        outcome.identity = identity
        if identity.jti and self.spent.seen(identity.issuer, identity.jti):
            raise ReplayedTokenError(
                f"token {identity.jti[:64]!r} of {identity.issuer} was already used: "
                "each request needs a fresh token"
            )
        request = parse_sign_request(body)
        outcome.request = request
        key = self.config.keys.get(request.key)
        if key is None:
            raise ServiceError(f"no key named {request.key[:128]!r} on this service",
                               status=404, code="unknown-key", field="key")  # fmt: skip
        outcome.key = key
        count = len(request.artifacts)
        if count > self._key_max[key.name]:
            raise _too_many(count, self._key_max[key.name], f"key {key.name!r}")
        outcome.consume = True  # from here on a refusal is a decision about this token
        grant = grants.match_grant(key, identity)
        outcome.grant = grant
        if count > grant.max_artifacts:
            outcome.consume = False  # the job may retry with fewer artifacts
            raise _too_many(count, grant.max_artifacts, f"grant {grant.name!r}")
        self.limiter.reserve(key, grant)
        outcome.consume = False  # an HSM or TSA failure must leave the token usable
        try:
            response = self._signed(outcome, identity, key, grant, request)
        except BaseException:
            self.limiter.release(key, grant)
            raise
        self.limiter.signed(key, grant)
        return response

    def _signed(
        self,
        outcome: _Outcome,
        identity: Identity,
        key: KeyConfig,
        grant: GrantConfig,
        request: SignRequest,
    ) -> Response:
        batch = self.signer.sign(key.name, request.artifacts)
        signed = tuple(
            SignedArtifact(
                name=item.name,
                digest_algorithm=item.hash_name,
                digest=item.digest,
                p7s=item.cms_der,
                timestamp=None if item.timestamp is None else item.timestamp.as_json(),
            )
            for item in batch.items
        )
        record = self.store.append(
            self._record(outcome, "sign", "allow", SIGNED_REASON,
                         f"{len(signed)} artifact(s) signed",
                         outputs=tuple(hashlib.sha256(s.p7s).hexdigest() for s in signed)),
            jti=self._jti(identity),
            expires_at=identity.expires_at,
            signatures=[StoredSignature(s.name, s.digest_algorithm, s.digest.hex(), s.p7s)
                        for s in signed],
        )  # fmt: skip
        self.spent.add(identity.issuer, identity.jti, identity.expires_at)
        self._appended()
        response = SignResponse(
            request_id=outcome.request_id,
            key=key.name,
            key_version=key.version,
            signatures=signed,
            receipt=Receipt(record.index, record.hash.hex(), record.as_json()),
        )
        return _answer(200, response.as_json())

    # -- the record of a refusal -----------------------------------------------------------

    def _refuse(self, outcome: _Outcome, error: ServiceError) -> Response:
        event, decision = _event_of(error)
        identity = outcome.identity
        jti = self._jti(identity) if outcome.consume and identity is not None else None
        expires = identity.expires_at if jti is not None and identity is not None else None
        new = self._record(outcome, event, decision, error.code, error.message)
        try:
            try:
                self.store.append(new, jti=jti, expires_at=expires)
            except ReplayedTokenError as replayed:
                # the token was used meanwhile (a race with another request): say that instead
                error = replayed
                new = self._record(outcome, "deny", "deny", replayed.code, replayed.message)
                self.store.append(new)
        except ServiceError as store_error:  # the store is down: nothing can be recorded
            _log.warning("audit record of request %s not written: %s", outcome.request_id,
                         store_error.message)  # fmt: skip
            return _error_answer(store_error, outcome.request_id)
        if identity is not None and identity.jti and (jti or error.code == ReplayedTokenError.code):
            self.spent.add(identity.issuer, identity.jti, identity.expires_at)
        self._appended()
        return _error_answer(error, outcome.request_id)

    def _record(
        self,
        outcome: _Outcome,
        event: Event,
        decision: Decision,
        code: str,
        reason: str,
        outputs: tuple[str, ...] = (),
    ) -> NewRecord:
        request, key = outcome.request, outcome.key
        return NewRecord(
            time=format_time(self.clock()),
            request_id=outcome.request_id,
            event=event,
            decision=decision,
            reason_code=code,
            reason=reason,
            actor={} if outcome.identity is None else outcome.identity.as_actor(),
            key=key.name if key is not None else (request.key if request is not None else None),
            key_version=key.version if key is not None else None,
            artifacts=() if request is None else tuple(a.as_json() for a in request.artifacts),
            outputs=outputs,
            grant=None if outcome.grant is None else outcome.grant.name,
        )

    @staticmethod
    def _jti(identity: Identity) -> tuple[str, str] | None:
        return (identity.issuer, identity.jti) if identity.jti else None

    def _appended(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.record_appended()


def _internal_error() -> ServiceError:
    return ServiceError("the service failed on this request; its log has the request id",
                        status=500, code="internal-error")  # fmt: skip


def _too_many(count: int, limit: int, whose: str) -> ProtocolError:
    return ProtocolError(f"the request: {count} artifacts, {whose} allows at most {limit}",
                         status=413, code="too-many-artifacts", field="artifacts")  # fmt: skip


# -- the OpenAPI description ---------------------------------------------------------------


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR_SCHEMA}}}


_COMMON_ERRORS = {
    "404": _error_response("no such route or record"),
    "405": _error_response("method not allowed"),
    "422": _error_response("a malformed parameter"),
}
_SIGN_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "signed: one .p7s per artifact and the audit receipt",
        "content": {"application/json": {"schema": SIGN_RESPONSE_SCHEMA}},
    },
    400: _error_response("a malformed HTTP request (Content-Length)"),
    401: _error_response("the bearer token is missing, invalid or replayed"),
    403: _error_response("no grant of the key matches the token's claims"),
    404: _error_response("no key of that name"),
    408: _error_response("the body did not arrive in time"),
    413: _error_response("the body or the number of artifacts is over the limit"),
    422: _error_response("the body is not a signing request"),
    429: _error_response("the grant's requests per hour are spent (see Retry-After)"),
    503: _error_response("the HSM, KMS, TSA, JWKS or database is unavailable; retry later"),
}
_SIGN_EXTRA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": SIGN_REQUEST_SCHEMA}},
    },
    "security": [{"bearer": []}],
}
_OBJECT_RESPONSE = {"content": {"application/json": {"schema": {"type": "object"}}}}


def _responses(ok: str, *errors: int) -> dict[int | str, dict[str, Any]]:
    answers: dict[int | str, dict[str, Any]] = {200: {"description": ok, **_OBJECT_RESPONSE}}
    for status in errors:
        answers[status] = _error_response(
            {404: "not found", 422: "a malformed parameter", 503: "the database is unavailable"}[
                status
            ]
        )
    return answers


def _openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    original = app.openapi

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original()
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            }
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    for status, answer in _COMMON_ERRORS.items():
                        operation.setdefault("responses", {}).setdefault(status, answer)
            app.openapi_schema = schema
        return app.openapi_schema

    return build


# -- the app -------------------------------------------------------------------------------


def create_app(
    config: ServiceConfig,
    store: Store,
    signer: Signer,
    verifier: TokenVerifierLike,
    checkpointer: CheckpointerLike | None,
) -> FastAPI:
    """The service's ASGI app over already opened parts (keys, store, verifier, checkpointer)."""
    service = SignService(config, store, signer, verifier, checkpointer)
    app = FastAPI(
        title="Sealgate signing service",
        version="1",
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    app.state.sign_service = service

    @app.post(
        API_SIGN,
        summary="sign digests with a key the token's grant allows",
        responses=_SIGN_RESPONSES,
        openapi_extra=_SIGN_EXTRA,
        response_class=Response,
    )
    async def sign(request: Request) -> Response:
        outcome = _Outcome(request_id_of(request))
        try:
            body = await read_body(request)
        except ServiceError as error:
            return await run_in_threadpool(service._refuse, outcome, error)
        return await run_in_threadpool(
            service.handle, outcome, request.headers.get("authorization"), body
        )

    @app.get(API_CHECKPOINT, summary="the latest signed checkpoint of the audit log",
             responses=_responses("the checkpoint", 404, 503), response_class=Response)  # fmt: skip
    def checkpoint(request: Request) -> Response:
        return _guarded(request, lambda: proofs.latest_checkpoint(store))

    @app.get(API_PROOF, summary="an inclusion proof for one audit record",
             responses=_responses("the proof", 404, 422, 503), response_class=Response)  # fmt: skip
    def proof(request: Request, index: int, tree_size: int | None = None) -> Response:
        return _guarded(request, lambda: proofs.inclusion(store, index, tree_size))

    @app.get(API_CONSISTENCY, summary="a consistency proof between two tree sizes",
             responses=_responses("the proof", 404, 422, 503), response_class=Response)  # fmt: skip
    def consistency(request: Request, old: int, new: int) -> Response:
        return _guarded(request, lambda: proofs.consistency(store, old, new))

    @app.get(API_HEALTH, summary="the service answers and its database is reachable",
             responses=_responses("healthy", 503), response_class=Response)  # fmt: skip
    def health(request: Request) -> Response:
        # unauthenticated: says the database answers, not which keys the service holds
        return _guarded(request, lambda: {"status": "ok", "records": store.size()})

    _install_error_handlers(app)
    app.add_middleware(RequestIdMiddleware)
    app.openapi = _openapi(app)  # type: ignore[method-assign]
    return app


def _guarded(request: Request, produce: Callable[[], Any]) -> Response:
    try:
        return _answer(200, produce())
    except ServiceError as error:
        return _error_answer(error, request_id_of(request))


_HTTP_CODES = {404: "not-found", 405: "method-not-allowed"}


def _install_error_handlers(app: FastAPI) -> None:
    """Our error body for the framework's own refusals, and never a traceback or HTML."""

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, StarletteHTTPException) else 400
        code = _HTTP_CODES.get(status, "bad-request")
        message = {404: f"no route {request.url.path[:200]!r}",
                   405: f"{request.method} is not allowed on {request.url.path[:200]!r}"}.get(
            status, "the HTTP request is malformed")  # fmt: skip
        answer = _error_answer(ServiceError(message, status=status, code=code),
                               request_id_of(request))  # fmt: skip
        if status == 405 and isinstance(exc, StarletteHTTPException) and exc.headers:
            answer.headers.update(exc.headers)
        return answer

    async def validation_error(request: Request, exc: Exception) -> Response:
        errors: Sequence[Any] = exc.errors() if isinstance(exc, RequestValidationError) else ()
        first = errors[0] if errors else {}
        location = [str(p) for p in first.get("loc", ()) if p not in ("query", "path")]
        where = ".".join(location) or "a parameter"
        message = f"{where}: {first.get('msg', 'invalid')}"
        error = ServiceError(message[:300], status=422, code="bad-parameter",
                             field=location[0] if location else None)  # fmt: skip
        return _error_answer(error, request_id_of(request))

    async def internal_error(request: Request, exc: Exception) -> Response:
        _log.error("request %s failed: %s", request_id_of(request), type(exc).__name__,
                   exc_info=exc)  # fmt: skip
        return _error_answer(_internal_error(), request_id_of(request))

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, internal_error)


__all__ = ["API_CONSISTENCY", "SIGNED_REASON", "create_app"]
