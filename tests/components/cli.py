"""Running the real `sealgate` command and stock OpenSSL, as a user would."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from sealgate.openssl import cms_verify


def sealgate(
    *args: str | Path, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sealgate", *map(str, args)],
        env=dict(env) if env is not None else None,
        capture_output=True,
        text=True,
        check=False,
    )


def openssl_cms_verify(
    signature: Path, content: Path, ca_file: Path
) -> subprocess.CompletedProcess[str]:
    """The contract's check: `openssl cms -verify -binary -inform DER ... -purpose any`."""
    return cms_verify(signature, content, ca_file)


def flip_byte(path: Path, offset: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
