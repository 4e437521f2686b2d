"""Two real `sealgate serve` replicas on one PostgreSQL keep one audit chain: concurrent clients on
both, then one replica killed with SIGKILL under load. Every client sees a full answer or an error
that is safe to retry, and every committed record is there once."""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from sealgate.service.audit.records import AuditRecord
from sealgate.service.audit.verify import verify_log
from sealgate.service.protocol import API_SIGN
from sealgate.service.store import SqlStore, open_store
from tests.components.hsm import HsmFixture
from tests.components.oidc import OidcIssuer, github_claims
from tests.components.service import (
    KEY,
    ServiceProcess,
    audit_config,
    hsm_key,
    service_config,
    start_service,
    write_service_yml,
)

CLIENTS = 6


@dataclass
class Outcome:
    """One request as its client saw it."""

    name: str  # the artifact's name: unique per request, so the audit log can be searched
    replica: int
    status: int | None = None  # None: no complete HTTP answer (connection refused, reset)
    answer: dict[str, Any] | None = None
    failure: str = ""


def request(replica: ServiceProcess, index: int, oidc: OidcIssuer, name: str) -> Outcome:
    data = name.encode()
    body = {"key": KEY, "artifacts": [{"name": name, "digest_algorithm": "sha256",
                                       "digest": hashlib.sha256(data).hexdigest()}]}  # fmt: skip
    outcome = Outcome(name, index)
    try:
        response = httpx.post(
            replica.url + API_SIGN,
            json=body,
            headers={"Authorization": f"Bearer {oidc.mint(github_claims())}"},
            timeout=30,
        )
    except httpx.HTTPError as error:  # incomplete answers land here too (RemoteProtocolError)
        outcome.failure = f"{type(error).__name__}: {error}"
        return outcome
    outcome.status = response.status_code
    outcome.answer = response.json()
    return outcome


def load(
    replicas: list[ServiceProcess], oidc: OidcIssuer, tag: str, each: int,
    during: threading.Event | None = None,
) -> list[Outcome]:  # fmt: skip
    """CLIENTS threads, each sending `each` requests, alternating between the replicas."""
    outcomes: list[Outcome] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        for n in range(each):
            which = (c + n) % len(replicas)
            outcome = request(replicas[which], which, oidc, f"{tag}-c{c}-{n}.bin")
            with lock:
                outcomes.append(outcome)
            if during is not None and n == each // 3:
                during.set()

    threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in threads)
    return outcomes


def assert_full_answer(outcome: Outcome, stored: dict[str, list[AuditRecord]]) -> None:
    """A 200 holds the signature and a receipt for the one record of this request."""
    assert outcome.answer is not None
    (signature,) = outcome.answer["signatures"]
    assert signature["name"] == outcome.name
    p7s = base64.b64decode(signature["p7s"])
    assert p7s[:1] == b"\x30"  # DER; the app's own tests verify it with openssl
    receipt = outcome.answer["receipt"]
    (record,) = stored[outcome.name]
    assert record.index == receipt["index"]
    assert record.hash.hex() == receipt["hash"]
    assert record.body["decision"] == "allow"
    assert record.body["outputs"] == [hashlib.sha256(p7s).hexdigest()]


def by_artifact(store: SqlStore) -> tuple[list[AuditRecord], dict[str, list[AuditRecord]]]:
    records = list(store.records())
    found: dict[str, list[AuditRecord]] = {}
    for record in records:
        for artifact in record.body["artifacts"]:
            found.setdefault(artifact["name"], []).append(record)
    return records, found


@pytest.fixture
def replicas(
    hsm: HsmFixture, oidc: OidcIssuer, pg_url: str, tmp_path: Path
) -> Iterator[tuple[list[ServiceProcess], str]]:
    """Two `sealgate serve` processes over one service.yml and one PostgreSQL database."""
    config = service_config(oidc, [hsm_key(hsm)], directory=tmp_path, audit=audit_config(hsm))
    path = write_service_yml(tmp_path / "service.yml", config)
    with (
        start_service(path, db=pg_url, env=hsm.env) as first,
        start_service(path, db=pg_url, env=hsm.env) as second,
    ):
        yield [first, second], pg_url


@pytest.mark.slow
def test_two_replicas_on_one_postgresql_keep_one_chain_then_survive_a_kill(
    replicas: tuple[list[ServiceProcess], str], oidc: OidcIssuer
) -> None:
    running, url = replicas
    # Phase 1: both replicas under concurrent load.
    first = load(running, oidc, "one", each=6)
    assert [o.failure for o in first if o.status != 200] == []
    assert {o.replica for o in first} == {0, 1}
    store = open_store(url)
    try:
        records, stored = by_artifact(store)
        assert len(records) == len(first) == CLIENTS * 6
        verify_log(records, store.checkpoints())
        for outcome in first:
            assert_full_answer(outcome, stored)
        # The replicas' records interleave: both appended to the one chain.
        receipts = sorted((o.answer or {})["receipt"]["index"] for o in first)
        assert receipts == list(range(len(first)))

        # Phase 2: kill -9 the first replica while the clients are busy on both.
        victim, survivor = running
        started = threading.Event()

        def kill_when_busy() -> None:
            started.wait(60)
            victim.kill()

        killer = threading.Thread(target=kill_when_busy)
        killer.start()
        second = load(running, oidc, "two", each=9, during=started)
        killer.join(timeout=60)
        assert victim.process.returncode == -9

        records, stored = by_artifact(store)
        verify_log(records, store.checkpoints())
        assert [r.index for r in records] == list(range(len(records)))
        unanswered = [o for o in second if o.status is None]
        refused = [o for o in second if o.status not in (None, 200)]
        # No 5xx but the retryable 503, and its body says so.
        for outcome in refused:
            assert outcome.status == 503, outcome.answer
            assert outcome.answer is not None
        for outcome in second:
            if outcome.status == 200:
                assert_full_answer(outcome, stored)
            else:
                # Retry-safe: nothing, or exactly one complete record, was committed for it.
                assert len(stored.get(outcome.name, [])) <= 1
        assert unanswered, "the kill did not hit the load (no request failed on the victim)"
        assert all(o.replica == 0 for o in unanswered)
        # Every survivor request answered in full.
        assert all(o.status == 200 for o in second if o.replica == 1)
        answered = sum(1 for o in second if o.status == 200)
        in_flight = sum(1 for o in unanswered if o.name in stored)
        print(f"after the kill: {answered} answered, {len(unanswered)} unanswered "
              f"({in_flight} committed before the kill), {len(refused)} refused")  # fmt: skip
        assert len(records) == len(first) + answered + in_flight
        # A client retries what failed on the survivor (a new token): each goes through once.
        for outcome in unanswered[:3]:
            retried = request(survivor, 1, oidc, outcome.name + ".retry")
            assert retried.status == 200, retried.answer
        records, stored = by_artifact(store)
        verify_log(records, store.checkpoints())
    finally:
        store.close()
