"""The key behind the service, each through a real `sealgate serve` process and real HTTP:
SoftHSM loaded by the service, the same token behind `p11-kit server` (the service has no
SoftHSM configuration at all, only the socket), and OpenBao's transit engine. Every returned
.p7s passes `openssl cms -verify` and `sealgate verify`; the service holds the credentials."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest

from sealgate.localpki import write_pem
from sealgate.service.config import KeyConfig
from sealgate.service.protocol import API_SIGN
from sealgate.service.store import open_store
from tests.components.cli import openssl_cms_verify, sealgate
from tests.components.hsm import HsmFixture, RemoteHsm
from tests.components.oidc import OidcIssuer, github_claims
from tests.components.openbao import OpenBao, openbao_server
from tests.components.service import (
    ServiceProcess,
    hsm_key,
    service_config,
    sign_body,
    start_service,
    write_service_yml,
)
from tests.components.tsa import LocalTsa, TsaPki


@pytest.fixture(scope="module")
def bao() -> Iterator[OpenBao]:
    with openbao_server() as server:
        yield server


def _serve(
    key: KeyConfig, oidc: OidcIssuer, tmp_path: Path, env: Mapping[str, str]
) -> Iterator[ServiceProcess]:
    config = service_config(oidc, [key], directory=tmp_path)
    path = write_service_yml(tmp_path / "service.yml", config)
    with start_service(path, env=env) as running:
        yield running


def _post(
    running: ServiceProcess, oidc: OidcIssuer, artifacts: list[Path], algorithm: str = "sha256"
) -> httpx.Response:
    return httpx.post(
        running.url + API_SIGN, json=sign_body(artifacts, algorithm=algorithm), timeout=60,
        headers={"Authorization": f"Bearer {oidc.mint(github_claims())}"},
    )  # fmt: skip


def _signed_and_verified(
    running: ServiceProcess,
    oidc: OidcIssuer,
    directory: Path,
    root: Path,
    tsa_roots: Path | None = None,
    algorithm: str = "sha256",
) -> None:
    """Two artifacts made now, signed through the service; each .p7s checked by openssl and by
    the gate, then one byte of an artifact changed: the gate refuses it."""
    directory.mkdir()
    artifacts = []
    for number in range(2):
        artifact = directory / f"pkg-{number}.whl"
        artifact.write_bytes(os.urandom(2048))
        artifacts.append(artifact)
    response = _post(running, oidc, artifacts, algorithm)
    assert response.status_code == 200, response.text
    for artifact, item in zip(artifacts, response.json()["signatures"], strict=True):
        signature = artifact.with_name(artifact.name + ".p7s")
        signature.write_bytes(base64.b64decode(item["p7s"]))
        checked = openssl_cms_verify(signature, artifact, root)
        assert checked.returncode == 0, checked.stderr
    gate: list[str | Path] = ["verify", "--trust-roots", root]
    if tsa_roots is not None:
        gate += ["--tsa-roots", tsa_roots, "--require-timestamp"]
    verified = sealgate(*gate, *artifacts)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    artifacts[1].write_bytes(artifacts[1].read_bytes()[:-1])
    tampered = sealgate(*gate, artifacts[1])
    assert tampered.returncode == 1, tampered.stdout + tampered.stderr


@pytest.mark.slow
def test_softhsm_in_the_service_with_a_tsa(
    hsm: HsmFixture, oidc: OidcIssuer, tsa: LocalTsa, tsa_pki: TsaPki, tmp_path: Path
) -> None:
    key = hsm_key(hsm, tsa=tsa, tsa_pki=tsa_pki, label="ec384")
    for running in _serve(key, oidc, tmp_path, hsm.env):
        _signed_and_verified(running, oidc, tmp_path / "dist", hsm.root_pem, tsa_pki.root_pem,
                             algorithm="sha384")  # fmt: skip


@pytest.mark.slow
def test_p11_kit_remote_hsm_behind_the_service(
    hsm: HsmFixture, remote: RemoteHsm, oidc: OidcIssuer, tmp_path: Path
) -> None:
    key = hsm_key(hsm, uri=remote.uri("rsa3072"), label="rsa3072")
    assert "SOFTHSM2_CONF" not in remote.env  # the token is reachable only through the socket
    for running in _serve(key, oidc, tmp_path, remote.env):
        _signed_and_verified(running, oidc, tmp_path / "dist", hsm.root_pem)
        assert running.terminate() == 0, running.log()
    store = open_store(f"sqlite:///{tmp_path / 'service.db'}")
    try:
        (record,) = store.records()
        assert record.body["event"] == "sign" and len(store.signatures(0)) == 2
    finally:
        store.close()


@pytest.mark.slow
def test_openbao_transit_key_behind_the_service(
    bao: OpenBao, hsm: HsmFixture, oidc: OidcIssuer, tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    name = bao.create_key("ecdsa-p256")
    public = load_pem_public_key(bao.public_key_pem(name, 1).encode())
    cert = write_pem(tmp_path / "transit.pem", hsm.ca.issue(public, "Sealgate transit signer"))  # type: ignore[arg-type]
    key = KeyConfig(name="release", uri=f"hashivault://{name}", certificate=cert,
                    chain=(hsm.chain_pem,), release=True,
                    grants=hsm_key(hsm).grants)  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    for running in _serve(key, oidc, tmp_path, {**env, **bao.env()}):
        _signed_and_verified(running, oidc, tmp_path / "dist", hsm.root_pem)
        assert bao.token not in running.log()
