"""`sealgate serve`'s lifecycle: open everything once (keys, store, verifier, checkpointer), run
uvicorn, and on SIGTERM stop taking requests, write the final checkpoint, close keys and store.

Opening fails at start-up with a typed error (exit 2 for configuration, 3 for an HSM/KMS or
database that does not answer), never at the first request.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

from sealgate.service.app import create_app
from sealgate.service.audit.checkpointer import Checkpointer
from sealgate.service.auth.tokens import TokenVerifier
from sealgate.service.config import ServiceConfig
from sealgate.service.configfile import load_config
from sealgate.service.errors import ServiceConfigError
from sealgate.service.signing import NoteKey, Signer
from sealgate.service.store import open_store
from sealgate.service.store.base import Store

#: Seconds uvicorn waits for requests in flight after SIGTERM before it closes them.
GRACEFUL_TIMEOUT = 20
#: The environment a `--workers` child reads its settings from (config path, DB URL).
_ENV_CONFIG = "SEALGATE_SERVE_CONFIG"
_ENV_DB = "SEALGATE_SERVE_DB"

_log = logging.getLogger("sealgate.service")


@dataclass
class Service:
    """Every long-lived part, opened once: the hot path never opens a key or reads a file."""

    config: ServiceConfig
    store: Store
    signer: Signer
    note_key: NoteKey | None
    checkpointer: Checkpointer
    verifier: TokenVerifier
    app: Any = field(init=False)

    def __post_init__(self) -> None:
        self.app = create_app(self.config, self.store, self.signer, self.verifier,
                              self.checkpointer)  # fmt: skip

    def close(self, *, final_checkpoint: bool = True) -> None:
        """The final checkpoint first (it needs the store and the audit key), then the rest."""
        try:
            if final_checkpoint:
                self.checkpointer.stop()
        finally:
            self.signer.close()
            if self.note_key is not None:
                self.note_key.close()
            self.store.close()


def open_service(
    config: ServiceConfig, db_url: str | None = None, *, start: bool = True
) -> Service:
    """Open the store, the keys, the audit key and the checkpointer (its thread running unless
    `start` is false); close what opened on failure."""
    store = open_store(db_url or config.database)
    opened: list[Callable[[], None]] = [store.close]
    try:
        signer = Signer(config)
        opened.append(signer.close)
        note_key = NoteKey(config.audit.key_uri) if config.audit.key_uri else None
        if note_key is not None:
            opened.append(note_key.close)
        checkpointer = Checkpointer(store, config.audit, note_key)
        service = Service(config, store, signer, note_key, checkpointer,
                          TokenVerifier(config.issuers))  # fmt: skip
        if start:
            checkpointer.start()
        return service
    except BaseException:
        for close in reversed(opened):
            with contextlib.suppress(Exception):
                close()
        raise


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[::1]:8443`) or a ServiceConfigError naming the value."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ServiceConfigError(f"listen address {text[:100]!r} is not HOST:PORT",
                                 code="bad-listen", field="listen")  # fmt: skip
    return host, int(port)


@dataclass(frozen=True)
class ServeOptions:
    host: str
    port: int
    tls_cert: Path | None = None
    tls_key: Path | None = None
    workers: int = 1


def uvicorn_config(app: Any, options: ServeOptions, **extra: Any) -> uvicorn.Config:
    """uvicorn without an access log (URLs and headers stay out of logs) or a Server header."""
    return uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        ssl_certfile=str(options.tls_cert) if options.tls_cert else None,
        ssl_keyfile=str(options.tls_key) if options.tls_key else None,
        access_log=False,
        log_level="warning",
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=GRACEFUL_TIMEOUT,
        **extra,
    )


def serve(service: Service, options: ServeOptions, on_ready: Callable[[], None]) -> None:
    """Run until SIGTERM/SIGINT (uvicorn's handlers), then close the service."""
    server = _Server(uvicorn_config(service.app, options, lifespan="off"), on_ready)
    try:
        server.run()
    finally:
        service.close()


class _Server(uvicorn.Server):
    """uvicorn's server, telling the command when the socket is bound (its one start line)."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """SIGTERM/SIGINT start the graceful stop, and are not raised again afterwards
        (uvicorn's would kill the process before the final checkpoint and closing)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGTERM, signal.SIGINT)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._on_ready()


def serve_workers(config_path: Path, db_url: str | None, options: ServeOptions) -> None:
    """`--workers N`: uvicorn's supervisor forks N processes, each opening its own service
    (keys, store connection) through `worker_app`; all share one database, so one chain."""
    os.environ[_ENV_CONFIG] = str(config_path)
    if db_url:
        os.environ[_ENV_DB] = db_url
    config = uvicorn_config("sealgate.service.server:worker_app", options, factory=True,
                            workers=options.workers, lifespan="on")  # fmt: skip
    sock = config.bind_socket()
    Multiprocess(config, sockets=[sock]).run()


def worker_app() -> Any:
    """One `--workers` child's app: its service opens here and closes at lifespan shutdown."""
    service = open_service(load_config(Path(os.environ[_ENV_CONFIG])), os.environ.get(_ENV_DB))

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        try:
            yield
        finally:
            service.close()

    service.app.router.lifespan_context = lifespan
    return service.app
