"""`sealgate serve` as an operator runs it: a real subprocess on a free port over a service.yml,
SoftHSM keys, the local OIDC issuer and a SQLite file. Start, sign, SIGTERM: the final
checkpoint covers every record and nothing is left running; start-up failures are one line."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import itertools
import os
import ssl
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sealgate.service.protocol import API_HEALTH, API_SIGN
from sealgate.service.store import open_store
from tests.components.cli import openssl_cms_verify, sealgate
from tests.components.hsm import HsmFixture
from tests.components.oidc import OidcIssuer, github_claims
from tests.components.openbao import free_port
from tests.components.service import (
    ServiceProcess,
    audit_config,
    hsm_key,
    serve_command,
    service_config,
    sign_body,
    start_service,
    write_service_yml,
)


def _sign(
    running: ServiceProcess, oidc: OidcIssuer, artifact: Path, verify: object = True
) -> bytes:
    response = httpx.post(
        running.url + API_SIGN, json=sign_body([artifact]), timeout=30, verify=verify,  # type: ignore[arg-type]
        headers={"Authorization": f"Bearer {oidc.mint(github_claims())}"},
    )  # fmt: skip
    assert response.status_code == 200, response.text
    return base64.b64decode(response.json()["signatures"][0]["p7s"])


def _config_file(hsm: HsmFixture, oidc: OidcIssuer, tmp_path: Path) -> Path:
    config = service_config(oidc, [hsm_key(hsm)], directory=tmp_path, audit=audit_config(hsm))
    return write_service_yml(tmp_path / "service.yml", config)


@pytest.mark.slow
def test_serve_signs_and_sigterm_writes_the_final_checkpoint(
    service_server: ServiceProcess, hsm: HsmFixture, oidc: OidcIssuer, tmp_path: Path
) -> None:
    artifact = tmp_path / "app.bin"
    artifact.write_bytes(os.urandom(1000))
    tokens = [oidc.mint(github_claims()) for _ in range(2)]
    for token in tokens:
        response = httpx.post(service_server.url + API_SIGN, json=sign_body([artifact]),
                              headers={"Authorization": f"Bearer {token}"}, timeout=30)  # fmt: skip
        assert response.status_code == 200, response.text
    signature = tmp_path / "app.bin.p7s"
    signature.write_bytes(base64.b64decode(response.json()["signatures"][0]["p7s"]))
    checked = openssl_cms_verify(signature, artifact, hsm.root_pem)
    assert checked.returncode == 0, checked.stderr
    refused = httpx.post(service_server.url + API_SIGN, json=sign_body([artifact]),
                         headers={"Authorization": f"Bearer {tokens[0]}"}, timeout=30)  # fmt: skip
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "token-replayed"

    assert service_server.terminate() == 0, service_server.log()
    log = service_server.log()
    assert "listening on http://127.0.0.1:" in log and "stopped" in log
    assert all(token not in log for token in tokens)  # no token in the log, nor a PIN
    assert hsm.token.pin_file.read_text().strip() not in log
    assert "POST" not in log  # no access log
    with pytest.raises(httpx.ConnectError):
        httpx.get(service_server.url + API_HEALTH, timeout=2)

    store = open_store(f"sqlite:///{tmp_path / 'service.db'}")
    try:
        latest = store.latest_checkpoint()
        assert store.size() == 3
        assert latest is not None and latest.tree_size == 3  # the final one covers everything
    finally:
        store.close()


@pytest.mark.slow
def test_serve_check_accepts_a_pinned_config_and_writes_nothing(
    hsm: HsmFixture, oidc: OidcIssuer, tmp_path: Path
) -> None:
    path = _config_file(hsm, oidc, tmp_path)
    checked = sealgate("serve", "--check", "--config", path, env=hsm.env)
    assert checked.returncode == 0, checked.stderr
    assert "ok" in checked.stdout and "empty or absent" in checked.stdout
    assert not (tmp_path / "service.db").exists()  # a check creates no database
    store = open_store(f"sqlite:///{tmp_path / 'service.db'}")
    store.close()
    checked = sealgate("serve", "--check", "--config", path, env=hsm.env)
    assert checked.returncode == 0, checked.stderr
    assert "checkpoints every" in checked.stdout and "0 record(s)" in checked.stdout


@pytest.mark.slow
def test_serve_check_refuses_a_grant_that_pins_too_little_naming_file_and_line(
    hsm: HsmFixture, oidc: OidcIssuer, tmp_path: Path
) -> None:
    key = hsm_key(hsm)
    grant = key.grants[0]
    loose = replace(grant, claims=tuple(m for m in grant.claims if m.claim == "ref"))
    config = service_config(oidc, [replace(key, grants=(loose,))], directory=tmp_path)
    path = write_service_yml(tmp_path / "service.yml", config)
    checked = sealgate("serve", "--check", "--config", path, env=hsm.env)
    assert checked.returncode == 2, checked.stdout + checked.stderr
    lines = checked.stderr.strip().splitlines()
    assert lines and all(line.startswith("sealgate: error: [grant-too-broad]") for line in lines)
    assert all(f"{path} line " in line for line in lines), lines
    assert any("repository" in line for line in lines), lines
    # the same file does not start either: --check's findings are not advice
    started = _serve_once("--config", path, "--listen", f"127.0.0.1:{free_port()}", env=hsm.env)
    assert started.returncode == 2, started.stderr
    assert started.stderr.strip().splitlines() == lines


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "code", "exit_code"),
    [
        ("bad-listen", "bad-listen", 2),
        ("unknown-field", "unknown-config-field", 2),
        ("missing-key", "", 2),
        ("db-down", "store-unavailable", 3),
    ],
)
def test_serve_fails_at_start_with_one_line(
    hsm: HsmFixture, oidc: OidcIssuer, tmp_path: Path, change: str, code: str, exit_code: int
) -> None:
    path = _config_file(hsm, oidc, tmp_path)
    arguments: list[str | Path] = ["--config", path, "--listen", f"127.0.0.1:{free_port()}"]
    if change == "bad-listen":
        arguments[-1] = "127.0.0.1"
    elif change == "unknown-field":
        path.write_text(path.read_text() + "allow_everyone: true\n")
    elif change == "missing-key":
        path.write_text(path.read_text().replace("object=ec256", "object=no-such-key"))
    elif change == "db-down":
        arguments += ["--db", "postgresql://sealgate:s3cret-pw@127.0.0.1:1/audit"]
    started = _serve_once(*arguments, env=hsm.env)
    assert started.returncode == exit_code, started.stdout + started.stderr
    lines = started.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sealgate: error: ["), lines
    if code:
        assert f"[{code}]" in lines[0], lines
    if change == "unknown-field":
        assert "allow_everyone" in lines[0] and "line" in lines[0]
    if change == "missing-key":
        assert "no-such-key" in lines[0]
    assert "s3cret-pw" not in started.stderr + started.stdout


def _serve_once(*arguments: str | Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`sealgate serve` expected to stop by itself at start-up (a timeout fails the test)."""
    return subprocess.run(serve_command(*arguments), env=env, capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip


LOCALHOST = ipaddress.ip_address("127.0.0.1")


def _tls_pair(directory: Path) -> tuple[Path, Path]:
    """A self-signed server certificate for 127.0.0.1, made now (its key only in tmp_path)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sealgate test service")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(LOCALHOST)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path = directory / "tls.pem"
    key_path = directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return cert_path, key_path


@pytest.mark.slow
def test_serve_over_tls_signs_and_sends_hsts(
    hsm: HsmFixture, oidc: OidcIssuer, tmp_path: Path
) -> None:
    path = _config_file(hsm, oidc, tmp_path)
    cert, key = _tls_pair(tmp_path)
    artifact = tmp_path / "a.bin"
    artifact.write_bytes(b"tls")
    with start_service(path, env=hsm.env, tls=(cert, key), ca_file=cert) as running:
        assert running.url.startswith("https://")
        trust = ssl.create_default_context(cafile=str(cert))
        health = httpx.get(running.url + API_HEALTH, verify=trust, timeout=10)
        assert health.headers["strict-transport-security"].startswith("max-age=")
        p7s = _sign(running, oidc, artifact, verify=trust)
        with pytest.raises(httpx.HTTPError):  # plain HTTP to the TLS port is no answer
            httpx.get(running.url.replace("https", "http") + API_HEALTH, timeout=5)
    assert hashlib.sha256(p7s).digest()


@pytest.mark.slow
def test_serve_with_two_workers_keeps_one_chain_and_stops_them_all(
    hsm: HsmFixture, oidc: OidcIssuer, tmp_path: Path
) -> None:
    path = _config_file(hsm, oidc, tmp_path)
    artifact = tmp_path / "a.bin"
    artifact.write_bytes(b"workers")
    with start_service(path, env=hsm.env, extra=["--workers", "2"]) as running:
        for _ in range(6):
            _sign(running, oidc, artifact)
        children = _children(running.process.pid)
        assert len(children) >= 2, children
        assert running.terminate() == 0, running.log()
    deadline = time.monotonic() + 10  # a worker may take a moment to be reaped after its parent
    while [pid for pid in children if _alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in children if _alive(pid)]
    store = open_store(f"sqlite:///{tmp_path / 'service.db'}")
    try:
        records = list(store.records())
        assert [r.index for r in records] == list(range(6))
        assert all(r.prev_hash == p.hash for p, r in itertools.pairwise(records))
    finally:
        store.close()


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_serve_command_line_is_the_module_s() -> None:
    command = serve_command("--config", Path("service.yml"), "--check")
    assert command[1:4] == ["-m", "sealgate", "serve"] and command[-1] == "--check"
