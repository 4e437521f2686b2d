"""Peak memory of `sealgate sign` on a 4 GiB artifact through a SoftHSM token (goal: under 100 MB).

The artifact is a sparse file, so the run measures Sealgate's memory, not the disk; the
whole 4 GiB is still read and hashed. Peak RSS comes from the kernel's rusage of the child.

    python -m bench.bench_memory [--size-gib 4] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import certified_token, report, sealgate_command
from sealgate.openssl import cms_verify


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-gib", type=int, default=4)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        home = Path(scratch)
        token = certified_token(home)
        artifact = home / "big-artifact.bin"
        with open(artifact, "wb") as out:
            out.truncate(args.size_gib << 30)

        start = time.perf_counter()
        process = subprocess.Popen(
            [*sealgate_command(), "sign", "--key", token.uri, str(artifact)],
            env=token.env,
            stdout=subprocess.DEVNULL,
        )
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit("sealgate sign failed")
        verified = cms_verify(Path(f"{artifact}.p7s"), artifact, token.root_pem)

    peak_mb = usage.ru_maxrss * 1024 / 1e6  # ru_maxrss is in KiB on Linux
    report(
        f"sealgate sign of a {args.size_gib} GiB artifact through SoftHSM",
        [
            ("wall time", f"{elapsed:.2f} s ({(args.size_gib << 30) / elapsed / 1e9:.2f} GB/s)"),
            ("peak RSS of the sealgate process", f"{peak_mb:.1f} MB  (goal < 100 MB)"),
            ("openssl cms -verify", "ok" if verified.returncode == 0 else verified.stderr.strip()),
        ],
    )


if __name__ == "__main__":
    main()
