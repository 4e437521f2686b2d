"""Shared bits of the benchmarks: timing, a scratch folder, a SoftHSM token with a certified key."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sealgate.localpki import LocalCA, write_pem
from sealgate.softhsm import SoftHsmToken
from signer.keys.pkcs11 import Pkcs11Key


def timed(action: Callable[[], object], repeat: int) -> list[float]:
    """Wall times of `repeat` runs of `action`."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return times


def median(times: list[float]) -> float:
    return statistics.median(times)


def run(command: list[str], env: dict[str, str] | None = None) -> None:
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)


def sealgate_command() -> list[str]:
    return [sys.executable, "-m", "sealgate"]


@dataclass
class CertifiedToken:
    token: SoftHsmToken
    uri: str
    root_pem: Path
    env: dict[str, str]


def certified_token(home: Path, key_type: str = "ec-p256") -> CertifiedToken:
    """A SoftHSM token whose key has a certificate (stored on the token) from a throwaway CA."""
    token = SoftHsmToken.create(home / "hsm", label="bench")
    token.generate("release", key_type)
    uri = token.uri("release")
    ca = LocalCA(name="Bench Root CA")
    with Pkcs11Key(uri) as key:
        cert = ca.issue(key.public_key())  # type: ignore[arg-type]
    token.store_certificate("release", cert)
    return CertifiedToken(
        token=token,
        uri=uri,
        root_pem=write_pem(home / "root.pem", ca.root),
        env={**os.environ, **token.env},
    )


def report(title: str, rows: list[tuple[str, str]]) -> None:
    print(f"\n== {title}")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name.ljust(width)}  {value}")
