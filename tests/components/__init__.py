"""Real components the tests start (SoftHSM2, p11-kit, OpenBao, moto, ...), and the CI skip rule."""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require(available: bool, what: str) -> None:
    """Skip a component test locally when `what` is missing; under CI=true fail instead."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true and is missing", pytrace=False)
    pytest.skip(f"{what} is not available")
