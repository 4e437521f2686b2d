"""Digest throughput on a 1 GiB file: Sealgate's streaming hash against `openssl dgst -sha256`.

Both read the same file from the page cache (one warm-up read first), so the figure is the
hashing path itself. Goal: at least 0.9x OpenSSL's throughput.

    python -m bench.bench_digest [--size-mib 1024] [--repeat 5] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench.common import median, report, run, timed
from signer.digest import digest_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        path = Path(scratch) / "artifact.bin"
        with open(path, "wb") as out, open("/dev/urandom", "rb") as random:
            for _ in range(args.size_mib):
                out.write(random.read(1 << 20))
        size = path.stat().st_size
        digest_file(path, "sha256")  # warm the page cache for both contenders

        openssl = median(timed(lambda: run(["openssl", "dgst", "-sha256", str(path)]), args.repeat))
        sealgate = median(timed(lambda: digest_file(path, "sha256"), args.repeat))

    def gbps(seconds: float) -> str:
        return f"{size / seconds / 1e9:.2f} GB/s ({seconds:.3f} s)"

    report(
        f"SHA-256 of {size / (1 << 30):.2f} GiB, median of {args.repeat}",
        [
            ("openssl dgst -sha256", gbps(openssl)),
            ("sealgate digest", gbps(sealgate)),
            (
                "ratio (sealgate / openssl throughput)",
                f"{openssl / sealgate:.2f}x  (goal >= 0.90x)",
            ),
        ],
    )


if __name__ == "__main__":
    main()
