"""The one artifact glob matcher: `run --artifacts` and `rebuild --artifacts` select the same files.

Before it, `run` used gitignore globs and `rebuild` used pathlib's, so `'*.whl'` meant "at any
depth" for one and "at the top" for the other. Real git, a real rebuild (command `true`).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from integrity.artifacts import match_artifacts, select_artifacts
from integrity.errors import InputError
from integrity.rebuild import rebuild
from signer.sign import SIGNATURE_SUFFIX
from tests.components.gitrepo import Repo, make_repo

GLOBS = ["*.whl", "dist/*.whl", "dist/**"]


@pytest.fixture
def project(tmp_path: Path) -> Repo:
    repo = make_repo(tmp_path)
    repo.write("README", "readme\n")
    repo.write("dist/a.whl", "a\n")
    repo.write("dist/b.whl", "b\n")
    repo.write("dist/notes.txt", "notes\n")
    repo.write("dist/sub/c.whl", "c\n")
    repo.write("top.whl", "top\n")
    os.symlink("a.whl", repo.path / "dist" / "link.whl")  # never an artifact: could point anywhere
    repo.commit_ssh(None, "release")
    return repo


def _rel(root: Path, paths: list[Path]) -> list[str]:
    return [p.relative_to(root).as_posix() for p in paths]


@pytest.mark.parametrize("glob", GLOBS)
def test_rebuild_and_run_select_the_same_files(project: Repo, glob: str) -> None:
    root = project.path
    # exactly the call `sealgate run` makes (sealgate/pipeline/stages.py, the sign stage)
    run_side = _rel(root, match_artifacts(root, [glob], exclude_suffixes=(SIGNATURE_SUFFIX,)))
    report = rebuild(root, "HEAD", "true", [glob], diffoscope=False)
    assert [a.path for a in report.artifacts] == run_side
    assert report.reproduced, [(a.path, a.differences) for a in report.artifacts]
    expected = {
        "*.whl": ["dist/a.whl", "dist/b.whl", "dist/sub/c.whl", "top.whl"],
        "dist/*.whl": ["dist/a.whl", "dist/b.whl"],
        "dist/**": ["dist/a.whl", "dist/b.whl", "dist/notes.txt", "dist/sub/c.whl"],
    }[glob]
    assert run_side == expected


def test_order_is_per_glob_and_each_file_once(project: Repo) -> None:
    found = _rel(project.path, match_artifacts(project.path, ["top.whl", "*.whl", "README"]))
    assert found == ["top.whl", "dist/a.whl", "dist/b.whl", "dist/sub/c.whl", "README"]


def test_signatures_and_git_internals_are_never_artifacts(project: Repo) -> None:
    root = project.path
    (root / "dist" / "a.whl.p7s").write_bytes(b"sig")
    (root / "vendor").mkdir()
    (root / "vendor" / ".git").write_text("gitdir: ../elsewhere\n")  # a submodule's .git file
    os.mkfifo(root / "dist" / "pipe.whl")  # would block a reader
    found = _rel(root, match_artifacts(root, ["**"], exclude_suffixes=[".p7s"]))
    assert found == ["README", "dist/a.whl", "dist/b.whl", "dist/notes.txt", "dist/sub/c.whl",
                     "top.whl"]  # fmt: skip
    assert not any(p.startswith(".git/") for p in _rel(root, match_artifacts(root, ["**"])))


def test_a_symlinked_directory_is_not_followed_out_of_the_root(
    project: Repo, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.whl").write_text("not ours\n")
    os.symlink(outside, project.path / "dist" / "escape")
    found = _rel(project.path, match_artifacts(project.path, ["*.whl"]))
    assert not any("secret" in p for p in found)
    with pytest.raises(InputError) as caught:
        match_artifacts(project.path, ["dist/escape/*"])
    assert caught.value.code == "artifact-glob-empty"


@pytest.mark.parametrize(
    "glob",
    ["", "   ", "/etc/passwd", "/dist/*.whl", "../other/*.whl", "dist/../../x", "!*.whl",
     "# comment", "dist/a.whl\nREADME"],
)  # fmt: skip
def test_a_glob_that_cannot_select_is_refused_by_name(project: Repo, glob: str) -> None:
    with pytest.raises(InputError) as caught:
        match_artifacts(project.path, ["README", glob])
    assert caught.value.code == "bad-glob"
    assert caught.value.field == "artifacts"
    assert repr(glob) in caught.value.message


def test_a_glob_that_matches_nothing_is_named(project: Repo) -> None:
    with pytest.raises(InputError) as caught:
        match_artifacts(project.path, ["README", "missing/*.tar.gz"])
    assert (caught.value.code, caught.value.field) == ("artifact-glob-empty", "artifacts")
    assert "'missing/*.tar.gz' matches no file" in caught.value.message
    with pytest.raises(InputError) as caught:
        match_artifacts(project.path, [])
    assert caught.value.code == "artifact-glob-empty"


def test_a_root_that_is_a_file_is_a_path_error(project: Repo) -> None:
    with pytest.raises(InputError) as caught:
        match_artifacts(project.path / "README", ["*"])
    assert caught.value.code == "path-error"
    assert str(project.path / "README") in caught.value.message


def test_the_clone_side_uses_the_same_matcher(project: Repo) -> None:
    """A rebuild whose artifact is a symlink (to a file with the right bytes) reproduced nothing."""
    root = project.path
    (root / "dist" / "a.whl").unlink()
    os.symlink("b.whl", root / "dist" / "a.whl")
    project.commit_ssh(None, "a.whl is a link in the commit")
    (root / "dist" / "a.whl").unlink()
    (root / "dist" / "a.whl").write_text("b\n")  # the workspace holds a real file, same bytes
    report = rebuild(root, "HEAD", "true", ["dist/*.whl"], diffoscope=False)
    status = {a.path: a.status for a in report.artifacts}
    assert status == {"dist/a.whl": "missing", "dist/b.whl": "reproduced"}
    assert not report.reproduced
    [missing] = [a for a in report.artifacts if a.path == "dist/a.whl"]
    assert missing.differences[0] == "missing in the rebuild"
    assert "dist/b.whl" in missing.differences[1]


def test_select_reports_empty_globs_without_raising(project: Repo) -> None:
    hits = select_artifacts(project.path, ["nothing/*", "README"])
    assert [_rel(project.path, h) for h in hits] == [[], ["README"]]
