"""1,000 small artifacts: one `sealgate sign` call through SoftHSM (one session for the batch)
against the naive baseline, a loop of `openssl cms -sign` with a key file.

    python -m bench.bench_batch_sign [--count 1000] [--size 4096]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bench.common import certified_token, report, run, sealgate_command
from sealgate.localpki import LocalCA, write_pem
from sealgate.openssl import cms_verify


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--size", type=int, default=4096)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch)
        token = certified_token(home)
        artifacts = []
        for i in range(args.count):
            path = home / "dist" / f"artifact-{i:04d}.bin"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(i.to_bytes(4, "big") * (args.size // 4))
            artifacts.append(path)

        start = time.perf_counter()
        run(
            [
                *sealgate_command(),
                "sign",
                "--key",
                token.uri,
                "--out-dir",
                str(home / "sealgate"),
                *map(str, artifacts),
            ],
            env=token.env,
        )
        sealgate = time.perf_counter() - start

        # The baseline: a file key (what Sealgate exists to avoid), one openssl process per artifact.
        key = ec.generate_private_key(ec.SECP256R1())
        key_pem = home / "baseline-key.pem"
        key_pem.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        cert_pem = write_pem(home / "baseline-cert.pem", LocalCA().issue(key.public_key()))
        (home / "openssl").mkdir()
        start = time.perf_counter()
        for path in artifacts:
            run(
                [
                    "openssl",
                    "cms",
                    "-sign",
                    "-binary",
                    "-in",
                    str(path),
                    "-signer",
                    str(cert_pem),
                    "-inkey",
                    str(key_pem),
                    "-outform",
                    "DER",
                    "-out",
                    str(home / "openssl" / f"{path.name}.p7s"),
                ]
            )
        openssl = time.perf_counter() - start

        sample = artifacts[len(artifacts) // 2]
        verified = cms_verify(home / "sealgate" / f"{sample.name}.p7s", sample, token.root_pem)

    report(
        f"{args.count} artifacts of {args.size} bytes, signed and written as .p7s",
        [
            (
                "sealgate sign (SoftHSM, one call)",
                f"{sealgate:.2f} s ({args.count / sealgate:.0f}/s)",
            ),
            (
                "openssl cms -sign loop (file key)",
                f"{openssl:.2f} s ({args.count / openssl:.0f}/s)",
            ),
            ("ratio (openssl loop / sealgate)", f"{openssl / sealgate:.1f}x faster"),
            ("sample verifies with openssl", "yes" if verified.returncode == 0 else "NO"),
        ],
    )


if __name__ == "__main__":
    main()
