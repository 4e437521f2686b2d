"""`sealgate watch` with real git repositories, real inotify and real (shell script) builds."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import pytest
from inotify_simple import Event, flags  # type: ignore[import-untyped]

from integrity.errors import InputError
from integrity.watch import OVERFLOW_DETAIL, _Watcher, watch_build
from tests.components.cli import sealgate

MAIN_C = "int main(void) { return 0; }\n"
GIT_ENV = {
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "Alice",
    "GIT_AUTHOR_EMAIL": "alice@example.com",
    "GIT_COMMITTER_NAME": "Alice",
    "GIT_COMMITTER_EMAIL": "alice@example.com",
}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A committed repository: README, src/main.c and src/lib/util.h."""
    root = tmp_path / "repo"
    (root / "src" / "lib").mkdir(parents=True)
    (root / "README.md").write_text("demo\n")
    (root / "src" / "main.c").write_text(MAIN_C)
    (root / "src" / "lib" / "util.h").write_text("#define ANSWER 42\n")
    env = {**os.environ, **GIT_ENV}
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "sources"]):
        subprocess.run(["git", "-C", str(root), *args], env=env, check=True)
    return root


def _script(tmp_path: Path, body: str) -> Path:
    """A build script kept outside the repository, so it is not an untracked file in it."""
    script = tmp_path / "build.sh"
    script.write_text("set -e\n" + body)
    return script


def _watch(repo: Path, script: Path, *extra: str) -> tuple[int, dict[str, object]]:
    result = sealgate(
        "watch", "--repo", repo, "--outputs", "build/**", "--json", *extra, "--", "sh", script
    )
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def _touched(report: dict[str, object]) -> set[str]:
    violations = report["violations"]
    assert isinstance(violations, list)
    return {v["path"] for v in violations}


def _tree_ok(report: dict[str, object]) -> bool:
    tree = report["tree"]
    assert isinstance(tree, dict)
    return bool(tree["ok"])


def test_honest_build_passes(repo: Path, tmp_path: Path) -> None:
    script = _script(tmp_path, "mkdir -p build\ncat src/main.c src/lib/util.h > build/out.txt\n")
    result = sealgate("watch", "--repo", repo, "--outputs", "build/**", "--", "sh", script)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "TAMPERED" not in result.stdout
    assert "build succeeded; 0 violations during the build; tree matches" in result.stdout
    assert (repo / "build" / "out.txt").read_text().startswith(MAIN_C)


def test_sunspot_swap_and_restore_is_caught_by_the_watch(repo: Path, tmp_path: Path) -> None:
    """Swap main.c, compile, put back the original bytes and mtime: the tree proof passes,
    only the watch can tell."""
    main = repo / "src" / "main.c"
    before = main.stat().st_mtime_ns
    backup = tmp_path / "main.c.orig"
    script = _script(
        tmp_path,
        f"cp -p src/main.c {backup}\n"
        "printf 'int main(void) {{ backdoor(); }}\\n' > src/main.c\n"
        "sleep 0.1\n"
        "mkdir -p build\ncp src/main.c build/main.o\n"
        f"cat {backup} > src/main.c\n"
        f"touch -r {backup} src/main.c\n",
    )
    code, report = _watch(repo, script)
    assert code == 1
    assert _tree_ok(report), report["tree"]
    assert "src/main.c" in _touched(report)
    assert report["code"] == "tampered"
    assert {v["code"] for v in report["violations"]} == {"tampered"}  # type: ignore[attr-defined]
    assert main.read_text() == MAIN_C and main.stat().st_mtime_ns == before
    assert "backdoor" in (repo / "build" / "main.o").read_text()

    text = sealgate("watch", "--repo", repo, "--outputs", "build/**", "--", "sh", script)
    assert text.returncode == 1
    assert any(line.startswith("TAMPERED src/main.c: ") for line in text.stdout.splitlines())


def test_rename_over_a_tracked_path_and_back_is_caught(repo: Path, tmp_path: Path) -> None:
    script = _script(
        tmp_path,
        "mv src/lib/util.h build.tmp.h\n"
        "printf '#define ANSWER 7\\n' > src/lib/other.h\n"
        "mv src/lib/other.h src/lib/util.h\n"
        "rm src/lib/util.h\nmv build.tmp.h src/lib/util.h\n",
    )
    code, report = _watch(repo, script)
    assert code == 1
    assert _tree_ok(report)
    kinds = {(v["path"], v["kind"]) for v in report["violations"]}  # type: ignore[attr-defined]
    assert ("src/lib/util.h", "moved-to") in kinds
    assert ("src/lib/util.h", "moved-from") in kinds
    assert ("build.tmp.h", "moved-to") in kinds  # an untracked path outside the outputs


