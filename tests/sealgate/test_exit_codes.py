"""Every exit code README's table documents, produced through the real CLI: 0, 1, the listed
causes of 2 (each with its reason code), 3 and 130. (141, a reader that goes away, is in
tests/sealgate/test_cli_errors.py.) A gate user scripts on these codes, so each one is held here."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.components.cli import sealgate
from tests.components.hsm import HsmFixture
from tests.components.tsa import TsaPki

LABEL = "ec256"


def _error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("sealgate: error: ")]
    assert len(lines) == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture
def signed(hsm: HsmFixture, tmp_path: Path) -> Path:
    artifact = tmp_path / "app.bin"
    artifact.write_bytes(b"release\n")
    result = sealgate("sign", "--key", hsm.uri(LABEL), "--cert", hsm.cert_pems[LABEL],
                      "--chain", hsm.chain_pem, artifact, env=hsm.env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return artifact


def test_exit_0_done_and_verified(hsm: HsmFixture, signed: Path) -> None:
    result = sealgate("verify", "--trust-roots", hsm.root_pem, signed)
    assert result.returncode == 0, result.stdout + result.stderr


def test_exit_1_the_gate_blocks(hsm: HsmFixture, signed: Path, tmp_path: Path) -> None:
    signed.write_bytes(b"tampered\n")
    tampered = sealgate("verify", "--trust-roots", hsm.root_pem, signed)
    assert tampered.returncode == 1, tampered.stdout + tampered.stderr
    unsigned = tmp_path / "other.bin"
    unsigned.write_bytes(b"never signed\n")
    missing_p7s = sealgate("verify", "--json", "--trust-roots", hsm.root_pem, unsigned)
    assert missing_p7s.returncode == 1 and '"code": "unsigned"' in missing_p7s.stdout


#: README's causes of exit 2, each as (reason code, a way to produce it from tmp_path and hsm).
Case = Callable[[Path, HsmFixture], list[str | Path]]


def _missing_artifact(tmp: Path, hsm: HsmFixture) -> list[str | Path]:
    return ["verify", "--trust-roots", hsm.root_pem, tmp / "no-such.bin"]


def _directory(tmp: Path, hsm: HsmFixture) -> list[str | Path]:
    (tmp / "folder").mkdir()
    return ["verify", "--trust-roots", hsm.root_pem, tmp / "folder"]


def _fifo(tmp: Path, hsm: HsmFixture) -> list[str | Path]:
    os.mkfifo(tmp / "roots.pem")
    return ["verify", "--trust-roots", tmp / "roots.pem", tmp / "x.bin"]


def _name_too_long(tmp: Path, hsm: HsmFixture) -> list[str | Path]:
    return ["verify", "--trust-roots", hsm.root_pem, tmp / ("n" * 300)]


def _bad_identity(tmp: Path, hsm: HsmFixture) -> list[str | Path]:
    (tmp / "x.bin").write_bytes(b"x")
    return ["verify", "--trust-roots", hsm.root_pem, "--identity", "no-equals-sign", tmp / "x.bin"]


def _unknown_scheme(tmp: Path, hsm: HsmFixture) -> list[str | Path]:
    (tmp / "x.bin").write_bytes(b"x")
    return ["sign", "--key", "file:///etc/key.pem", tmp / "x.bin"]


def _not_a_module(tmp: Path, hsm: HsmFixture) -> list[str | Path]:
    (tmp / "x.bin").write_bytes(b"x")
    (tmp / "lib.so").write_text("not a library\n")
    return [
        "sign",
        "--key",
        f"pkcs11:token=t;object=k?module-path={tmp / 'lib.so'}&pin-value=1",
        tmp / "x.bin",
    ]


def _out_dir_parent_missing(tmp: Path, hsm: HsmFixture) -> list[str | Path]:
    (tmp / "x.bin").write_bytes(b"x")
    return ["sign", "--key", hsm.uri(LABEL), "--out-dir", tmp / "no" / "such", tmp / "x.bin"]


def _not_a_repository(tmp: Path, hsm: HsmFixture) -> list[str | Path]:
    (tmp / "plain").mkdir()
    return ["tree", "--repo", tmp / "plain"]


def _policy_invalid(tmp: Path, hsm: HsmFixture) -> list[str | Path]:
    (tmp / "policy.yml").write_text("version: 1\nsigners: [\n")
    return ["policy", "check", tmp / "policy.yml"]


EXIT_2 = {
    "artifact-missing": _missing_artifact,
    "not-a-file": _directory,
    "path-error": _name_too_long,
    "identity-malformed": _bad_identity,
    "unknown-key-scheme": _unknown_scheme,
    "not-a-pkcs11-module": _not_a_module,
    "not-a-repository": _not_a_repository,
    "yaml-invalid": _policy_invalid,
}


#: Per-artifact verdicts of `verify`: the code is in each entry of `--json`, not an error line.
VERDICTS = {"artifact-missing", "not-a-file", "path-error"}


@pytest.mark.parametrize("code", sorted(EXIT_2))
def test_exit_2_names_the_input_and_its_reason(code: str, tmp_path: Path, hsm: HsmFixture) -> None:
    args = EXIT_2[code](tmp_path, hsm)
    if code in VERDICTS:
        args = [args[0], "--json", *args[1:]]
    result = sealgate(*args, env=hsm.env)
    assert result.returncode == 2, result.stdout + result.stderr
    if code in VERDICTS:
        (entry,) = json.loads(result.stdout)["artifacts"]
        assert entry["code"] == code and entry["verified"] is False, entry
    else:
        assert _error_line(result).startswith(f"sealgate: error: [{code}] ")


def test_exit_2_for_a_fifo_and_a_missing_out_dir_parent(tmp_path: Path, hsm: HsmFixture) -> None:
    fifo = sealgate(*_fifo(tmp_path, hsm))
    assert fifo.returncode == 2 and "roots.pem" in _error_line(fifo)
    nested = sealgate(*_out_dir_parent_missing(tmp_path, hsm), env=hsm.env)
    assert nested.returncode == 2 and "[path-error]" in _error_line(nested)
    assert str(tmp_path / "no") in _error_line(nested)


@dataclass
class SilentTsa:
    url: str
    accepted: list[socket.socket]


@pytest.fixture
def silent_tsa() -> Iterator[SilentTsa]:
    """A TSA that accepts connections and never answers: the client's budget must end it."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield SilentTsa(f"http://127.0.0.1:{server.getsockname()[1]}/", accepted)
    finally:
        stop.set()
        thread.join(timeout=5)
        for connection in accepted:
            connection.close()
        server.close()


