"""1,000 artifacts signed and timestamped in one `sealgate sign --tsa` call against the local
TSA (`openssl ts -reply` behind HTTP), against the naive way: the same timestamp requests one
at a time, each on a new connection, each response verified the same way.

    python -m bench.bench_timestamp [--count 1000] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import secrets
import tempfile
import time
from pathlib import Path

import requests

from bench.common import certified_token, report, run, sealgate_command
from sealgate.openssl import cms_verify
from signer.chain import load_trust_roots
from signer.cmsverify import parse_signed_data
from signer.timestamp import build_request, verify_response
from tests.components.tsa import make_tsa_pki, start_tsa


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch)
        token = certified_token(home)
        pki = make_tsa_pki(home / "tsa")
        roots = load_trust_roots(pki.root_pem, "--tsa-roots")
        artifacts = []
        (home / "dist").mkdir()
        for i in range(args.count):
            path = home / "dist" / f"artifact-{i:04d}.bin"
            path.write_bytes(i.to_bytes(4, "big") * 1024)
            artifacts.append(path)

        with start_tsa(pki, "good") as tsa:
            start = time.perf_counter()
            run(
                [*sealgate_command(), "sign", "--key", token.uri, "--out-dir", str(home / "sigs"),
                 "--tsa", tsa.url, "--tsa-roots", str(pki.root_pem),
                 "--tsa-concurrency", str(args.concurrency), *map(str, artifacts)],
                env=token.env,
            )  # fmt: skip
            sealgate = time.perf_counter() - start
            connections = tsa.connections

            signatures = [
                parse_signed_data((home / "sigs" / f"{a.name}.p7s").read_bytes(), a.name).signature
                for a in artifacts
            ]
            start = time.perf_counter()
            for value in signatures:
                nonce = secrets.randbits(64)
                started = dt.datetime.now(dt.UTC)
                query = build_request(hashlib.sha256(value).digest(), "sha256", nonce)
                answer = requests.post(  # a new connection every time, one request at a time
                    tsa.url,
                    data=query,
                    headers={"Content-Type": "application/timestamp-query"},
                    timeout=30,
                )
                verify_response(
                    answer.content,
                    signed_value=value,
                    nonce=nonce,
                    roots=roots,
                    window=(started, dt.datetime.now(dt.UTC)),
                    where="baseline",
                )
            naive = time.perf_counter() - start
        sample = artifacts[len(artifacts) // 2]
        verified = cms_verify(home / "sigs" / f"{sample.name}.p7s", sample, token.root_pem)

    report(
        f"{args.count} artifacts signed and timestamped (local TSA, 2 cores)",
        [
            (
                "sealgate sign --tsa (one call, pooled, concurrent)",
                f"{sealgate:.2f} s ({args.count / sealgate:.0f}/s, {connections} TCP connections)",
            ),
            (
                "the same timestamp requests one at a time, no reuse",
                f"{naive:.2f} s ({args.count / naive:.0f}/s, {args.count} TCP connections)",
            ),
            ("ratio (naive requests only / whole sealgate call)", f"{naive / sealgate:.1f}x"),
            ("sample verifies with openssl cms", "yes" if verified.returncode == 0 else "NO"),
        ],
    )


if __name__ == "__main__":
    main()
