"""Where a signing request's time goes: each stage of the service's path timed alone, in one
thread, with the service's own objects (the real verifier, grants, signer and store), so the
sum can be held against the server's CPU time per request under wrk."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from sealgate.service import grants
from sealgate.service.audit.records import AuditRecord, NewRecord, format_time
from sealgate.service.configfile import load_config
from sealgate.service.protocol import (
    Receipt,
    SignedArtifact,
    SignResponse,
    parse_sign_request,
)
from sealgate.service.server import open_service
from sealgate.service.store.base import StoredSignature

Stage = tuple[str, float]


def _per_call(action: Callable[[], object], count: int) -> float:
    """Microseconds of CPU per call of `action` (CPU, not wall: the cores are shared)."""
    action()
    start = time.process_time()
    for _ in range(count):
        action()
    return (time.process_time() - start) * 1e6 / count


def measure(
    config_path: Path, db_url: str, body: bytes, mint: Callable[[], str], count: int = 300
) -> list[Stage]:
    """CPU microseconds per call of each stage of POST /v1/sign, in the app's order."""
    config = load_config(config_path)
    service = open_service(config, db_url, start=False)
    try:
        key = config.keys["release"]
        tokens = iter([mint() for _ in range(count * 3)])
        identity = service.verifier.verify(next(tokens))
        grant = grants.match_grant(key, identity)
        request = parse_sign_request(body)
        since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
        batch = service.signer.sign(key.name, request.artifacts)

        def append() -> AuditRecord:
            fresh = service.verifier.verify(next(tokens))
            return service.store.append(
                NewRecord(time=format_time(dt.datetime.now(dt.UTC)), request_id=str(uuid.uuid4()),
                          event="sign", decision="allow", reason_code="signed", reason="1 signed",
                          actor=fresh.as_actor(), key=key.name, key_version=key.version,
                          artifacts=tuple(a.as_json() for a in request.artifacts),
                          outputs=("00" * 32,), grant=grant.name),
                jti=(fresh.issuer, fresh.jti or str(uuid.uuid4())),
                expires_at=fresh.expires_at,
                signatures=[StoredSignature(i.name, i.hash_name, i.digest.hex(), i.cms_der)
                            for i in batch.items],
            )  # fmt: skip

        record = append()
        verify_cost = _per_call(lambda: service.verifier.verify(next(tokens)), count)
        append_cost = _per_call(append, count) - verify_cost

        def answer() -> bytes:
            signed = tuple(
                SignedArtifact(i.name, i.hash_name, i.digest, i.cms_der, None) for i in batch.items
            )
            response = SignResponse(str(uuid.uuid4()), key.name, key.version, signed,
                                    Receipt(0, "00" * 32, record.as_json()))  # fmt: skip
            return json.dumps(response.as_json(), separators=(",", ":")).encode()

        return [
            ("JWT verify (PyJWT, ES256, JWKS cached)", verify_cost),
            ("replay pre-check (store.jti_used)", _per_call(
                lambda: service.store.jti_used(identity.issuer, os.urandom(8).hex()), count)),
            ("body parse (protocol.parse_sign_request)", _per_call(
                lambda: parse_sign_request(body), count)),
            ("grant match (grants.match_grant)", _per_call(
                lambda: grants.match_grant(key, identity), count)),
            ("rate limit (store.count_recent)", _per_call(
                lambda: service.store.count_recent(key.name, grant.name, since), count)),
            ("HSM sign + CMS build (signer.sign)", _per_call(
                lambda: service.signer.sign(key.name, request.artifacts), count)),
            ("audit append + jti + .p7s, one commit", append_cost),
            ("answer JSON (SignResponse)", _per_call(answer, count)),
        ]  # fmt: skip
    finally:
        service.close()


def report(stages: list[Stage], measured_ms: float | None, hsm_us: float) -> None:
    print("\n== where a single-digest request's CPU goes (each stage alone, one thread)")
    total = sum(cost for _, cost in stages)
    width = max(len(name) for name, _ in stages)
    for name, cost in stages:
        print(f"  {name.ljust(width)}  {cost:8.0f} us  {cost / total:5.1%}")
    print(f"  {'(of the signer: the raw HSM signature alone)'.ljust(width)}  {hsm_us:8.0f} us")
    print(f"  {'sum of the stages'.ljust(width)}  {total:8.0f} us")
    if measured_ms is not None:
        rest = measured_ms * 1000 - total
        print(f"  {'server CPU per request under wrk, 1 client'.ljust(width)}  "
              f"{measured_ms * 1000:8.0f} us")  # fmt: skip
        print(f"  {'the rest: uvicorn, FastAPI, thread pool, HTTP'.ljust(width)}  {rest:8.0f} us")
