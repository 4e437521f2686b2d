"""The long fuzz run: every target of tests/fuzz with many examples and fresh randomness.

CI runs each target for SEALGATE_FUZZ_EXAMPLES (default 200) derandomized examples; this runs
the same targets for as many random examples as asked, and prints how to replay a failure.

    python -m bench.fuzz --examples 20000 [-k cms] [--seed N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--examples", type=int, default=20_000, help="examples per target")
    parser.add_argument("-k", dest="select", help="pytest -k expression (e.g. cms, policy, dsse)")
    parser.add_argument("--seed", type=int, help="hypothesis seed, to replay a run")
    args = parser.parse_args()
    if args.examples < 1:
        parser.error("--examples must be at least 1")
    env = {**os.environ, "SEALGATE_FUZZ_EXAMPLES": str(args.examples), "SEALGATE_FUZZ_RANDOM": "1"}
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "tests/fuzz"]
    if args.select:
        command += ["-k", args.select]
    if args.seed is not None:
        command += [f"--hypothesis-seed={args.seed}"]
    print(f"fuzzing: {args.examples} examples per target: {' '.join(command[2:])}", flush=True)
    started = time.monotonic()
    code = subprocess.run(command, cwd=ROOT, env=env, check=False).returncode
    print(f"fuzzing took {time.monotonic() - started:.0f} s; "
          + ("no target raised an untyped exception" if code == 0 else
             "a target failed: the report above has the input and @reproduce_failure"))  # fmt: skip
    return code


if __name__ == "__main__":
    sys.exit(main())
