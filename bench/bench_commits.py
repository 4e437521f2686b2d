"""`sealgate commits` against `git log --format=%G?` on one history: 2,000 SSH-signed and 2,000
OpenPGP-signed commits (real ssh-keygen and gpg signatures made by git). Goal: >= 20x faster.

    python -m bench.bench_commits [--ssh 2000] [--openpgp 2000]
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
from tests.components.gitrepo import gpg_user, make_repo, ssh_user


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ssh", type=int, default=2000)
    parser.add_argument("--openpgp", type=int, default=2000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch)
        repo = make_repo(home)
        alice = ssh_user(home, "alice")
        carol = gpg_user(repo, "Carol")
        repo.write(".sealgate/keys/carol.asc", carol.armored)
        repo.write(
            ".sealgate/policy.yml",
            "version: 1\nsigners:\n"
            f'  - name: alice\n    roles: [developer, policy-admin]\n    ssh: ["{alice.public_line}"]\n'
            '  - name: carol\n    roles: [developer]\n    openpgp: ["keys/carol.asc"]\n',
        )
        head = repo.commit_ssh(alice, "policy")
        repo.git("tag", "base")
        tree = repo.git("rev-parse", "HEAD^{tree}")
        started = time.perf_counter()
        plan = ["ssh"] * args.ssh + ["openpgp"] * args.openpgp
        for i, kind in enumerate(plan):
            sign = (
                ["-c", "gpg.format=ssh", "-c", f"user.signingkey={alice.key}"]
                if kind == "ssh"
                else ["-c", "gpg.format=openpgp", "-c", f"user.signingkey={carol.fingerprint}"]
            )
            head = repo.git(*sign, "commit-tree", "-S", "-p", head, "-m", f"{kind} {i}", tree)
        repo.git("update-ref", "refs/heads/main", head)
        built = time.perf_counter() - started

        allowed = home / "allowed_signers"
        allowed.write_text(f"alice@example.com {alice.public_line}\n")
        env = {**repo.env}
        start = time.perf_counter()
        log = subprocess.run(
            ["git", "-C", str(repo.path), "-c", f"gpg.ssh.allowedSignersFile={allowed}",
             "log", "--format=%G?", "base..main"],
            env=env, capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        git_time = time.perf_counter() - start

        command = [sys.executable, "-m", "sealgate", "commits", "--repo", str(repo.path),
                   "--range", "base..main"]  # fmt: skip
        cache = repo.path / ".git" / "sealgate" / "commit-verdicts.json"
        cache.unlink(missing_ok=True)
        start = time.perf_counter()
        cold = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        cold_time = time.perf_counter() - start
        start = time.perf_counter()
        subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        warm_time = time.perf_counter() - start
        if cold.returncode != 0:
            raise SystemExit(f"sealgate commits failed: {cold.stdout}{cold.stderr}")

    total = len(plan)
    report(
        f"{args.ssh} SSH-signed + {args.openpgp} OpenPGP-signed commits (history built in {built:.0f} s)",
        [
            (
                "git log --format=%G?",
                f"{git_time:.2f} s ({total / git_time:.0f} commits/s), {log.count('G')} good",
            ),
            (
                "sealgate commits, cold cache",
                f"{cold_time:.2f} s ({total / cold_time:.0f} commits/s), "
                f"{cold.stdout.splitlines()[-1]}",
            ),
            ("ratio (git log / sealgate cold)", f"{git_time / cold_time:.1f}x  (goal >= 20x)"),
            ("sealgate commits, warm cache", f"{warm_time:.2f} s"),
            ("cpu count", str(os.cpu_count())),
        ],
    )


if __name__ == "__main__":
    main()
