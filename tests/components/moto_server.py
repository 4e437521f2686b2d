"""moto's standalone server on 127.0.0.1, for AWS KMS request-flow tests.

moto speaks the KMS API but is not KMS: for `MessageType=DIGEST` it hashes the digest a
second time, and it signs RSA-PSS with the maximum salt length. Tests that use it check
the request flow, never that signatures are real KMS signatures.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.components import require, stop_process, wait_until_answering
from tests.components.openbao import free_port

START_TIMEOUT = 30.0
REGION = "us-east-1"
#: Dummy credentials: moto accepts any, and real AWS must never be reached with them.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


@dataclass
class MotoServer:
    """A running moto server: host:port for `awskms://HOST:PORT/KEY` and the endpoint URL."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def netloc(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.netloc}"

    def reset(self) -> None:
        """Forget every resource (moto's own reset endpoint)."""
        requests.post(f"{self.endpoint_url}/moto-api/reset", timeout=10).raise_for_status()

    def stop(self) -> None:
        stop_process(self.process)


def _wait_ready(server: MotoServer) -> None:
    wait_until_answering(
        server.process,
        f"{server.endpoint_url}/moto-api/",
        server.log_path,
        "moto server",
        START_TIMEOUT,
    )


@contextmanager
def moto_server() -> Iterator[MotoServer]:
    """Start `python -m moto.server` on 127.0.0.1:<free port>; stop it on exit."""
    available = (
        importlib.util.find_spec("moto") is not None
        and importlib.util.find_spec("flask") is not None
    )
    require(available, "moto[server]")
    with tempfile.TemporaryDirectory(prefix="sealgate-moto-") as workdir:
        env = {**os.environ, **CREDENTIALS}
        server: MotoServer | None = None
        problem = ""
        for _ in range(3):  # the free port may be taken between probe and bind
            port = free_port()
            log_path = Path(workdir) / f"moto-{port}.log"
            with log_path.open("wb") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=workdir,
                )
            candidate = MotoServer(port, process, log_path)
            try:
                _wait_ready(candidate)
            except RuntimeError as exc:
                candidate.stop()
                problem = str(exc)
                continue
            server = candidate
            break
        if server is None:
            raise RuntimeError(f"could not start moto on 127.0.0.1: {problem}")
        try:
            yield server
        finally:
            server.stop()
