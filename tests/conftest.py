"""Shared fixtures. Component tests must run in CI: a skip there fails the run."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.components import IN_CI, leftovers, require
from tests.components.hsm import HsmFixture, RemoteHsm, make_hsm, remote_hsm
from tests.components.tsa import MODES, LocalTsa, TsaPki, make_tsa_pki

__all__ = ["require"]

_skipped: list[str] = []
_before_run: set[int] = set()  # the pids alive when the run began: never the run's own


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


def pytest_sessionstart(session: pytest.Session) -> None:
    _before_run.update(leftovers.pids())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    """A test that made a GnuPG home in its tmp_path stops that home's daemons when it ends."""
    yield
    tmp_path = getattr(item, "funcargs", {}).get("tmp_path")
    if isinstance(tmp_path, Path) and shutil.which("gpgconf"):
        leftovers.stop_gpg_daemons(tmp_path)


def _fail_on_leftovers(session: pytest.Session, base: Path) -> None:
    """After every fixture is torn down: a process the run started that still lives fails it."""
    found = leftovers.find(os.getpid(), _before_run, base)
    if not found:
        return
    leftovers.kill(found)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
    print(f"\n{len(found)} process(es) the tests started outlived them (now killed):")
    for leftover in found:
        print(f"  pid {leftover.pid} ({leftover.why}): {leftover.command}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    factory = getattr(session.config, "_tmp_path_factory", None)
    base = factory.getbasetemp() if factory is not None else None
    if base is not None and shutil.which("gpgconf"):
        leftovers.stop_gpg_daemons(base)  # module- and session-scoped homes
    if base is not None:
        _fail_on_leftovers(session, base)
    if IN_CI and _skipped:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print(f"\nCI=true and {len(_skipped)} test(s) were skipped; a skip is a failure here:")
        for nodeid in _skipped:
            print(f"  {nodeid}")
