"""A real OpenBao dev server (Vault-compatible transit) for the tests, on 127.0.0.1 only.

Started once per session with a random root token and a free port; each test creates its
own transit keys (unique names), so tests do not depend on each other's state.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tests.components import require, stop_process, wait_until_answering

START_TIMEOUT = 30.0


def free_port() -> int:
    """A TCP port nothing listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class OpenBao:
    """A running dev server: its address, root token, and helpers for transit keys."""

    address: str
    token: str = field(repr=False)
    process: subprocess.Popen[bytes]
    log_path: Path
    _session: requests.Session = field(default_factory=requests.Session, repr=False)

    def api(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        namespace: str | None = None,
    ) -> dict[str, Any]:
        """Call the HTTP API as root; raise with the server's errors on failure."""
        headers = {"X-Vault-Token": self.token}
        if namespace:
            headers["X-Vault-Namespace"] = namespace
        response = self._session.request(
            method, f"{self.address}/v1/{path}", json=body, headers=headers, timeout=30
        )
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: HTTP {response.status_code}: {response.text}")
        reply: dict[str, Any] = response.json() if response.content else {}
        return reply

    def create_key(
        self,
        key_type: str,
        name: str | None = None,
        mount: str = "transit",
        *,
        namespace: str | None = None,
    ) -> str:
        """Create a transit key of `key_type` (e.g. ecdsa-p256, rsa-3072) and return its name."""
        name = name or f"{key_type}-{secrets.token_hex(4)}"
        self.api("POST", f"{mount}/keys/{name}", {"type": key_type}, namespace=namespace)
        return name

    def create_namespace(self, name: str | None = None) -> str:
        """A namespace (OpenBao 2.x has them, as Vault Enterprise does) with transit mounted."""
        name = name or f"ns-{secrets.token_hex(4)}"
        self.api("POST", f"sys/namespaces/{name}", {})
        self.api("POST", "sys/mounts/transit", {"type": "transit"}, namespace=name)
        return name

    def rotate(self, name: str, mount: str = "transit") -> int:
        """Rotate a key; returns the new latest version."""
        self.api("POST", f"{mount}/keys/{name}/rotate")
        return int(self.key_info(name, mount)["latest_version"])

    def key_info(self, name: str, mount: str = "transit") -> dict[str, Any]:
        data: dict[str, Any] = self.api("GET", f"{mount}/keys/{name}")["data"]
        return data

    def public_key_pem(self, name: str, version: int, mount: str = "transit") -> str:
        pem: str = self.key_info(name, mount)["keys"][str(version)]["public_key"]
        return pem

    def env(self) -> dict[str, str]:
        """The variables a client needs to reach this server."""
        return {"VAULT_ADDR": self.address, "VAULT_TOKEN": self.token}

    def stop(self) -> None:
        self._session.close()
        stop_process(self.process)


def _wait_healthy(server: OpenBao) -> None:
    wait_until_answering(
        server.process, f"{server.address}/v1/sys/health", server.log_path, "bao", START_TIMEOUT
    )


@contextmanager
def openbao_server() -> Iterator[OpenBao]:
    """Start `bao server -dev` on 127.0.0.1 with transit enabled; stop it on exit."""
    bao = shutil.which("bao")
    require(bao is not None, "OpenBao (bao)")
    assert bao is not None
    with tempfile.TemporaryDirectory(prefix="sealgate-bao-") as home:
        # A private HOME: the dev server writes a token helper file there.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        env["HOME"] = home
        server: OpenBao | None = None
        problem = ""
        for _ in range(3):  # the free port may be taken between probe and bind
            port, token = free_port(), secrets.token_urlsafe(24)
            log_path = Path(home) / f"bao-{port}.log"
            with log_path.open("wb") as log:
                process = subprocess.Popen(
                    [
                        bao,
                        "server",
                        "-dev",
                        f"-dev-root-token-id={token}",
                        f"-dev-listen-address=127.0.0.1:{port}",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=home,
                )
            candidate = OpenBao(f"http://127.0.0.1:{port}", token, process, log_path)
            try:
                _wait_healthy(candidate)
            except RuntimeError as exc:
                candidate.stop()
                problem = str(exc)
                continue
            server = candidate
            break
        if server is None:
            raise RuntimeError(f"could not start OpenBao on 127.0.0.1: {problem}")
        try:
            server.api("POST", "sys/mounts/transit", {"type": "transit"})
            yield server
        finally:
            server.stop()
