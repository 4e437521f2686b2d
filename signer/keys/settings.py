"""Settings the network backends share, read from the environment."""

from __future__ import annotations

import os
from typing import Final

from signer.errors import ConfigError

DEFAULT_TIMEOUT: Final = 10.0  # seconds per request; SEALGATE_KMS_TIMEOUT overrides


def kms_timeout() -> float:
    """Per-request timeout in seconds: SEALGATE_KMS_TIMEOUT, else DEFAULT_TIMEOUT."""
    raw = os.environ.get("SEALGATE_KMS_TIMEOUT", "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= 600:
        raise ConfigError(
            f"SEALGATE_KMS_TIMEOUT={raw!r} is not a number of seconds between 0 and 600",
            code="bad-setting",
        )
    return value
