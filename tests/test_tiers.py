"""The test run's own rules: nothing a test started outlives the run, and the tiers' markers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

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


# --- tiers --------------------------------------------------------------------------------

_SAMPLE = [
    "tests/adversarial/test_workspace_attacks.py",
    "tests/signer/test_digest_and_cms_units.py",
    "tests/sealgate/test_plugins.py",
    "tests/signer/test_timestamp.py",
    "tests/test_tiers.py",
]


def _collected(marker: str) -> set[str]:
    """The node ids `pytest --collect-only -m MARKER` selects from the sample files."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only",
         "-m", marker, *_SAMPLE],
        cwd=REPO, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return {line for line in result.stdout.splitlines() if "::" in line}


def _files(nodeids: set[str]) -> set[str]:
    return {nodeid.split("::", 1)[0] for nodeid in nodeids}


@pytest.mark.slow
def test_markers_are_applied_by_location_fixture_and_measurement() -> None:
    adversarial = _collected("adversarial")
    assert _files(adversarial) == {"tests/adversarial/test_workspace_attacks.py"}
    plugin = _collected("plugin")
    assert _files(plugin) == {"tests/sealgate/test_plugins.py"}
    assert all("under_act" in n or "under_gitlab_ci_local" in n for n in plugin), plugin
    assert len(plugin) >= 2, "act and gitlab-ci-local each have tests"
    component = _collected("component")
    assert "tests/signer/test_timestamp.py" in _files(component)  # the tsa fixtures
    assert plugin <= component  # the plugin runs use the token and the TSA
    assert "tests/signer/test_digest_and_cms_units.py" not in _files(component)
    slow = _collected("slow")
    assert plugin <= slow, "the plugin runs are measured slow"
    assert any("test_a_process_that_outlives" in n for n in slow)  # marked in place
    quick = _collected("not slow")
    assert not quick & slow and "tests/signer/test_digest_and_cms_units.py" in _files(quick)


def test_component_detection_follows_the_modules_helpers() -> None:
    """A test that starts a component through a helper of its module is a component test."""
    from tests.components.tiers import code_names, matches

    namespace: dict[str, Any] = {"subprocess": subprocess}
    source = (
        "def _start():\n    subprocess.run(['gpg', '--version'])\n"
        "def _via():\n    _start()\n"
        "def test_through_helpers():\n    _via()\n"
        "def test_alone():\n    return 'gpg.format=ssh'\n"
    )
    exec(compile(source, "<sample module>", "exec"), namespace)
    assert "gpg" in code_names(namespace["test_through_helpers"], namespace)
    assert "gpg" not in code_names(namespace["test_alone"], namespace)  # the control
    assert "gpg" not in code_names(namespace["test_through_helpers"], namespace, depth=2)
    assert matches("tests/test_x.py::test_a[p1-p2]", {"tests/test_x.py::test_a"})
    assert matches("tests/test_x.py::test_a[p]", {"tests/test_x.py::*"})
    assert not matches("tests/test_x.py::test_ab", {"tests/test_x.py::test_a"})
    assert matches("tests/test_x.py::test_a[p-q]", {"tests/test_x.py::test_a[p-q]"})
    assert not matches("tests/test_x.py::test_a[p-r]", {"tests/test_x.py::test_a[p-q]"})
