"""`sealgate tree` against real checkouts: every way a workspace can drift from its commit."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.components.cli import sealgate
from tests.components.gitrepo import Repo, make_repo


def _repo(tmp_path: Path, object_format: str = "sha1") -> Repo:
    repo = make_repo(tmp_path)
    if object_format == "sha256":
        subprocess.run(["rm", "-rf", str(repo.path)], check=True)
        subprocess.run(["git", "init", "-q", "--object-format=sha256", "-b", "main",
                        str(repo.path)], env=repo.env, check=True)  # fmt: skip
    repo.write("src/main.c", "int main(void) { return 0; }\n")
    repo.write("src/util/helper.c", "int helper(void) { return 1; }\n")
    repo.write("build.sh", "#!/bin/sh\ncc src/main.c\n")
    (repo.path / "build.sh").chmod(0o755)
    repo.write(".gitignore", "*.o\n/dist/\n")
    os.symlink("src/main.c", repo.path / "entry.c")
    repo.commit_ssh(None, "sources")
    return repo


def _tree(repo: Repo, *args: str) -> tuple[int, dict[str, object]]:
    result = sealgate("tree", "--repo", repo.path, "--json", *args)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def _kinds(report: dict[str, object]) -> dict[str, str]:
    differences = report["differences"]
    assert isinstance(differences, list)
    return {d["path"]: d["kind"] for d in differences}


@pytest.mark.parametrize("object_format", ["sha1", "sha256"])
def test_clean_checkout_matches_and_recomputes_git_tree_id(
    tmp_path: Path, object_format: str
) -> None:
    repo = _repo(tmp_path, object_format)
    code, report = _tree(repo)
    assert code == 0, report
    assert report["actual_tree"] == report["expected_tree"] == repo.git("rev-parse", "HEAD^{tree}")
    assert report["differences"] == []
    assert report["code"] is None
    # An ignored file present before the build is part of what the build reads: reported,
    # unless declared.
    (repo.path / "src" / "main.o").write_bytes(b"ignored object file")
    code, report = _tree(repo)
    assert code == 1 and _kinds(report) == {"src/main.o": "added"}
    assert report["code"] == "tree-mismatch"
    assert [d["code"] for d in report["differences"]] == ["tree-added"]  # type: ignore[attr-defined]
    assert "ignored by .gitignore, present before the build" in str(report["differences"])
    assert _tree(repo, "--allow-untracked", "*.o")[0] == 0


def _same_size_edit(repo: Repo) -> None:
    (repo.path / "src/main.c").write_text("int main(void) { return 1; }\n")


def _edit_with_mtime_restored(repo: Repo) -> None:
    path = repo.path / "src/util/helper.c"
    before = path.stat()
    path.write_text("int helper(void) { return 7; }\n")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def _index_hides_change(repo: Repo) -> None:
    (repo.path / "src/main.c").write_text("int main(void) { evil(); }\n")
    repo.git("update-index", "--assume-unchanged", "src/main.c")
    assert repo.git("status", "--porcelain") == ""  # git itself is fooled


def _mode_change(repo: Repo) -> None:
    (repo.path / "build.sh").chmod(0o644)


def _symlink_for_file(repo: Repo) -> None:
    (repo.path / "src/util/helper.c").unlink()
    os.symlink("/etc/passwd", repo.path / "src/util/helper.c")


def _symlink_retargeted(repo: Repo) -> None:
    (repo.path / "entry.c").unlink()
    os.symlink("src/util/helper.c", repo.path / "entry.c")


def _deleted(repo: Repo) -> None:
    (repo.path / "src/util/helper.c").unlink()


def _added(repo: Repo) -> None:
    repo.write("src/backdoor.c", "void backdoor(void) {}\n")


def _added_and_hidden_in_info_exclude(repo: Repo) -> None:
    repo.write("src/backdoor.c", "void backdoor(void) {}\n")
    (repo.path / ".git/info").mkdir(exist_ok=True)
    (repo.path / ".git/info/exclude").write_text("src/backdoor.c\n")


def _case_only_rename(repo: Repo) -> None:
    (repo.path / "src/main.c").rename(repo.path / "src/Main.c")


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (_same_size_edit, {"src/main.c": "modified"}),
        (_edit_with_mtime_restored, {"src/util/helper.c": "modified"}),
        (_index_hides_change, {"src/main.c": "modified"}),
        (_mode_change, {"build.sh": "mode"}),
        (_symlink_for_file, {"src/util/helper.c": "type"}),
        (_symlink_retargeted, {"entry.c": "modified"}),
        (_deleted, {"src/util/helper.c": "deleted"}),
        (_added, {"src/backdoor.c": "added"}),
        (_added_and_hidden_in_info_exclude, {"src/backdoor.c": "added"}),
        (_case_only_rename, {"src/main.c": "deleted", "src/Main.c": "added"}),
    ],
    ids=lambda value: getattr(value, "__name__", "")[1:] if callable(value) else "",
)
def test_every_drift_is_named(
    tmp_path: Path, tamper: Callable[[Repo], None], expected: dict[str, str]
) -> None:
    repo = _repo(tmp_path)
    tamper(repo)
    code, report = _tree(repo)
    assert code == 1
    assert _kinds(report) == expected
    assert report["actual_tree"] != report["expected_tree"]
    human = sealgate("tree", "--repo", repo.path)
    assert human.returncode == 1
    assert "DIFFERS from commit" in human.stdout.splitlines()[-1]


def test_declared_outputs_may_exist(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    repo.write("out/app.bin", "binary")
    repo.write("dist/app.tar", "ignored by the commit's .gitignore")
    assert _kinds(_tree(repo)[1]) == {"out/app.bin": "added", "dist/app.tar": "added"}
    code, report = _tree(repo, "--allow-untracked", "out/**")
    assert code == 1 and _kinds(report) == {"dist/app.tar": "added"}
    code, report = _tree(repo, "--allow-untracked", "out/**", "--allow-untracked", "dist/")
    assert code == 0 and report["differences"] == []


def test_an_older_commit_is_compared_as_asked(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    first = repo.git("rev-parse", "HEAD")
    repo.write("src/new.c", "new\n")
    repo.commit_ssh(None, "second")
    assert _tree(repo)[0] == 0
    code, report = _tree(repo, "--commit", first)
    assert code == 1 and _kinds(report) == {"src/new.c": "added"}


def test_bad_input(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    result = sealgate("tree", "--repo", plain)
    assert result.returncode == 2 and "not a git repository" in result.stderr
    repo = _repo(tmp_path)
    result = sealgate("tree", "--repo", repo.path, "--commit", "no-such-rev")
    assert result.returncode == 2 and "'no-such-rev' does not resolve to a commit" in result.stderr
