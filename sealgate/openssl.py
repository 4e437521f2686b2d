"""The stock-OpenSSL check of a Sealgate signature: shown to users, and run by the demo,
the tests and the benchmarks, so all of them hold us to the same command."""

from __future__ import annotations

import subprocess
from pathlib import Path


def cms_verify_command(signature: Path, content: Path, ca_file: Path) -> list[str]:
    return [
        "openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", str(signature),
        "-content", str(content), "-CAfile", str(ca_file), "-purpose", "any", "-out", "/dev/null",
    ]  # fmt: skip


def cms_verify(signature: Path, content: Path, ca_file: Path) -> subprocess.CompletedProcess[str]:
    """Run `openssl cms -verify` on a detached signature; OpenSSL reports on stderr."""
    return subprocess.run(  # noqa: S603 - a fixed command over our own paths
        cms_verify_command(signature, content, ca_file),
        capture_output=True,
        text=True,
        check=False,
    )
