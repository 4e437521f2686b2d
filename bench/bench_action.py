"""The GitHub Action's own overhead under act (host executor): one job with the action twice.

The first `uses: ./` runs in a fresh RUNNER_TEMP (a new act cache folder), so it creates the venv
and installs the hash-pinned requirements (cold); the second finds the venv there (warm). Both
sign the same 10 artifacts with a SoftHSM key (no TSA, no commit check: the action's overhead,
not the network's). Times are act's own per-step wall times, plus the whole `act` invocation.

    python -m bench.bench_action [--artifacts 10]
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

from bench.common import certified_token, report
from tests.components.act import git_repo_with_action, run_act

WORKFLOW = """\
on: push
jobs:
  bench:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - name: Build
        run: |
          mkdir -p dist
          for i in $(seq 1 "$BENCH_ARTIFACTS"); do head -c 100000 /dev/urandom > "dist/a$i.bin"; done
{steps}"""

STEP = """\
      - name: Sealgate {which}
        uses: ./
        with:
          artifacts: dist/a*.bin
          key: ${{{{ env.BENCH_KEY }}}}
          trust-roots: ${{{{ env.BENCH_ROOTS }}}}
          verify-commits: "false"
"""

#: act's step lines: "✅  Success - Main Install Sealgate (hash-pinned) [14.02338945s]".
STEP_TIME = re.compile(r"(?:Success|Failure) - Main (.+?) \[([0-9.]+)(µs|ms|s|m[0-9.]+s)\]")
UNITS = {"µs": 1e-6, "ms": 1e-3, "s": 1.0}


def _seconds(number: str, unit: str) -> float:
    if unit.startswith("m") and unit != "ms":  # "1m2.5s": minutes, then seconds
        return float(number) * 60 + float(unit[1:-1])
    return float(number) * UNITS[unit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--artifacts", type=int, default=10)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch)
        token = certified_token(home)
        steps = STEP.format(which="cold") + STEP.format(which="warm")
        repo = git_repo_with_action(
            home / "repo",
            {
                ".github/workflows/bench.yml": WORKFLOW.format(steps=steps),
                ".gitignore": "dist/\n__pycache__/\n",
            },
        )
        start = time.perf_counter()
        run = run_act(
            repo,
            cache=home / "cache",  # fresh: RUNNER_TEMP, and so the venv, lives under it
            secrets={},
            env={
                "BENCH_KEY": token.uri,
                "BENCH_ROOTS": str(token.root_pem),
                "BENCH_ARTIFACTS": str(args.artifacts),
                "SOFTHSM2_CONF": token.env["SOFTHSM2_CONF"],
            },
        )
        total = time.perf_counter() - start
    log = run.stdout + run.stderr
    if run.returncode != 0:
        raise SystemExit(f"act failed:\n{log[-6000:]}")

    times: dict[str, list[float]] = {}
    for name, number, unit in STEP_TIME.findall(log):
        times.setdefault(name, []).append(_seconds(number, unit))
    install, sealgate_run = times["Install Sealgate (hash-pinned)"], times["Sealgate run"]
    cold, warm = times["Sealgate cold"][0], times["Sealgate warm"][0]
    n = args.artifacts
    report(
        f"the action under act (host executor), {n} artifacts of 100 kB, SoftHSM P-256",
        [
            ("cold: whole action step (new venv)", f"{cold:.2f} s"),
            ("  install (venv + pinned requirements)", f"{install[0]:.2f} s"),
            (f"  sealgate run ({n} artifacts)", f"{sealgate_run[0]:.2f} s"),
            ("warm: whole action step (venv present)", f"{warm:.2f} s"),
            ("  install (venv present)", f"{install[1]:.2f} s"),
            (f"  sealgate run ({n} artifacts)", f"{sealgate_run[1]:.2f} s"),
            ("whole act invocation (both steps)", f"{total:.2f} s"),
        ],
    )


if __name__ == "__main__":
    main()
