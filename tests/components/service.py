"""The signing service for the tests: in process (the ASGI app behind a TestClient) and as a real
`sealgate serve` subprocess, both over real parts: a SoftHSM key, the local TSA, the local OIDC
issuer, and a SQLite store in the test's temp folder.

`start_service(config_path, ...)` runs `sealgate serve` and is what the client, scale-out and
benchmark tests reuse; `write_service_yml()` turns a ServiceConfig into the file it reads, and
`service_config()` builds the usual one (key `release` on the HSM's EC P-256 key, one GitHub
grant pinned to the claims of `github_claims()`).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import yaml

from sealgate.service.audit.records import AuditRecord
from sealgate.service.config import (
    AuditConfig,
    ClaimMatcher,
    GrantConfig,
    IssuerConfig,
    KeyConfig,
    ServiceConfig,
)
from sealgate.service.protocol import API_HEALTH, API_SIGN
from tests.components.hsm import HsmFixture
from tests.components.oidc import OidcIssuer, github_claims
from tests.components.openbao import free_port
from tests.components.tsa import LocalTsa, TsaPki

if TYPE_CHECKING:
    from starlette.testclient import TestClient

    from sealgate.service.server import Service

KEY = "release"
ISSUER = "test"
START_TIMEOUT = 30.0
#: The claims the default grant pins (the values of `github_claims()`).
PINNED = ("repository_id", "repository_owner_id", "job_workflow_ref", "ref")


def github_grant(name: str = "release-main", issuer: str = ISSUER, **limits: Any) -> GrantConfig:
    """A grant pinned to `github_claims()`: repository and owner ids, workflow, ref."""
    claims = github_claims()
    matchers = tuple(ClaimMatcher(c, "exact", (str(claims[c]),)) for c in PINNED)
    return GrantConfig(name=name, issuer=issuer, claims=matchers, **limits)


def hsm_key(
    hsm: HsmFixture,
    *,
    tsa: LocalTsa | None = None,
    tsa_pki: TsaPki | None = None,
    name: str = KEY,
    label: str = "ec256",
    uri: str | None = None,
    grants: Sequence[GrantConfig] | None = None,
    **fields: Any,
) -> KeyConfig:
    """A key on the session's SoftHSM token (or at `uri`), with its certificate and chain."""
    return KeyConfig(
        name=name,
        uri=uri or hsm.uri(label),
        certificate=hsm.cert_pems[label],
        chain=(hsm.chain_pem,),
        tsa_urls=(tsa.url,) if tsa is not None else (),
        tsa_roots=(tsa_pki.root_pem,) if tsa_pki is not None and tsa is not None else (),
        release=True,
        grants=tuple(grants) if grants is not None else (github_grant(),),
        **fields,
    )


def service_config(
    oidc: OidcIssuer,
    keys: Sequence[KeyConfig],
    *,
    directory: Path,
    audit: AuditConfig | None = None,
    issuer: IssuerConfig | None = None,
) -> ServiceConfig:
    return ServiceConfig(
        source=str(directory / "service.yml"),
        issuers=(issuer or oidc.config(ISSUER, "github"),),
        keys={k.name: k for k in keys},
        audit=audit or AuditConfig(),
        database=f"sqlite:///{directory / 'service.db'}",
    )


def audit_config(
    hsm: HsmFixture, tsa: LocalTsa | None = None, tsa_pki: TsaPki | None = None, **fields: Any
) -> AuditConfig:
    """The audit log signed with the token's Ed25519 key (never a release key)."""
    return AuditConfig(
        key_uri=hsm.uri("ed25519"),
        tsa_urls=(tsa.url,) if tsa is not None else (),
        tsa_roots=(tsa_pki.root_pem,) if tsa is not None and tsa_pki is not None else (),
        **fields,
    )


def sign_body(
    artifacts: Mapping[str, bytes] | Sequence[Path], key: str = KEY, algorithm: str = "sha256"
) -> dict[str, Any]:
    """The request the client sends: each artifact's digest, hashed here, named as given."""
    items = (
        [(p.name, p.read_bytes()) for p in artifacts]
        if not isinstance(artifacts, Mapping)
        else list(artifacts.items())
    )
    return {
        "key": key,
        "artifacts": [
            {
                "name": n,
                "digest_algorithm": algorithm,
                "digest": hashlib.new(algorithm, d).hexdigest(),
            }
            for n, d in items
        ],
    }


