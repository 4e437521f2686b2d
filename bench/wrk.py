"""wrk as the load generator of the service benchmark: C and epoll, so at 2,000 requests/s it
takes a few percent of one core, where a Python client would take the core the service needs."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).with_name("service_load.lua")


@dataclass(frozen=True)
class LoadResult:
    """One wrk run: completed requests, the failures by kind, and latency in milliseconds."""

    clients: int
    requests: int
    seconds: float
    status_errors: int
    socket_errors: int
    ran_out: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rate(self) -> float:
        """Successful requests per second: a refused request is not throughput."""
        good = self.requests - self.status_errors
        return good / self.seconds if self.seconds > 0 else 0.0

    @property
    def clean(self) -> bool:
        return self.status_errors == 0 and self.socket_errors == 0 and self.ran_out == 0

    def problems(self) -> str:
        parts = []
        if self.status_errors:
            parts.append(f"{self.status_errors} HTTP errors")
        if self.socket_errors:
            parts.append(f"{self.socket_errors} socket errors")
        if self.ran_out:
            parts.append("ran out of tokens")
        return ", ".join(parts)


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    return found


def run_wrk(
    url: str,
    *,
    body: Path,
    header: str,
    tokens: Path,
    clients: int,
    seconds: float,
    mode: str,
    timeout: float = 5.0,
) -> LoadResult:
    """POST `body` to `url` from `clients` connections for `seconds`; `mode` is the lua script's
    "once" (each token used once, sliced per wrk thread) or "same" (one fixed token)."""
    threads = min(clients, 2)  # two cores: a second wrk thread only where there is load to split
    command = [
        wrk_binary(), "-t", str(threads), "-c", str(clients), "-d", f"{max(1, round(seconds))}s",
        "--timeout", f"{timeout:g}s", "-s", str(SCRIPT), url,
        "--", str(body), header, str(tokens), str(threads), mode,
    ]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}{done.stdout}")
    figures = json.loads(lines[-1].removeprefix("BENCH "))
    return LoadResult(
        clients=clients,
        requests=int(figures["requests"]),
        seconds=figures["duration_us"] / 1e6,
        status_errors=int(figures["status_errors"]),
        socket_errors=int(figures["socket_errors"]),
        ran_out=int(figures["ran_out"]),
        p50_ms=figures["p50_us"] / 1000,
        p99_ms=figures["p99_us"] / 1000,
        max_ms=figures["max_us"] / 1000,
    )
