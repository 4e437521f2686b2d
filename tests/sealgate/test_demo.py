"""First contact: `bash scripts/dev.sh demo`, the lines the demo prints, `demo --serve`."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from sealgate.cli import build_parser
from sealgate.commands.demo import prepare_workdir
from sealgate.errors import SealgateError
from sealgate.softhsm import softhsm_module
from tests.components import require
from tests.components.cli import sealgate

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = Path(sysconfig.get_path("scripts"))  # the venv the tests run from
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"  # a login shell's PATH: no venv on it


def _require_softhsm() -> None:
    require(softhsm_module() is not None, "SoftHSM2")


def _demo(workdir: Path, path: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """The venv's own `sealgate demo`, as the shell that ran dev.sh would start it."""
    env = {**os.environ, "PATH": path}
    return subprocess.run(
        [str(SCRIPTS / "sealgate"), "demo", "--workdir", str(workdir), *extra],
        env=env, capture_output=True, text=True, check=False, timeout=180,
    )  # fmt: skip


def _indented_after(stdout: str, heading: str) -> str:
    lines = stdout.splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith(heading))
    return lines[index + 1].strip()


# --- dev.sh -----------------------------------------------------------------------------


def _fake_tools(tmp_path: Path) -> tuple[Path, dict[str, str], Path]:
    """A venv whose python and sealgate only record how dev.sh called them, and stub
    dpkg-query / npm, so dev.sh runs its real logic with nothing installed."""
    venv, stubs, log = tmp_path / "venv", tmp_path / "stubs", tmp_path / "calls.log"
    (venv / "bin").mkdir(parents=True)
    stubs.mkdir()
    record = f'#!/bin/sh\necho "$(basename "$0") $* PATH=$PATH" >> {shlex.quote(str(log))}\n'
    for path in (venv / "bin" / "python", venv / "bin" / "sealgate", stubs / "npm"):
        path.write_text(record)
        path.chmod(0o755)
    (stubs / "dpkg-query").write_text("#!/bin/sh\necho 'install ok installed'\n")
    (stubs / "dpkg-query").chmod(0o755)
    node = tmp_path / "node" / "node_modules" / ".bin"
    node.mkdir(parents=True)
    (node / "gitlab-ci-local").write_text("#!/bin/sh\n")
    (node / "gitlab-ci-local").chmod(0o755)
    env = {
        "PATH": f"{stubs}:{SYSTEM_PATH}",
        "HOME": str(tmp_path),
        "SEALGATE_VENV": str(venv),
        "SEALGATE_NODE_TOOLS": str(tmp_path / "node"),
    }
    return venv, env, log


@pytest.mark.parametrize(
    ("command", "spec"), [("demo", "-e ."), ("install", "-e .[dev]"), ("test", "-e .[dev]")]
)
def test_dev_sh_installs_the_dev_tools_only_for_the_tests(
    tmp_path: Path, command: str, spec: str
) -> None:
    """The demo needs only the package; install and test keep the whole dev tool set."""
    venv, env, log = _fake_tools(tmp_path)
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "dev.sh"), command],
        env=env, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    [pip] = [c for c in calls if c.startswith("python -m pip install")]
    assert f" {spec} PATH=" in pip, pip
    if command == "demo":
        [demo] = [c for c in calls if c.startswith("sealgate demo")]
        # the demo sees the caller's PATH (without the venv), so it can tell what the user lacks
        assert f"{venv}/bin" not in demo.split("PATH=", 1)[1]
        assert not any(c.startswith("npm") for c in calls)


def test_dev_sh_refuses_an_unknown_command_before_installing(tmp_path: Path) -> None:
    _, env, log = _fake_tools(tmp_path)
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "dev.sh"), "demos"],
        env=env, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "usage:" in result.stderr
    assert not log.exists()


