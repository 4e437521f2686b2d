"""POST /v1/sign end to end in process: a real SoftHSM key, the local TSA and OIDC issuer, a
SQLite store. Every outcome appends exactly one audit record; a refusal signs nothing, and the
returned .p7s files pass `openssl cms -verify` and `sealgate verify` like `sealgate sign`'s."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from sealgate.service.audit import merkle
from sealgate.service.config import AuditConfig
from sealgate.service.limits import RateLimitedError, RateLimiter, SpentTokens
from sealgate.service.protocol import API_CHECKPOINT, API_HEALTH, API_SIGN, MAX_BODY
from tests.components.cli import openssl_cms_verify, sealgate
from tests.components.hsm import HsmFixture
from tests.components.oidc import OidcIssuer, github_claims
from tests.components.service import (
    KEY,
    InProcessService,
    github_grant,
    hsm_key,
    in_process_service,
    service_config,
    sign_body,
)
from tests.components.tsa import LocalTsa, TsaPki


def _artifacts(directory: Path, count: int = 2) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for number in range(count):
        path = directory / f"app-{number}.tar.gz"
        path.write_bytes(os.urandom(4096) + bytes([number]))
        paths.append(path)
    return paths


def _error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error", "request_id"}, body
    assert body["request_id"] == response.headers["x-request-id"]
    error: dict[str, Any] = body["error"]
    return error


class Ledger:
    """The audit log and the signatures table before a request, to judge what it added."""

    def __init__(self, service: InProcessService) -> None:
        self.service = service
        self.records = len(service.records())
        self.signatures = service.signature_count()

    def one_new_record(self, response: httpx.Response) -> dict[str, Any]:
        records = self.service.records()
        assert len(records) == self.records + 1, [r.body for r in records[self.records :]]
        record = records[-1].body
        assert record["request_id"] == response.headers["x-request-id"]
        return record

    def nothing_signed(self) -> None:
        assert self.service.signature_count() == self.signatures


def _refused(
    service: InProcessService, response: httpx.Response, status: int, code: str, ledger: Ledger
) -> dict[str, Any]:
    """The refusal's status and code, its one audit record (same code, nothing signed)."""
    assert response.status_code == status, response.text
    error = _error(response)
    assert error["code"] == code, error
    record = ledger.one_new_record(response)
    assert record["reason_code"] == code
    assert record["decision"] == ("error" if status >= 500 else "deny")
    assert record["event"] == ("error" if status >= 500 else "deny")
    assert record["outputs"] == []
    assert error["message"] and record["reason"] == error["message"]
    ledger.nothing_signed()
    return error


# -- the signing path --------------------------------------------------------------------------