def test_exit_3_no_tsa_answers(signed: Path, silent_tsa: SilentTsa, tsa_pki: TsaPki) -> None:
    result = sealgate("timestamp", "--tsa", silent_tsa.url, "--tsa-roots", tsa_pki.root_pem,
                      "--tsa-timeout", "1", "--tsa-retries", "0",
                      signed.with_name("app.bin.p7s"))  # fmt: skip
    assert result.returncode == 3, result.stdout + result.stderr
    assert _error_line(result).startswith("sealgate: error: [tsa-unreachable] ")
    assert silent_tsa.accepted  # the request did go out


def test_exit_130_interrupted_and_nothing_written(
    signed: Path, silent_tsa: SilentTsa, tsa_pki: TsaPki
) -> None:
    signature = signed.with_name("app.bin.p7s")
    before = signature.read_bytes()
    command = [sys.executable, "-m", "sealgate", "timestamp", "--tsa", silent_tsa.url,
               "--tsa-roots", str(tsa_pki.root_pem), "--tsa-timeout", "20", str(signature)]  # fmt: skip
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as run:
        assert run.stderr is not None
        # Interrupt once the request is out (the silent TSA has accepted its connection).
        waited = threading.Event()
        while not silent_tsa.accepted and run.poll() is None:
            waited.wait(0.05)
        assert run.poll() is None, run.stderr.read()
        run.send_signal(signal.SIGINT)
        stderr = run.stderr.read()
        code = run.wait(timeout=120)
    assert code == 130, stderr
    assert "interrupted; nothing was written" in stderr and "Traceback" not in stderr
    assert signature.read_bytes() == before
    assert sorted(p.name for p in signed.parent.iterdir()) == ["app.bin", "app.bin.p7s"]
