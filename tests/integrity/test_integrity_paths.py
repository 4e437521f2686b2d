"""An OS error on the repository path is exit 2 `[path-error]` with the path and the OS's reason.

Before, a path longer than the system allows was a traceback (exit 1, "verification failed")
for `tree`, and each command said something else for a file or a missing folder. Every
command that opens a repository goes through `integrity.repository.open_repository` now.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from integrity.errors import InputError
from integrity.repository import open_repository, parse_range, resolve_commit
from tests.components import require
from tests.components.cli import sealgate
from tests.components.gitrepo import Repo, SshUser, make_repo, ssh_user

#: The arguments of each command after `--repo DIR`; all of them print JSON.
COMMANDS: dict[str, tuple[str, ...]] = {
    "commits": ("--range", "base..HEAD", "--json"),
    "tree": ("--json",),
    "watch": ("--json", "--", "true"),
    "rebuild": ("--command", "true", "--artifacts", "README", "--json"),
}


@pytest.fixture
def signed(tmp_path: Path) -> tuple[Repo, SshUser]:
    """A repository whose range base..HEAD passes every command (the honest control)."""
    repo = make_repo(tmp_path)
    alice = ssh_user(tmp_path, "alice")
    repo.write(
        ".sealgate/policy.yml",
        "version: 1\nsigners:\n  - name: alice\n    roles: [developer, policy-admin]\n"
        f'    ssh: ["{alice.public_line}"]\n',
    )
    repo.write("README", "readme\n")
    repo.commit_ssh(alice, "policy")
    repo.git("tag", "base")
    repo.write("README", "more\n")
    repo.commit_ssh(alice, "change")
    return repo, alice


def _long_name(tmp_path: Path) -> Path:
    return tmp_path / ("r" * 300)  # one name longer than NAME_MAX (255)


def _long_path(tmp_path: Path) -> Path:
    return tmp_path.joinpath(*["d" * 200] * 25)  # 5000 bytes: more than PATH_MAX


def _a_file(tmp_path: Path) -> Path:
    path = tmp_path / "plain-file"
    path.write_text("not a repository\n")
    return path


def _under_a_file(tmp_path: Path) -> Path:
    return _a_file(tmp_path) / "repo"


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "no-such-folder"


CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "name-too-long": (_long_name, os.strerror(36)),  # ENAMETOOLONG
    "path-too-long": (_long_path, os.strerror(36)),
    "a-file": (_a_file, "not a directory"),
    "under-a-file": (_under_a_file, os.strerror(20)),  # ENOTDIR
    "missing": (_missing, os.strerror(2)),  # ENOENT
}


def _assert_path_error(result: subprocess.CompletedProcess[str], path: Path, reason: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "[path-error]" in result.stderr
    assert str(path) in result.stderr and reason in result.stderr
    error = json.loads(result.stdout)["error"]
    assert (error["code"], error["field"]) == ("path-error", "repo")


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("command", COMMANDS)
def test_an_unusable_repository_path_is_exit_2_with_the_os_reason(
    tmp_path: Path, command: str, case: str
) -> None:
    make, reason = CASES[case]
    path = make(tmp_path)
    result = sealgate(command, "--repo", path, *COMMANDS[command])
    _assert_path_error(result, path, reason)


@pytest.mark.parametrize("command", COMMANDS)
def test_the_honest_repository_passes_every_command(
    signed: tuple[Repo, SshUser], command: str
) -> None:
    repo, _ = signed
    result = sealgate(command, "--repo", repo.path, *COMMANDS[command])
    assert result.returncode == 0, result.stdout + result.stderr


def _without_dac_override(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The CLI as a process that permissions apply to: root keeps none of its DAC bypass."""
    argv = [sys.executable, "-m", "sealgate", *map(str, args)]
    if os.geteuid() == 0:
        require(shutil.which("setpriv") is not None, "setpriv (util-linux)")
        caps = "-dac_override,-dac_read_search"
        argv = ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}", "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, check=False)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_repository_that_cannot_be_read_is_exit_2_eacces(
    signed: tuple[Repo, SshUser], tmp_path: Path, command: str
) -> None:
    repo, _ = signed
    reason = os.strerror(13)  # EACCES
    control = _without_dac_override(command, "--repo", repo.path, *COMMANDS[command])
    assert control.returncode == 0, control.stdout + control.stderr  # the same process can
    locked = tmp_path / "locked"
    locked.mkdir()
    inside = locked / "repo"
    shutil.copytree(repo.path, inside, symlinks=True)
    locked.chmod(0o000)  # the folder above: stat() of the repository fails
    try:
        result = _without_dac_override(command, "--repo", inside, *COMMANDS[command])
        _assert_path_error(result, inside, reason)
        locked.chmod(0o700)
        inside.chmod(0o000)  # the repository itself: it cannot be listed
        result = _without_dac_override(command, "--repo", inside, *COMMANDS[command])
        _assert_path_error(result, inside, reason)
    finally:
        locked.chmod(0o700)
        inside.chmod(0o700)


