"""Shared fixtures. Component tests must run in CI: a skip there fails the run."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.components import IN_CI, require
from tests.components.hsm import HsmFixture, RemoteHsm, make_hsm, remote_hsm
from tests.components.tsa import MODES, LocalTsa, TsaPki, make_tsa_pki

__all__ = ["require"]

_skipped: list[str] = []


@pytest.fixture(scope="session")
def hsm(tmp_path_factory: pytest.TempPathFactory) -> HsmFixture:
    """One SoftHSM2 token for the run, with EC, RSA and Ed25519 keys and their certificates."""
    return make_hsm(tmp_path_factory.mktemp("softhsm"))


@pytest.fixture(scope="session")
def remote(hsm: HsmFixture, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteHsm]:
    """The same token behind `p11-kit server`, reached through p11-kit-client.so."""
    yield from remote_hsm(hsm, tmp_path_factory.mktemp("p11kit"))


@pytest.fixture(scope="session")
def tsa_pki(tmp_path_factory: pytest.TempPathFactory) -> TsaPki:
    """The local TSAs' own CA (`root_pem` is what --tsa-roots trusts) and their certificates."""
    return make_tsa_pki(tmp_path_factory.mktemp("tsa"))


@pytest.fixture(scope="session")
def tsas(tsa_pki: TsaPki) -> Iterator[dict[str, LocalTsa]]:
    """One running local TSA per mode (good, rsa, ess_v1 and every broken one), side by side."""
    servers: dict[str, LocalTsa] = {mode: LocalTsa(tsa_pki, mode, delay=3.0) for mode in MODES}
    try:
        for server in servers.values():
            server.start()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture(scope="session")
def tsa(tsas: dict[str, LocalTsa]) -> LocalTsa:
    """The good local TSA: `openssl ts -reply` behind HTTP."""
    return tsas["good"]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def _stop_gpg_agents(base: Path) -> None:
    """gpg starts an agent per home directory and leaves it running: stop each one the tests
    made (a socket below the run's temporary folder), so nothing outlives the run."""
    for socket in base.rglob("S.gpg-agent"):
        subprocess.run(
            ["gpgconf", "--homedir", str(socket.parent), "--kill", "gpg-agent"],
            capture_output=True, check=False, timeout=30,
        )  # fmt: skip


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is not None and shutil.which("gpgconf"):
        _stop_gpg_agents(factory.getbasetemp())
    if IN_CI and _skipped:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print(f"\nCI=true and {len(_skipped)} test(s) were skipped; a skip is a failure here:")
        for nodeid in _skipped:
            print(f"  {nodeid}")
