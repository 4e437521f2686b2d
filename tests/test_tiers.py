"""The test run's own rules: nothing a test started outlives the run, and the tiers' markers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

_INNER_CONFTEST = """\
from tests.conftest import (  # noqa: F401 - the run's real hooks, nothing else
    pytest_runtest_teardown,
    pytest_sessionfinish,
    pytest_sessionstart,
)
"""

_LEAKY = """\
import subprocess
from pathlib import Path

import pytest

PIDS = Path({pids!r})


def _record(pid):
    with PIDS.open("a") as out:
        out.write(f"{{pid}}\\n")


def test_starts_a_child_and_forgets_it():
    _record(subprocess.Popen(["sleep", "300"]).pid)


def test_starts_a_daemon_that_leaves_its_parent(tmp_path):
    # double fork: the daemon is reparented away from pytest, but it works below tmp_path
    started = subprocess.run(
        ["sh", "-c", "sleep 301 >/dev/null 2>&1 & echo $!"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    )
    _record(int(started.stdout))


def test_stops_what_it_starts(tmp_path):
    child = subprocess.Popen(["sleep", "302"], cwd=tmp_path)
    child.terminate()
    child.wait()
"""


def _run_inner(tmp_path: Path, body: str, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "inner").mkdir()
    (tmp_path / "inner" / "conftest.py").write_text(_INNER_CONFTEST)
    (tmp_path / "inner" / "test_inner.py").write_text(body)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("CI", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "--basetemp", str(tmp_path / "basetemp"), "--rootdir", str(tmp_path / "inner"),
         str(tmp_path / "inner"), *args],
        cwd=tmp_path / "inner", env=env, capture_output=True, text=True, check=False,
        timeout=300,
    )  # fmt: skip


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_a_process_that_outlives_its_test_fails_the_run_and_is_killed(tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"
    result = _run_inner(tmp_path, _LEAKY.format(pids=str(pids_file)))
    pids = [int(line) for line in pids_file.read_text().split()]
    try:
        assert len(pids) == 2
        assert "3 passed" in result.stdout, result.stdout + result.stderr
        assert result.returncode == 1, "every test passed, but the leftovers fail the run"
        assert "2 process(es) the tests started outlived them (now killed):" in result.stdout
        child, daemon = pids
        assert f"pid {child} (a descendant of pytest): sleep 300" in result.stdout
        assert f"pid {daemon} (its " in result.stdout and "sleep 301" in result.stdout
        assert "sleep 302" not in result.stdout, "a process its test stopped is no leftover"
        assert not any(_alive(pid) for pid in pids)
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_run_that_stops_what_it_starts_passes(tmp_path: Path) -> None:
    """The control: the same checks, the well-behaved test alone, exit 0."""
    result = _run_inner(tmp_path, _LEAKY.format(pids=str(tmp_path / "pids")), "-k", "stops")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "outlived" not in result.stdout
