"""Reading a release range's commits: Sealgate's own reader (one `git cat-file --batch`, strict
parsing, every object re-hashed, tree diffs in-process) against GitPython, which the design card
once listed, on the same history. Decides which one Sealgate carries (it carries only one).

    python -m bench.bench_git_read [--commits 20000]

GitPython is not a Sealgate dependency: the benchmark installs it into a throwaway virtual
environment (from PyPI) and times it there, in a subprocess, on the same repository.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import report
from integrity.commits import Repository
from integrity.gitobjects import git

#: What GitPython is asked to do: the work `sealgate commits` does per commit (read the
#: commit and its signature header, list the paths it changes against its parent).
GITPYTHON_SCRIPT = """
import sys, time
import git
repo = git.Repo(sys.argv[1])
start = time.perf_counter()
count = 0
for commit in repo.iter_commits(sys.argv[2]):
    _ = (commit.message, commit.gpgsig, commit.tree.hexsha, commit.author.name)
    if sys.argv[3] == "diff":
        _ = [d.a_path for d in commit.parents[0].diff(commit)] if commit.parents else []
    count += 1
print(count, time.perf_counter() - start)
"""


def make_history(path: Path, commits: int) -> None:
    """A linear history of `commits` commits, each changing one of 500 files, via fast-import."""
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    lines: list[str] = []
    for i in range(commits):
        content = f"version {i}\n"
        lines += [
            "commit refs/heads/main",
            f"committer Dev <dev@example.com> {1_700_000_000 + i} +0000",
            f"data {len(f'change {i}')}",
            f"change {i}",
            f"M 100644 inline src/module{i % 500}.py",
            f"data {len(content)}",
            content.rstrip("\n"),
        ]
    subprocess.run(
        ["git", "fast-import", "--quiet"], cwd=path, input="\n".join(lines) + "\n", text=True,
        check=True,
    )  # fmt: skip


def sealgate_read(path: Path, head: str, diff: bool) -> tuple[int, float]:
    start = time.perf_counter()
    repo = Repository(path)
    oids = git(path, "rev-list", head).decode().split()
    for oid in oids:
        commit = repo.commit(oid)
        if diff:
            repo.changed_paths(commit)
    return len(oids), time.perf_counter() - start


def gitpython_python(scratch: Path) -> Path:
    venv = scratch / "gitpython-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "GitPython"],
        check=True,
    )  # fmt: skip
    return python


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--commits", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch)
        repo = home / "repo"
        make_history(repo, args.commits)
        python = gitpython_python(home)
        version = subprocess.run(
            [str(python), "-c", "import git; print(git.__version__)"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        rows: list[tuple[str, str]] = []
        for mode in ("read", "diff"):
            ours = min(sealgate_read(repo, "main", mode == "diff")[1] for _ in range(3))
            theirs = min(
                float(
                    subprocess.run(
                        [str(python), "-c", GITPYTHON_SCRIPT, str(repo), "main", mode],
                        capture_output=True, text=True, check=True,
                    ).stdout.split()[1]
                )
                for _ in range(3)
            )  # fmt: skip
            what = "commits read" if mode == "read" else "commits read + changed paths"
            rows += [
                (f"{what}: sealgate", f"{ours:.2f} s"),
                (f"{what}: GitPython {version}", f"{theirs:.2f} s"),
                (f"{what}: ratio", f"{theirs / ours:.1f}x"),
            ]
        report(f"git read, {args.commits:,} commits (best of 3)", rows)


if __name__ == "__main__":
    main()
