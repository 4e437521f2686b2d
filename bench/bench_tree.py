"""The tree proof on a 20,000-file, ~500 MB workspace: `sealgate tree` against git's own content
check of the same tree (a fresh index: `GIT_INDEX_FILE=tmp git add -A && git write-tree`).
Goal: Sealgate at most as slow as git (ratio <= 1.0).

    python -m bench.bench_tree [--files 20000] [--mib 500]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import report
from tests.components.gitrepo import make_repo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--mib", type=int, default=500)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch)
        repo = make_repo(home)
        big_files = 50  # most bytes in a few large files, the rest small sources
        big_size = (args.mib << 20) // 2 // big_files
        small_size = max(1, (args.mib << 20) // 2 // (args.files - big_files))
        with open("/dev/urandom", "rb") as random:
            for i in range(args.files):
                directory = repo.path / f"pkg{i % 100:02d}" / f"mod{i % 7}"
                directory.mkdir(parents=True, exist_ok=True)
                size = big_size if i < big_files else small_size
                (directory / f"file{i:05d}.dat").write_bytes(random.read(size))
        repo.git("add", "-A")
        repo.git("commit", "-q", "-m", "workspace")
        env = {**repo.env}
        total = sum(p.stat().st_size for p in repo.path.rglob("*.dat"))

        index = home / "fresh-index"

        def git_check() -> str:
            index.unlink(missing_ok=True)
            fresh = {**env, "GIT_INDEX_FILE": str(index)}
            subprocess.run(["git", "-C", str(repo.path), "add", "-A"], env=fresh, check=True)
            return subprocess.run(
                ["git", "-C", str(repo.path), "write-tree"],
                env=fresh, check=True, capture_output=True, text=True,
            ).stdout.strip()  # fmt: skip

        def sealgate_check() -> str:
            out = subprocess.run(
                [sys.executable, "-m", "sealgate", "tree", "--repo", str(repo.path)],
                env=env, check=True, capture_output=True, text=True,
            ).stdout  # fmt: skip
            return out.splitlines()[-1]

        git_check()  # warm the page cache for both
        start = time.perf_counter()
        tree = git_check()
        git_time = time.perf_counter() - start
        start = time.perf_counter()
        line = sealgate_check()
        sealgate_time = time.perf_counter() - start

    report(
        f"tree proof of {args.files} files, {total / 1e6:.0f} MB (warm page cache)",
        [
            ("git add -A && git write-tree (fresh index)", f"{git_time:.2f} s (tree {tree[:12]})"),
            ("sealgate tree", f"{sealgate_time:.2f} s ({line})"),
            ("ratio (sealgate / git)", f"{sealgate_time / git_time:.2f}  (goal <= 1.0)"),
            ("cpu count", str(os.cpu_count())),
        ],
    )


if __name__ == "__main__":
    main()