def test_a_matching_grant_signs_and_each_p7s_verifies_with_openssl_and_sealgate_verify(
    service: InProcessService, hsm: HsmFixture, tsa_pki: TsaPki, tmp_path: Path
) -> None:
    artifacts = _artifacts(tmp_path / "dist")
    ledger = Ledger(service)
    token = service.token()
    response = service.post(sign_body(artifacts), token=token)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["request_id"] == response.headers["x-request-id"]
    assert answer["key"] == KEY and answer["key_version"] == 1
    assert [s["name"] for s in answer["signatures"]] == [p.name for p in artifacts]

    record = ledger.one_new_record(response)
    assert record["event"] == "sign" and record["decision"] == "allow"
    assert record["reason_code"] == "signed" and record["grant"] == "release-main"
    assert record["actor"]["claims"]["repository_id"] == github_claims()["repository_id"]
    assert "sub" not in record["actor"]["claims"]
    assert token not in json.dumps(record)  # the token itself is never kept
    assert answer["receipt"]["index"] == record["index"]
    assert answer["receipt"]["record"]["hash"] == answer["receipt"]["hash"]
    assert service.signature_count() == ledger.signatures + 2

    outputs = []
    for artifact, signed in zip(artifacts, answer["signatures"], strict=True):
        assert signed["digest"] == hashlib.sha256(artifact.read_bytes()).hexdigest()
        assert signed["timestamp"] is not None  # CAdES-T: the key has a TSA
        p7s = base64.b64decode(signed["p7s"])
        outputs.append(hashlib.sha256(p7s).hexdigest())
        signature = artifact.with_name(artifact.name + ".p7s")
        signature.write_bytes(p7s)
        checked = openssl_cms_verify(signature, artifact, hsm.root_pem)
        assert checked.returncode == 0, checked.stderr
    assert record["outputs"] == outputs

    verified = sealgate(
        "verify", "--trust-roots", hsm.root_pem, "--tsa-roots", tsa_pki.root_pem,
        "--require-timestamp", *artifacts, env=hsm.env,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.count("verified") >= len(artifacts)

    # the control's mirror: a byte changed in an artifact fails the gate with the same signature
    artifacts[0].write_bytes(artifacts[0].read_bytes() + b"x")
    tampered = sealgate("verify", "--trust-roots", hsm.root_pem, "--tsa-roots",
                        tsa_pki.root_pem, artifacts[0], env=hsm.env)  # fmt: skip
    assert tampered.returncode == 1, tampered.stdout + tampered.stderr


def test_answers_carry_a_request_id_and_the_security_headers(service: InProcessService) -> None:
    ids = set()
    for response in (
        service.post(sign_body({"a": b"a"})),
        service.post(b"{", token=""),
        service.client.get("/nowhere"),
        service.client.get(API_HEALTH),
    ):
        ids.add(response.headers["x-request-id"])
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-store"
        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert response.headers["content-type"].startswith("application/json")
        assert "server" not in response.headers
    assert len(ids) == 4


# -- each refusal: one record, nothing signed ------------------------------------------------


def test_401_without_a_token_or_with_a_bad_one(service: InProcessService) -> None:
    for token, headers, code in [
        ("", {}, "token-missing"),
        ("", {"Authorization": "Basic dXNlcjpwYXNz"}, "token-missing"),
        ("not-a-jwt", {}, "token-malformed"),
        ("x" * 20000, {}, "token-malformed"),
    ]:
        ledger = Ledger(service)
        response = service.post(sign_body({"a": b"a"}), token=token, headers=headers)
        _refused(service, response, 401, code, ledger)
        assert response.headers["www-authenticate"].startswith("Bearer")
        record = ledger.one_new_record(response)
        assert record["actor"] == {}  # nothing unverified is recorded as who
        assert record["key"] is None and record["artifacts"] == []


def test_401_for_a_token_signed_by_a_key_the_issuer_does_not_publish(
    service: InProcessService, oidc: OidcIssuer
) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    forged = oidc.mint(github_claims(), alg="ES256", key=ec.generate_private_key(ec.SECP256R1()))
    ledger = Ledger(service)
    response = service.post(sign_body({"a": b"a"}), token=forged)
    error = _refused(service, response, 401, response.json()["error"]["code"], ledger)
    assert error["code"].startswith("token-"), error


def test_401_for_a_replayed_token_and_the_first_use_still_stands(
    service: InProcessService,
) -> None:
    token = service.token()
    first = service.post(sign_body({"a": b"a"}), token=token)
    assert first.status_code == 200, first.text
    ledger = Ledger(service)
    again = service.post(sign_body({"b": b"b"}), token=token)
    error = _refused(service, again, 401, "token-replayed", ledger)
    assert "already used" in error["message"]


def test_403_names_the_first_claim_that_failed_and_consumes_the_token(
    service: InProcessService,
) -> None:
    token = service.token(repository_id="666")
    ledger = Ledger(service)
    response = service.post(sign_body({"a": b"a"}), token=token)
    error = _refused(service, response, 403, "no-grant", ledger)
    assert error["field"] == "repository_id" and "666" in error["message"]
    record = ledger.one_new_record(response)
    assert record["actor"]["claims"]["repository_id"] == "666"  # who asked, as verified
    assert record["key"] == KEY and record["artifacts"][0]["name"] == "a"
    # a refused token is spent: trying it again is a replay, not a second grant lookup
    ledger = Ledger(service)
    _refused(service, service.post(sign_body({"a": b"a"}), token=token), 401, "token-replayed",
             ledger)  # fmt: skip


@pytest.mark.parametrize(
    ("claims", "field"),
    [
        ({"ref": "refs/heads/dev"}, "ref"),
        ({"job_workflow_ref": "evil/fork/.github/workflows/x.yml@refs/heads/main"},
         "job_workflow_ref"),
        ({"repository_owner_id": None}, "repository_owner_id"),  # a missing claim never matches
        ({"event_name": "pull_request_target"}, "event_name"),  # risky on a release key
        ({"runner_environment": "self-hosted"}, "runner_environment"),
    ],
)  # fmt: skip
def test_403_for_each_claim_the_grant_pins_or_the_release_key_refuses(
    service: InProcessService, claims: dict[str, Any], field: str
) -> None:
    ledger = Ledger(service)
    response = service.post(sign_body({"a": b"a"}), token=service.token(**claims))
    error = _refused(service, response, 403, "no-grant", ledger)
    assert field in error["message"], error


def test_404_for_an_unknown_key_leaves_the_token_usable(service: InProcessService) -> None:
    token = service.token()
    ledger = Ledger(service)
    response = service.post(sign_body({"a": b"a"}, key="relaese"), token=token)
    error = _refused(service, response, 404, "unknown-key", ledger)
    assert error["field"] == "key" and "relaese" in error["message"]
    retried = service.post(sign_body({"a": b"a"}), token=token)  # the job fixes its request
    assert retried.status_code == 200, retried.text


def test_422_for_a_malformed_body_leaves_the_token_usable(service: InProcessService) -> None:
    token = service.token()
    digest = "ab" * 32
    for body, code in [
        (b"{not json", "malformed-json"),
        (b'{"key": "release", "artifacts": [], "x": 1}', "unknown-field"),
        (json.dumps({"key": KEY, "artifacts": [{"name": "a", "digest_algorithm": "sha256",
                                                  "digest": digest[:-2]}]}).encode(),
         "digest-length"),
        (b'{"key": "release", "artifacts": [{"name": "a", "digest_algorithm": "sha256",'
         b' "digest": "' + digest.encode() + b'", "digest": NaN}]}', "malformed-json"),
        (b"[]", "wrong-type"),
        # a name the signer refuses (a newline forges report lines): 422 from the signer
        (json.dumps({"key": KEY, "artifacts": [{"name": "a\nverified b", "digest": digest,
                                                  "digest_algorithm": "sha256"}]}).encode(),
         "bad-name"),
    ]:  # fmt: skip
        ledger = Ledger(service)
        _refused(service, service.post(body, token=token), 422, code, ledger)
    assert service.post(sign_body({"a": b"a"}), token=token).status_code == 200


def test_413_for_a_body_over_the_cap_declared_or_streamed(service: InProcessService) -> None:
    ledger = Ledger(service)
    big = b'{"key": "release", "artifacts": [' + b" " * MAX_BODY + b"]}"
    _refused(service, service.post(big), 413, "body-too-large", ledger)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap holds while streaming
        for _ in range(MAX_BODY // 65536 + 2):
            yield b" " * 65536

    ledger = Ledger(service)
    streamed = service.client.post(
        API_SIGN, content=chunks(), headers={"Authorization": f"Bearer {service.token()}"}
    )
    _refused(service, streamed, 413, "body-too-large", ledger)
    assert "content-length" not in {k.lower() for k in streamed.request.headers}


def test_413_for_more_artifacts_than_the_grant_allows(
    hsm: HsmFixture, oidc: OidcIssuer, tmp_path: Path
) -> None:
    key = hsm_key(hsm, grants=[github_grant(max_artifacts=2)])
    config = service_config(oidc, [key], directory=tmp_path)
    with in_process_service(config, oidc) as service:
        token = service.token()
        ledger = Ledger(service)
        three = sign_body({"a": b"a", "b": b"b", "c": b"c"})
        error = _refused(service, service.post(three, token=token), 413, "too-many-artifacts",
                         ledger)  # fmt: skip
        assert error["field"] == "artifacts" and "at most 2" in error["message"]
        two = sign_body({"a": b"a", "b": b"b"})
        assert service.post(two, token=token).status_code == 200  # fewer, same token


def test_429_when_the_grant_s_hourly_requests_are_spent(
    hsm: HsmFixture, oidc: OidcIssuer, tmp_path: Path
) -> None:
    key = hsm_key(hsm, grants=[github_grant(max_requests_per_hour=2)])
    config = service_config(oidc, [key], directory=tmp_path)
    with in_process_service(config, oidc) as service:
        # refusals do not count against the limit, only signed requests
        assert service.post(sign_body({"a": b"a"}), token=service.token(ref="x")).status_code == 403
        for _ in range(2):
            assert service.post(sign_body({"a": b"a"})).status_code == 200
        ledger = Ledger(service)
        response = service.post(sign_body({"a": b"a"}))
        error = _refused(service, response, 429, "rate-limited", ledger)
        assert "2 requests in the last hour" in error["message"]
        assert int(response.headers["retry-after"]) >= 1
        assert ledger.one_new_record(response)["grant"] == "release-main"


def test_503_when_the_tsa_is_down_signs_nothing_and_leaves_the_token_usable(
    hsm: HsmFixture, oidc: OidcIssuer, tsas: dict[str, LocalTsa], tsa_pki: TsaPki, tmp_path: Path
) -> None:
    key = hsm_key(hsm, tsa=tsas["http_error"], tsa_pki=tsa_pki)
    config = service_config(oidc, [key], directory=tmp_path)
    with in_process_service(config, oidc) as service:
        token = service.token()
        ledger = Ledger(service)
        response = service.post(sign_body({"a": b"a"}), token=token)
        assert response.status_code == 503, response.text
        code = _error(response)["code"]
        _refused(service, response, 503, code, ledger)
        assert response.headers["retry-after"]
        assert service.records()[-1].body["actor"]["claims"]  # who asked, as verified
        # the token was not consumed: the job may retry it once the TSA is back
        assert not service.service.store.jti_used(oidc.url, _jti(token))


def _jti(token: str) -> str:
    payload = token.split(".")[1]
    value: str = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"]
    return value


# -- the framework's own refusals are ours too -------------------------------------------------


def test_unknown_routes_and_methods_get_our_error_body_and_no_record(
    service: InProcessService,
) -> None:
    ledger = Ledger(service)
    for method, path, status, code in [
        ("GET", "/nowhere", 404, "not-found"),
        ("GET", API_SIGN, 405, "method-not-allowed"),
        ("DELETE", API_HEALTH, 405, "method-not-allowed"),
        ("GET", "/v1/audit/proof/not-a-number", 422, "bad-parameter"),
        ("GET", "/docs", 404, "not-found"),
    ]:
        response = service.client.request(method, path)
        assert response.status_code == status, (path, response.text)
        assert _error(response)["code"] == code
    assert len(service.records()) == ledger.records  # only /v1/sign is a decision


def test_the_checkpoint_and_proofs_the_app_serves_verify(
    hsm: HsmFixture, oidc: OidcIssuer, tmp_path: Path
) -> None:
    config = service_config(
        oidc, [hsm_key(hsm)], directory=tmp_path,
        audit=AuditConfig(key_uri=hsm.uri("ed25519"), checkpoint_every=10**6),
    )  # fmt: skip
    with in_process_service(config, oidc) as service:
        health = service.client.get(API_HEALTH)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert _error(service.client.get(API_CHECKPOINT))["code"] == "no-checkpoint"
        receipts = []
        for number in range(3):
            signed = service.post(sign_body({f"a{number}": b"a"}))
            assert signed.status_code == 200, signed.text
            receipts.append(signed.json()["receipt"])
        service.service.checkpointer.checkpoint()
        checkpoint = service.client.get(API_CHECKPOINT).json()
        assert checkpoint["tree_size"] == 3
        root = bytes.fromhex(checkpoint["root_hash"])

        receipt = receipts[1]
        proof = service.client.get(f"/v1/audit/proof/{receipt['index']}?tree_size=3").json()
        assert merkle.verify_inclusion(
            receipt["index"], 3, bytes.fromhex(receipt["hash"]),
            [bytes.fromhex(p) for p in proof["proof"]], root,
        )  # fmt: skip
        assert not merkle.verify_inclusion(  # the control: another record's hash is not in it
            receipt["index"], 3, bytes.fromhex(receipts[0]["hash"]),
            [bytes.fromhex(p) for p in proof["proof"]], root,
        )  # fmt: skip
        old = service.client.get("/v1/audit/consistency?old=1&new=3").json()
        assert merkle.verify_consistency(
            1, 3, bytes.fromhex(old["old_root"]), root, [bytes.fromhex(p) for p in old["proof"]]
        )
        for path, status, code in [
            ("/v1/audit/proof/99", 404, "no-such-record"),
            ("/v1/audit/proof/-1", 404, "no-such-record"),
            ("/v1/audit/proof/0?tree_size=99", 422, "bad-tree-size"),
            ("/v1/audit/consistency?old=3&new=1", 422, "bad-tree-size"),
            ("/v1/audit/consistency?old=1", 422, "bad-parameter"),
            (f"/v1/audit/proof/{10**30}", 404, "no-such-record"),
        ]:
            answer = service.client.get(path)
            assert answer.status_code == status, (path, answer.text)
            assert _error(answer)["code"] == code, (path, answer.text)


def test_one_token_sent_eight_times_at_once_signs_once(service: InProcessService) -> None:
    """The replay pre-check can race; the store's unique (iss, jti) cannot: one answer carries
    signatures, every other is a recorded 401, and only one request's .p7s is kept."""
    token = service.token()
    ledger = Ledger(service)
    barrier = threading.Barrier(8)

    def send(number: int) -> httpx.Response:
        barrier.wait()
        return service.post(sign_body({f"a{number}": b"a"}), token=token)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, range(8)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] + [401] * 7, [a.text for a in answers]
    assert all(_error(a)["code"] == "token-replayed" for a in answers if a.status_code == 401)
    records = service.records()[ledger.records :]
    assert len(records) == 8
    assert sorted(r.body["reason_code"] for r in records) == ["signed"] + ["token-replayed"] * 7
    assert service.signature_count() == ledger.signatures + 1


def test_a_bug_behind_the_endpoint_is_still_one_record_and_our_json(
    service: InProcessService, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("secret internals /etc/passwd")

    monkeypatch.setattr(service.service.signer, "sign", broken)
    ledger = Ledger(service)
    response = service.post(sign_body({"a": b"a"}))
    error = _refused(service, response, 500, "internal-error", ledger)
    assert "secret internals" not in response.text and "request id" in error["message"]


def test_408_for_a_body_trickled_in_slower_than_the_deadline(
    service: InProcessService, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio
    from collections.abc import AsyncIterator

    from sealgate.service import app as app_module

    monkeypatch.setattr(app_module, "BODY_TIMEOUT", 0.5)
    token = service.token()

    async def trickle() -> AsyncIterator[bytes]:
        yield b'{"key": "release", '
        await asyncio.sleep(5)  # the deadline passes here
        yield b'"artifacts": []}'

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=service.service.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            return await client.post(API_SIGN, content=trickle(),
                                     headers={"Authorization": f"Bearer {token}"})  # fmt: skip

    ledger = Ledger(service)
    response = asyncio.run(send())
    error = _refused(service, response, 408, "body-timeout", ledger)
    assert "0.5 s" in error["message"]
    assert ledger.one_new_record(response)["actor"] == {}  # refused before the token was read
    assert service.post(sign_body({"a": b"a"}), token=token).status_code == 200  # still usable


def test_the_hourly_limit_holds_under_concurrency_and_across_replicas(
    hsm: HsmFixture, oidc: OidcIssuer, tmp_path: Path
) -> None:
    """Eight requests at once against a limit of three: places are reserved before the HSM is
    called, so exactly three are signed. A second replica on the same store sees them after its
    cached count expires (the store is the authority; each process reads it at most once a s)."""
    key = hsm_key(hsm, grants=[github_grant(max_requests_per_hour=3)])
    config = service_config(oidc, [key], directory=tmp_path)
    with in_process_service(config, oidc) as service:
        barrier = threading.Barrier(8)

        def send(number: int) -> int:
            token = service.token()
            barrier.wait()
            return service.post(sign_body({f"a{number}": b"a"}), token=token).status_code

        with ThreadPoolExecutor(8) as pool:
            statuses = sorted(pool.map(send, range(8)))
        assert statuses == [200] * 3 + [429] * 5
        assert [r.body["reason_code"] for r in service.records()].count("signed") == 3

        now = [0.0]
        replica = RateLimiter(service.service.store, monotonic=lambda: now[0])
        grant = key.grants[0]
        with pytest.raises(RateLimitedError) as refused:
            replica.reserve(key, grant)  # its first read of the store sees the three
        assert refused.value.status == 429 and "3 requests" in refused.value.message
        other = github_grant(name="other", max_requests_per_hour=1)
        replica.reserve(key, other)
        with pytest.raises(RateLimitedError):  # the reservation counts before any store read
            replica.reserve(key, other)
        replica.release(key, other)  # not signed after all: the place is free again
        replica.reserve(key, other)


def test_health_says_the_database_answers_and_names_no_key(service: InProcessService) -> None:
    health = service.client.get(API_HEALTH)
    assert health.status_code == 200 and health.json() == {"status": "ok", "records": 0}
    assert KEY not in health.text


def test_a_replay_sent_to_another_replica_is_refused_by_the_store(
    service: InProcessService, oidc: OidcIssuer
) -> None:
    """Each process remembers the tokens it spent; another replica does not, and the store's
    unique (iss, jti) refuses the replay there: one record, no signature kept."""
    token = service.token()
    assert service.post(sign_body({"a": b"a"}), token=token).status_code == 200
    with in_process_service(service.config, oidc) as replica:  # the same database
        ledger = Ledger(replica)
        again = replica.post(sign_body({"b": b"b"}), token=token)
        _refused(replica, again, 401, "token-replayed", ledger)
        ledger = Ledger(replica)  # now this replica knows it too, before any HSM work
        _refused(replica, replica.post(sign_body({"b": b"b"}), token=token), 401,
                 "token-replayed", ledger)  # fmt: skip


def test_spent_tokens_are_forgotten_only_once_expired_or_when_full() -> None:
    now = [1000.0]
    spent = SpentTokens(capacity=2, now=lambda: now[0])
    expires = dt.datetime.fromtimestamp(1100, dt.UTC)
    spent.add("iss", "a", expires)
    spent.add("iss", "b", dt.datetime.fromtimestamp(5000, dt.UTC))
    assert spent.seen("iss", "a") and not spent.seen("other-iss", "a")
    now[0] = 1200.0  # a's token has expired (and its leeway): it may go when room is needed
    spent.add("iss", "c", dt.datetime.fromtimestamp(5000, dt.UTC))
    assert not spent.seen("iss", "a") and spent.seen("iss", "b") and spent.seen("iss", "c")
    spent.add("iss", "d", dt.datetime.fromtimestamp(5000, dt.UTC))  # full, nothing expired
    assert not spent.seen("iss", "b") and spent.seen("iss", "d")  # the store still holds b