# -- in process ------------------------------------------------------------------------------


@dataclass
class InProcessService:
    """The app over opened parts, called through a TestClient (no socket, real everything else)."""

    service: Service
    oidc: OidcIssuer
    client: TestClient

    @property
    def config(self) -> ServiceConfig:
        return self.service.config

    def token(self, **claims: Any) -> str:
        return self.oidc.mint(github_claims(**claims))

    def post(
        self, body: Any, *, token: str | None = None, headers: Mapping[str, str] | None = None
    ) -> httpx.Response:
        """POST /v1/sign: `body` as JSON (bytes as given), `token` as the bearer ("" for none)."""
        sent = dict(headers or {})
        bearer = self.token() if token is None else token
        if bearer:
            sent["Authorization"] = f"Bearer {bearer}"
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        sent.setdefault("Content-Type", "application/json")
        response: httpx.Response = self.client.post(API_SIGN, content=content, headers=sent)
        return response

    def records(self) -> list[AuditRecord]:
        return list(self.service.store.records())

    def signature_count(self) -> int:
        """Rows in the store's signatures table (SQLite), read beside the store."""
        import sqlite3

        path = self.config.database.removeprefix("sqlite:///")
        with sqlite3.connect(path) as db:
            (count,) = db.execute("SELECT count(*) FROM signatures").fetchone()
        return int(count)


@contextmanager
def in_process_service(
    config: ServiceConfig, oidc: OidcIssuer, db_url: str | None = None
) -> Iterator[InProcessService]:
    # imported here: this plugin loads for every test, the service's modules only when used
    from sealgate.service.server import open_service

    with warnings.catch_warnings():  # starlette 1.x would rather have httpx2 (not packaged here)
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
        from starlette.testclient import TestClient

    service = open_service(config, db_url)
    try:
        yield InProcessService(service, oidc, TestClient(service.app))
    finally:
        service.close()


@pytest.fixture
def service(
    hsm: HsmFixture, tsa: LocalTsa, tsa_pki: TsaPki, oidc: OidcIssuer, tmp_path: Path
) -> Iterator[InProcessService]:
    """The app in process: key `release` (SoftHSM EC P-256, timestamped by the local TSA),
    one GitHub grant, a SQLite store and an Ed25519 audit key, all in `tmp_path`."""
    config = service_config(
        oidc,
        [hsm_key(hsm, tsa=tsa, tsa_pki=tsa_pki)],
        directory=tmp_path,
        audit=audit_config(hsm),
    )
    with in_process_service(config, oidc) as running:
        yield running


# -- service.yml ----------------------------------------------------------------------------


def _matcher(matcher: ClaimMatcher) -> Any:
    if matcher.kind == "exact":
        return matcher.values[0]
    if matcher.kind == "one_of":
        return {"one_of": list(matcher.values)}
    return {matcher.kind: matcher.values[0]}


def _tsa(urls: Sequence[str], roots: Sequence[Path]) -> dict[str, Any] | None:
    return {"urls": list(urls), "roots": [str(r) for r in roots]} if urls else None


def service_yml(config: ServiceConfig) -> dict[str, Any]:
    """The YAML document `load_config()` reads back as `config`."""
    keys: dict[str, Any] = {}
    for key in config.keys.values():
        entry: dict[str, Any] = {"uri": key.uri, "release": key.release, "version": key.version,
                                 "pool_size": key.pool_size}  # fmt: skip
        if key.certificate is not None:
            entry["certificate"] = str(key.certificate)
        if key.chain:
            entry["chain"] = [str(p) for p in key.chain]
        if key.tsa_urls:
            entry["tsa"] = _tsa(key.tsa_urls, key.tsa_roots)
        if key.team:
            entry["team"] = key.team
        entry["grants"] = [
            {
                "name": g.name,
                "issuer": g.issuer,
                "claims": {m.claim: _matcher(m) for m in g.claims},
                "max_artifacts": g.max_artifacts,
                "max_requests_per_hour": g.max_requests_per_hour,
                **({"allow_events": list(g.allow_events)} if g.allow_events else {}),
                **({"allow_self_hosted": True} if g.allow_self_hosted else {}),
            }
            for g in key.grants
        ]
        keys[key.name] = entry
    audit: dict[str, Any] = {
        "origin": config.audit.origin,
        "checkpoint_every": config.audit.checkpoint_every,
        "checkpoint_interval": config.audit.checkpoint_interval,
    }
    if config.audit.key_uri:
        audit["key"] = config.audit.key_uri
    if config.audit.tsa_urls:
        audit["tsa"] = _tsa(config.audit.tsa_urls, config.audit.tsa_roots)
    if config.audit.export_dir is not None:
        audit["export_dir"] = str(config.audit.export_dir)
    issuers = [
        {
            "name": i.name,
            "provider": i.provider,
            "issuer": i.issuer,
            "audience": i.audience,
            **({"jwks_url": i.jwks_url} if i.jwks_url else {}),
            "leeway": i.leeway,
            "max_token_age": i.max_token_age,
        }
        for i in config.issuers
    ]
    return {"issuers": issuers, "keys": keys, "audit": audit, "database": config.database,
            "listen": config.listen}  # fmt: skip