def test_open_repository_refuses_in_process_with_code_and_field(tmp_path: Path) -> None:
    for make, reason in CASES.values():
        path = make(tmp_path)
        with pytest.raises(InputError) as caught:
            open_repository(path)
        assert (caught.value.code, caught.value.field) == ("path-error", "repo")
        assert str(path) in caught.value.message and reason in caught.value.message
        assert "--repo" not in caught.value.message  # the CLI adds the flag, not the library
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(InputError) as caught:
        open_repository(plain)
    assert caught.value.code == "not-a-repository"


@pytest.mark.slow
def test_a_bare_repository_has_objects_but_no_work_tree(signed: tuple[Repo, SshUser]) -> None:
    repo, _ = signed
    bare = repo.path.parent / "bare.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo.path), str(bare)], check=True,
                   env=repo.env)  # fmt: skip
    assert open_repository(bare, need_work_tree=False) == bare
    with pytest.raises(InputError) as caught:
        open_repository(bare)
    assert caught.value.code == "not-a-repository"
    assert "bare" in caught.value.message
    result = sealgate("commits", "--repo", bare, "--range", "base..HEAD")
    assert result.returncode == 0, result.stdout + result.stderr  # commits reads objects only
    result = sealgate("tree", "--repo", bare)
    assert result.returncode == 2 and "[not-a-repository]" in result.stderr
    # the .git directory of a work tree (or a folder inside it) is no work tree either
    for inside in (repo.path / ".git", repo.path / ".git" / "objects"):
        for command in ("tree", "watch", "rebuild"):
            result = sealgate(command, "--repo", inside, *COMMANDS[command])
            assert result.returncode == 2, result.stderr
            assert "[not-a-repository]" in result.stderr
            assert "inside the .git directory" in result.stderr


@pytest.mark.parametrize(
    ("rev", "code"),
    [("", "bad-revision"), ("--all", "bad-revision"), ("HEAD\n", "bad-revision"),
     ("no-such-rev", "commit-unresolved"), ("HEAD:README", "commit-unresolved"),
     ("a" * 1025, "bad-revision"), ("x" * 300_000, "bad-revision")],
)  # fmt: skip
def test_resolve_commit_rules(signed: tuple[Repo, SshUser], rev: str, code: str) -> None:
    repo, _ = signed
    with pytest.raises(InputError) as caught:
        resolve_commit(repo.path, rev)
    assert (caught.value.code, caught.value.field) == (code, "commit")
    assert resolve_commit(repo.path, "base") == repo.git("rev-parse", "base")  # control


def test_one_range_rule_for_every_caller() -> None:
    assert parse_range("v1.0..HEAD") == ("v1.0", "HEAD")
    assert parse_range("a1b2..refs/heads/main") == ("a1b2", "refs/heads/main")
    for bad in ("HEAD", "a...b", "..b", "a..", "-a..b", "a..-b", "a..b c", "a..b\n", ""):
        with pytest.raises(InputError) as caught:
            parse_range(bad)
        assert (caught.value.code, caught.value.field) == ("bad-range", "range")


@pytest.mark.parametrize("command", ["tree", "watch", "rebuild"])
def test_a_huge_commit_argument_is_a_usage_error_not_an_os_error(
    signed: tuple[Repo, SshUser], command: str
) -> None:
    repo, _ = signed
    result = sealgate(command, "--repo", repo.path, "--commit", "H" * 100_000, *COMMANDS[command])
    assert result.returncode == 2, result.stderr[-500:]
    assert "[bad-revision]" in result.stderr and "100000 characters" in result.stderr