# --- what the demo prints ---------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.component  # the demo starts SoftHSM and its TSA itself
def test_demo_prints_the_activation_line_and_its_commands_work_as_printed(tmp_path: Path) -> None:
    """Off PATH, the demo says how to reach `sealgate`; its verify and sign lines, pasted into
    a fresh shell after that line, work."""
    _require_softhsm()
    workdir = tmp_path / "demo"
    result = _demo(workdir, SYSTEM_PATH)
    assert result.returncode == 0, result.stderr
    activate = _indented_after(result.stdout, "sealgate is not on this shell's PATH")
    assert activate == f". {shlex.quote(str(SCRIPTS / 'activate'))}"
    verify_line = _indented_after(result.stdout, "check it with the gate:")
    sign_line = _indented_after(result.stdout, "sign more artifacts").replace(
        "FILE...", shlex.quote(str(tmp_path / "more.bin"))
    )
    (tmp_path / "more.bin").write_bytes(b"another artifact\n")
    for line in (verify_line, sign_line):
        # a shell that ran dev.sh: no venv on PATH, the printed lines as printed
        bare = subprocess.run(
            ["bash", "-c", line], env={**os.environ, "PATH": SYSTEM_PATH},
            capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
        assert bare.returncode == 127, "the control: without the activation line it is missing"
        pasted = subprocess.run(
            ["bash", "-c", f"{activate} && {line}"], env={**os.environ, "PATH": SYSTEM_PATH},
            capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
        assert pasted.returncode == 0, line + "\n" + pasted.stdout + pasted.stderr
    assert (tmp_path / "more.bin.p7s").is_file()


@pytest.mark.component
def test_demo_on_path_prints_no_activation_line(tmp_path: Path) -> None:
    """The control: with the venv on PATH the commands are bare and nothing else is asked."""
    _require_softhsm()
    result = _demo(tmp_path / "demo", f"{SCRIPTS}:{SYSTEM_PATH}")
    assert result.returncode == 0, result.stderr
    assert "not on this shell's PATH" not in result.stdout
    assert "activate" not in result.stdout
    assert _indented_after(result.stdout, "check it with the gate:").startswith("sealgate verify ")
    assert "run the demo with --serve" in result.stdout


# --- demo --serve -----------------------------------------------------------------------


def _wait_for_line(process: subprocess.Popen[str], prefix: str, timeout: float) -> list[str]:
    """Lines up to the first starting with `prefix` (fails if the demo exits or stalls)."""
    lines: list[str] = []
    found = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith(prefix):
                found.set()
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if not found.wait(timeout):
        process.kill()
        process.wait(timeout=30)
        raise AssertionError(f"no {prefix!r} line within {timeout} s:\n" + "\n".join(lines))
    reader.join(timeout=5)
    return lines


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
@pytest.mark.component
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_demo_serve_keeps_the_tsa_for_stamp_later_until_stopped(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    """The README's "sign now, stamp later" against the demo's TSA; SIGTERM or Ctrl-C stops
    it with exit 0 and the port closed."""
    _require_softhsm()
    workdir = tmp_path / "demo"
    process = subprocess.Popen(
        [sys.executable, "-m", "sealgate", "demo", "--workdir", str(workdir), "--serve"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        lines = _wait_for_line(process, "serving:", timeout=180)
        serving = lines[-1]
        url = serving.split(" at ", 1)[1].split()[0]
        port = urlsplit(url).port
        assert port is not None and _port_open(port)
        roots = workdir / "tsa" / "tsa-root.pem"
        assert f"--tsa-roots {roots}" in serving
        stamp_line = _indented_after("\n".join(lines), "stamp them later")
        assert stamp_line == f"sealgate timestamp --tsa {url} --tsa-roots {roots} FILE.p7s"

        env = {**os.environ, "SOFTHSM2_CONF": str(workdir / "hsm" / "softhsm2.conf")}
        env.pop("SEALGATE_TSA_URLS", None)
        artifact = tmp_path / "later.bin"
        artifact.write_bytes(b"signed now, stamped later\n")
        key = (
            f"pkcs11:token=sealgate-demo;object=release?module-path={softhsm_module()}"
            f"&pin-source=file:{workdir / 'hsm' / 'user.pin'}"
        )
        signed = sealgate("sign", "--key", key, artifact, env=env)
        assert signed.returncode == 0, signed.stderr
        unstamped = sealgate(
            "verify", "--trust-roots", workdir / "root.pem", "--tsa-roots", roots,
            "--require-timestamp", "--json", artifact,
        )  # fmt: skip
        assert unstamped.returncode == 1, "the control: no token yet, the gate refuses"
        stamped = sealgate("timestamp", "--tsa", url, "--tsa-roots", roots, f"{artifact}.p7s")
        assert stamped.returncode == 0, stamped.stderr
        gate = sealgate(
            "verify", "--trust-roots", workdir / "root.pem", "--tsa-roots", roots,
            "--require-timestamp", artifact,
        )  # fmt: skip
        assert gate.returncode == 0, gate.stdout + gate.stderr

        process.send_signal(stop_signal)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
        assert not _port_open(port)
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)


# --- --workdir errors and help ----------------------------------------------------------


def _path_cases(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder\n")
    return {
        "a file": (a_file, "Not a directory"),
        "a missing parent": (tmp_path / "no" / "demo", f"its parent folder {tmp_path / 'no'}"),
        "a name too long": (tmp_path / ("d" * 300), "File name too long"),
        "a path too long": (tmp_path / ("d/" * 3000 + "x"), "File name too long"),
    }


@pytest.mark.parametrize(
    "case", ["a file", "a missing parent", "a name too long", "a path too long"]
)
def test_workdir_the_os_refuses_is_a_path_error(tmp_path: Path, case: str) -> None:
    """Exit 2 with the path and the OS's reason, code path-error, no traceback, nothing made."""
    workdir, reason = _path_cases(tmp_path)[case]
    with pytest.raises(SealgateError) as caught:
        prepare_workdir(workdir.absolute())
    assert caught.value.code == "path-error" and caught.value.field == "workdir"
    assert caught.value.exit_code == 2 and reason in caught.value.message
    assert str(workdir) in caught.value.message
    result = sealgate("demo", "--workdir", workdir)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"[path-error] --workdir {workdir}: " in result.stderr and reason in result.stderr
    assert not (tmp_path / "no").exists()


def test_foreign_workdir_has_its_own_code(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(SealgateError) as caught:
        prepare_workdir(tmp_path)
    assert caught.value.code == "foreign-workdir" and caught.value.field == "workdir"
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    # the control: an empty folder, a new one under an existing parent, an earlier demo's
    for workdir in (tmp_path / "empty", tmp_path / "new"):
        if workdir.name == "empty":
            workdir.mkdir()
        prepare_workdir(workdir)
        (workdir / "token-file").write_text("from the earlier demo")
        prepare_workdir(workdir)
        assert not (workdir / "token-file").exists() and (workdir / ".sealgate-demo").is_file()


def test_every_demo_option_has_help() -> None:
    parser = build_parser("demo")
    [sub] = [a for a in parser._actions if a.dest == "command"]
    demo = sub.choices["demo"]  # type: ignore[index]
    options = [a for a in demo._actions if a.option_strings and a.dest != "help"]
    assert {a.dest for a in options} >= {"workdir", "key_type", "serve"}
    for action in options:
        assert action.help and len(action.help) > 20, action.option_strings
    text = demo.format_help()
    assert "ed25519" in text and "SIGTERM" in text