def test_new_directory_and_file_during_build_are_reported(repo: Path, tmp_path: Path) -> None:
    script = _script(tmp_path, "mkdir -p gen/deep\necho 'int x;' > gen/deep/extra.c\n")
    code, report = _watch(repo, script)
    assert code == 1
    assert {"gen", "gen/deep", "gen/deep/extra.c"} <= _touched(report)


def test_new_directory_removed_before_the_end_is_still_reported(repo: Path, tmp_path: Path) -> None:
    script = _script(
        tmp_path, "mkdir gen\necho 'int x;' > gen/extra.c\nmkdir -p build\nrm -rf gen\n"
    )
    code, report = _watch(repo, script)
    assert code == 1
    assert _tree_ok(report)  # nothing left behind: only the watch saw it
    assert "gen" in _touched(report)
    assert not any(p.startswith("build") for p in _touched(report))


def test_failing_build_exit_status_wins(repo: Path, tmp_path: Path) -> None:
    code, report = _watch(repo, _script(tmp_path, "exit 3\n"))
    assert code == 3
    assert report["build_exit"] == 3 and not report["violations"] and _tree_ok(report)


def test_build_command_not_found_is_a_usage_error(repo: Path) -> None:
    result = sealgate("watch", "--repo", repo, "--", "/nonexistent/sealgate-build")
    assert result.returncode == 2
    assert "build command not found: /nonexistent/sealgate-build" in result.stderr


def test_not_a_repository_is_a_usage_error(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    result = sealgate("watch", "--repo", plain, "--", "true")
    assert result.returncode == 2
    assert "not a git repository" in result.stderr


def test_api_report_and_missing_command(repo: Path, tmp_path: Path) -> None:
    script = _script(tmp_path, "chmod +x src/main.c\nchmod -x src/main.c\n")
    report = watch_build(repo, ["sh", str(script)], outputs=["build/**"])
    assert report.build_exit == 0 and report.tree.ok and not report.ok
    assert [(v.path, v.kind) for v in report.violations] == [("src/main.c", "attrib")]
    with pytest.raises(InputError, match="build command not found") as caught:
        watch_build(repo, ["/nonexistent/sealgate-build"])
    assert (caught.value.code, caught.value.field) == ("build-command-not-found", "build")
    with pytest.raises(InputError) as caught:
        watch_build(repo, [])
    assert (caught.value.code, caught.value.field) == ("no-build-command", "build")


def test_queue_overflow_is_a_failure(repo: Path) -> None:
    watcher = _Watcher(repo, ["src/main.c"], ["build/**"])
    try:
        watcher.handle([Event(-1, flags.Q_OVERFLOW, 0, "")])
    finally:
        watcher.close()
    assert [(v.path, v.kind, v.detail) for v in watcher.found.values()] == [
        (".", "overflow", OVERFLOW_DETAIL)
    ]
    assert [v.code for v in watcher.found.values()] == ["watch-overflow"]


def test_running_out_of_watches_before_the_build_names_the_limit(repo: Path) -> None:
    """ENOSPC from inotify_add_watch before the build: exit 2 `inotify-limit` with the fix;
    any other refusal is `watch-failed` with the OS's reason."""
    watcher = _Watcher(repo, ["src/main.c"], [])

    class Exhausted:
        def __init__(self, errno_value: int) -> None:
            self.errno_value = errno_value

        def add_watch(self, path: Path, mask: int) -> int:
            raise OSError(self.errno_value, os.strerror(self.errno_value), str(path))

        def close(self) -> None:
            pass

    real = watcher.inotify
    try:
        for errno_value, code in ((errno.ENOSPC, "inotify-limit"), (errno.EACCES, "watch-failed")):
            watcher.inotify = Exhausted(errno_value)
            for scan_root in (True, False):
                with pytest.raises(InputError) as caught:
                    if scan_root:
                        watcher.watch_tree("", scan=False)
                    else:
                        watcher.watch_ancestors()
                assert caught.value.code == code
                assert caught.value.exit_code == 2
                assert "cannot watch" in caught.value.message
            if code == "inotify-limit":
                assert "max_user_watches" in caught.value.diagnostics()
    finally:
        real.close()
    # during the build, a directory that cannot be watched is a finding, not an error
    watcher.inotify = Exhausted(errno.ENOSPC)
    watcher.watch_tree("gen", scan=True)
    assert [v.code for v in watcher.found.values()] == ["watch-incomplete"]
