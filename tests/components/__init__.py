"""Real components the tests start (SoftHSM2, p11-kit, OpenBao, moto, ...), and the CI skip rule."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import requests

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require(available: bool, what: str) -> None:
    """Skip a component test locally when `what` is missing; under CI=true fail instead."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true and is missing", pytrace=False)
    pytest.skip(f"{what} is not available")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Terminate a component's server, killing it if it does not go within 10 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def run_in_group(
    command: Sequence[str], *, cwd: Path, timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run a tool that starts jobs of its own (act, gitlab-ci-local) in a new process group,
    and stop the whole group afterwards: on a timeout, and whatever a job left running."""
    process = subprocess.Popen(
        list(command), cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process.pid)
        process.communicate(timeout=30)
        raise
    finally:
        _kill_group(process.pid)
    return subprocess.CompletedProcess(list(command), process.returncode, stdout, stderr)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def wait_until_answering(
    process: subprocess.Popen[bytes], url: str, log_path: Path, name: str, timeout: float
) -> None:
    """Poll `url` until it answers 200; a server that dies meanwhile fails with its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not answer {url} within {timeout} s")
