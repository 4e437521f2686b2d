"""Shared fixtures. Component tests must run in CI: a skip there fails the run."""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
_skipped: list[str] = []


def require(available: bool, what: str) -> None:
    """Skip a component test locally when `what` is missing; under CI=true fail instead."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true and is missing", pytrace=False)
    pytest.skip(f"{what} is not available")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if IN_CI and _skipped:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print(f"\nCI=true and {len(_skipped)} test(s) were skipped; a skip is a failure here:")
        for nodeid in _skipped:
            print(f"  {nodeid}")