def write_service_yml(path: Path, config: ServiceConfig) -> Path:
    path.write_text(yaml.safe_dump(service_yml(config), sort_keys=False))
    return path


# -- a real `sealgate serve` -------------------------------------------------------------------


@dataclass
class ServiceProcess:
    """A running `sealgate serve`: its URL, its process, and the log it writes (stderr)."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    config_path: Path
    env: dict[str, str] = field(repr=False)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait for the graceful stop; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


def serve_command(*arguments: str | Path) -> list[str]:
    return [sys.executable, "-m", "sealgate", "serve", *map(str, arguments)]


@contextmanager
def start_service(
    config_path: Path,
    *,
    db: str | None = None,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    tls: tuple[Path, Path] | None = None,
    ca_file: Path | None = None,
    extra: Sequence[str] = (),
    timeout: float = START_TIMEOUT,
) -> Iterator[ServiceProcess]:
    """`sealgate serve` on 127.0.0.1 and a free port until it answers /v1/health; stopped with
    SIGTERM (then SIGKILL) afterwards, whatever the test did."""
    port = port or free_port()
    arguments: list[str | Path] = ["--listen", f"127.0.0.1:{port}", *extra]
    if db:
        arguments += ["--db", db]
    if tls:
        arguments += ["--tls-cert", tls[0], "--tls-key", tls[1]]
    log_path = config_path.with_name(f"serve-{port}.log")
    environment = dict(os.environ if env is None else env)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            serve_command("--config", config_path, *arguments), stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=environment,
        )  # fmt: skip
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    running = ServiceProcess(url, process, log_path, config_path, environment)
    try:
        _wait_answering(running, ca_file, timeout)
        yield running
    finally:
        try:
            running.terminate(timeout=30)
        except subprocess.TimeoutExpired:
            running.kill()


def _wait_answering(running: ServiceProcess, ca_file: Path | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    verify: Any = ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
    while time.monotonic() < deadline:
        if running.process.poll() is not None:
            raise RuntimeError(
                f"sealgate serve exited with {running.process.returncode}:\n{running.log()}"
            )
        try:
            if httpx.get(running.url + API_HEALTH, timeout=2, verify=verify).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"sealgate serve did not answer within {timeout} s:\n{running.log()}")


@pytest.fixture
def service_server(
    hsm: HsmFixture, tsa: LocalTsa, tsa_pki: TsaPki, oidc: OidcIssuer, tmp_path: Path
) -> Iterator[ServiceProcess]:
    """A real `sealgate serve` over the same parts as `service` (service.yml in `tmp_path`)."""
    config = service_config(
        oidc, [hsm_key(hsm, tsa=tsa, tsa_pki=tsa_pki)], directory=tmp_path, audit=audit_config(hsm)
    )
    path = write_service_yml(tmp_path / "service.yml", config)
    with start_service(path, env=hsm.env) as running:
        yield running


__all__ = [
    "ISSUER",
    "KEY",
    "InProcessService",
    "ServiceProcess",
    "audit_config",
    "github_grant",
    "hsm_key",
    "in_process_service",
    "serve_command",
    "service_config",
    "service_yml",
    "sign_body",
    "start_service",
    "write_service_yml",
]
