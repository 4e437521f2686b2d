"""`sealgate verify` pointed at the wrong thing: what exit code and reason code each case gets.

A missing artifact, a directory, a FIFO or a path the OS refuses is an input error (exit 2):
the gate was given something no signature can fix. An artifact without its `.p7s` is a
verification failure (exit 1, `unsigned`): exactly what the gate exists to block. Every case
runs through the real CLI, with a genuinely signed artifact beside it as the control.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sealgate.localpki import write_pem as pem
from tests.adversarial.test_certificate_attacks import EKU, Issued, Lab, make_root
from tests.components.cli import sealgate


class Release:
    """A release folder with one correctly signed artifact and the gate's trust roots."""

    def __init__(self, tmp: Path) -> None:
        self.lab = Lab(tmp)
        self.lab.artifact.write_bytes(b"release bytes\n" * 100)
        root = make_root("Inputs Root")
        signer: Issued = root.issue("Release signer", eku=[EKU.CODE_SIGNING])
        self.lab.sign(signer)
        self.roots = pem(tmp / "roots.pem", root.cert)
        self.good = self.lab.artifact

    def verify(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return sealgate("verify", "--trust-roots", self.roots, *args)

    def report(self, *args: str | Path) -> tuple[int, dict[str, Any]]:
        result = self.verify("--json", *args)
        return result.returncode, json.loads(result.stdout)


@pytest.fixture
def release(tmp_path: Path) -> Release:
    return Release(tmp_path)


def _entry(report: dict[str, Any], artifact: Path) -> dict[str, Any]:
    entries: list[dict[str, Any]] = report["artifacts"]
    [entry] = [e for e in entries if e["artifact"] == str(artifact)]
    return entry


def _judged(release: Release, artifact: Path) -> tuple[int, dict[str, Any], str]:
    """(exit code, the artifact's --json entry, the human FAILED line) with the good one beside."""
    code, report = release.report(release.good, artifact)
    assert _entry(report, release.good)["verified"] is True  # the control: still verified
    entry = _entry(report, artifact)
    assert entry["verified"] is False
    human = release.verify(release.good, artifact)
    assert human.returncode == code, human.stdout + human.stderr
    assert f"verified {release.good}: " in human.stdout
    [line] = [line for line in human.stdout.splitlines() if line.startswith("FAILED ")]
    assert line.startswith(f"FAILED {artifact}: ")
    return code, entry, line


def test_control_the_signed_artifact_verifies(release: Release) -> None:
    code, report = release.report(release.good)
    assert code == 0
    entry = _entry(report, release.good)
    assert entry["verified"] is True and entry["code"] is None


@pytest.mark.slow
def test_a_missing_signature_is_a_failure_named_unsigned(release: Release) -> None:
    other = release.lab.tmp / "never-signed.bin"
    other.write_bytes(b"not signed\n")
    code, entry, line = _judged(release, other)
    assert code == 1
    assert entry["code"] == "unsigned"
    assert f"unsigned ({other}.p7s missing)" in line


@pytest.mark.slow
def test_a_missing_artifact_is_an_input_error_naming_it(release: Release) -> None:
    missing = release.lab.tmp / "app-2.1.tar.gz"
    code, entry, line = _judged(release, missing)
    assert code == 2
    assert entry["code"] == "artifact-missing"
    assert f"{missing}: no such artifact" in line
    # also when its .p7s is there: a signature of nothing verifies nothing
    (release.lab.tmp / "app-2.1.tar.gz.p7s").write_bytes(release.lab.p7s.read_bytes())
    code, entry, _ = _judged(release, missing)
    assert (code, entry["code"]) == (2, "artifact-missing")


def test_a_dangling_symlink_is_a_missing_artifact_and_says_so(release: Release) -> None:
    link = release.lab.tmp / "latest.tar.gz"
    link.symlink_to(release.lab.tmp / "gone.tar.gz")
    code, entry, line = _judged(release, link)
    assert (code, entry["code"]) == (2, "artifact-missing")
    assert "(a symbolic link to a missing file)" in line


@pytest.mark.slow
def test_a_directory_is_not_a_file_and_never_unsigned(release: Release) -> None:
    folder = release.lab.tmp / "dist"
    folder.mkdir()
    code, entry, line = _judged(release, folder)
    assert code == 2
    assert entry["code"] == "not-a-file"
    assert f"{folder}: is a directory, not a file" in line
    assert "unsigned" not in line
    # a directory with a .p7s beside it is still no artifact
    (release.lab.tmp / "dist.p7s").write_bytes(release.lab.p7s.read_bytes())
    code, entry, _ = _judged(release, folder)
    assert (code, entry["code"]) == (2, "not-a-file")


def test_a_fifo_is_not_a_file_and_does_not_hang(release: Release) -> None:
    fifo = release.lab.tmp / "app.fifo"
    os.mkfifo(fifo)
    (release.lab.tmp / "app.fifo.p7s").write_bytes(release.lab.p7s.read_bytes())
    code, entry, line = _judged(release, fifo)
    assert (code, entry["code"]) == (2, "not-a-file")
    assert f"{fifo}: is a FIFO, not a regular file" in line


def test_a_device_is_not_a_file(release: Release) -> None:
    code, entry, line = _judged(release, Path("/dev/null"))
    assert (code, entry["code"]) == (2, "not-a-file")
    assert "/dev/null: is a character device, not a regular file" in line


def test_a_name_longer_than_the_system_allows_is_a_path_error(release: Release) -> None:
    long_name = release.lab.tmp / ("a" * 300 + ".tar.gz")
    code, entry, line = _judged(release, long_name)
    assert (code, entry["code"]) == (2, "path-error")
    assert str(long_name) in line and "(File name too long)" in line
    assert "Traceback" not in line


def test_an_artifact_whose_signature_name_is_too_long_is_a_path_error(release: Release) -> None:
    """The artifact's name fits, `NAME.p7s` does not: it can never have a signature beside it."""
    name_max = os.pathconf(release.lab.tmp, "PC_NAME_MAX")
    artifact = release.lab.tmp / ("b" * (name_max - 2))
    artifact.write_bytes(b"x")
    code, entry, line = _judged(release, artifact)
    assert (code, entry["code"]) == (2, "path-error")
    assert f"signature {artifact}.p7s: cannot use the path (File name too long)" in line


def test_a_file_used_as_a_folder_is_a_path_error(release: Release) -> None:
    inside_a_file = release.good / "app.bin"  # ENOTDIR
    code, entry, line = _judged(release, inside_a_file)
    assert (code, entry["code"]) == (2, "path-error")
    assert f"{inside_a_file}: cannot use the artifact path (Not a directory)" in line


def test_a_symlink_loop_is_a_path_error(release: Release) -> None:
    loop = release.lab.tmp / "loop.tar.gz"
    loop.symlink_to(loop)
    code, entry, line = _judged(release, loop)
    assert (code, entry["code"]) == (2, "path-error")
    assert "(Too many levels of symbolic links)" in line


def test_a_signature_dir_that_is_a_file_is_a_path_error(release: Release) -> None:
    not_a_dir = release.lab.tmp / "sigs"
    not_a_dir.write_bytes(b"")
    code, report = release.report("--signature-dir", not_a_dir, release.good)
    assert code == 2
    entry = _entry(report, release.good)
    assert entry["code"] == "path-error"
    assert entry["reason"] == (
        f"signature {not_a_dir}/{release.good.name}.p7s: cannot use the path (Not a directory)"
    )


@pytest.mark.slow
def test_the_batch_exit_code_is_the_worst_and_every_artifact_is_reported(
    release: Release,
) -> None:
    """An input error outranks a failure (2 over 1), and neither hides the others' verdicts."""
    unsigned = release.lab.tmp / "never-signed.bin"
    unsigned.write_bytes(b"x")
    missing = release.lab.tmp / "missing.bin"
    code, report = release.report(release.good, unsigned, missing)
    assert code == 2
    assert [e["code"] for e in report["artifacts"]] == [None, "unsigned", "artifact-missing"]
    assert (report["verified"], report["failed"]) == (1, 2)
    code, report = release.report(release.good, unsigned)
    assert code == 1


def _error(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The --json error document of a command that failed as a whole."""
    document: dict[str, Any] = json.loads(result.stdout)["error"]
    return document


@pytest.mark.parametrize("option", ["--trust-roots", "--tsa-roots", "--crl"])
@pytest.mark.parametrize(
    ("shape", "reason"),
    [("long", "(File name too long)"), ("enotdir", "(Not a directory)")],
)
def test_an_os_error_on_a_trust_file_is_a_path_error_naming_it(
    release: Release, option: str, shape: str, reason: str
) -> None:
    bad = (
        release.lab.tmp / ("c" * 300 + ".pem")
        if shape == "long"
        else release.good / "roots.pem"  # a file used as a folder
    )
    args: list[str | Path] = ["verify", "--trust-roots", release.roots]
    if option == "--trust-roots":
        args = ["verify", "--trust-roots", bad]
    else:
        args += [option, bad]
    result = sealgate(*args, release.good)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("sealgate: error: [path-error] ") and str(bad) in line, line
    assert line.endswith(reason), line
    error = _error(sealgate(*args[:1], "--json", *args[1:], release.good))
    assert error["code"] == "path-error" and str(bad) in error["message"]


def test_a_crl_that_is_no_crl_is_an_input_error_with_its_code(release: Release) -> None:
    bogus = release.lab.tmp / "revoked.crl"
    bogus.write_bytes(b"not a CRL\n")
    result = release.verify("--json", "--crl", bogus, release.good)
    assert result.returncode == 2
    error = _error(result)
    assert error["code"] == "malformed-crl" and error["field"] == "crl"
    assert f"CRL {bogus}: not a PEM or DER CRL" in error["message"]


def test_a_symlink_to_a_directory_is_not_a_file(release: Release) -> None:
    folder = release.lab.tmp / "dist"
    folder.mkdir()
    link = release.lab.tmp / "dist-latest"
    link.symlink_to(folder)
    code, entry, line = _judged(release, link)
    assert (code, entry["code"]) == (2, "not-a-file")
    assert "is a directory, not a file" in line


def test_a_signature_that_links_to_nothing_is_unsigned(release: Release) -> None:
    """A dangling `.p7s` link proves nothing: the gate fails (exit 1), as for no `.p7s`."""
    other = release.lab.tmp / "other.bin"
    other.write_bytes(b"other\n")
    (release.lab.tmp / "other.bin.p7s").symlink_to(release.lab.tmp / "gone.p7s")
    code, entry, line = _judged(release, other)
    assert (code, entry["code"]) == (1, "unsigned")
    assert "missing (a symbolic link to a missing file))" in line


def test_a_signature_that_is_a_directory_is_not_a_file(release: Release) -> None:
    other = release.lab.tmp / "other.bin"
    other.write_bytes(b"other\n")
    (release.lab.tmp / "other.bin.p7s").mkdir()
    code, entry, line = _judged(release, other)
    assert (code, entry["code"]) == (2, "not-a-file")
    assert "other.bin.p7s: a directory, not a regular file" in line


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"], ids=["pem", "pem-with-bom"])
def test_a_pem_signature_says_der_is_expected_and_the_conversion_works(
    release: Release, bom: bytes
) -> None:
    der = release.lab.p7s.read_bytes()
    converted = subprocess.run(
        ["openssl", "cms", "-cmsout", "-inform", "DER", "-outform", "PEM"],
        input=der,
        capture_output=True,
        check=True,
    ).stdout
    release.lab.p7s.write_bytes(bom + converted)
    code, report = release.report(release.good)
    entry = _entry(report, release.good)
    assert (code, entry["code"]) == (2, "signature-is-pem")  # unusable as given, as README says
    assert "DER expected, this is PEM" in entry["reason"]
    assert "openssl cms -cmsout -inform PEM -outform DER" in entry["reason"]
    # the control: the conversion the message gives restores a signature that verifies
    back = subprocess.run(
        ["openssl", "cms", "-cmsout", "-inform", "PEM", "-outform", "DER"],
        input=converted,
        capture_output=True,
        check=True,
    ).stdout
    release.lab.p7s.write_bytes(back)
    code, report = release.report(release.good)
    assert code == 0 and _entry(report, release.good)["verified"] is True


def test_a_missing_signature_folder_is_an_input_error_not_unsigned(release: Release) -> None:
    """A typo in --signature-dir must not read as "every artifact is unsigned"."""
    typo = release.lab.tmp / "signaturse"
    code, report = release.report("--signature-dir", typo, release.good)
    entry = _entry(report, release.good)
    assert (code, entry["code"]) == (2, "path-error")
    assert entry["reason"] == f"signature folder {typo}: no such directory"
    # the control: the folder that exists, holding the .p7s, verifies
    folder = release.lab.tmp / "signatures"
    folder.mkdir()
    release.lab.p7s.rename(folder / release.lab.p7s.name)
    code, report = release.report("--signature-dir", folder, release.good)
    assert code == 0 and _entry(report, release.good)["verified"] is True
    # and an empty one that exists means the artifact really is unsigned
    empty = release.lab.tmp / "empty"
    empty.mkdir()
    code, report = release.report("--signature-dir", empty, release.good)
    assert (code, _entry(report, release.good)["code"]) == (1, "unsigned")


def test_a_socket_is_not_a_file(release: Release) -> None:
    path = release.lab.tmp / "s.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        code, entry, line = _judged(release, path)
    assert (code, entry["code"]) == (2, "not-a-file")
    assert f"{path}: is a socket, not a regular file" in line


def test_an_artifact_name_cannot_forge_a_verified_line(release: Release) -> None:
    """A workspace file named "x\nverified app.tar.gz: ..." printed raw would put a
    'verified' line (or a `::workflow-command::`) of its own into the gate's log."""
    forged = release.lab.tmp / "x\nverified app.tar.gz: signer 'Release'\n::warning::ok"
    forged.write_bytes(b"unsigned\n")
    human = release.verify(release.good, forged)
    assert human.returncode == 1, human.stdout + human.stderr
    lines = human.stdout.splitlines()
    assert [line for line in lines if line.startswith("verified ")] == [
        line for line in lines if line.startswith(f"verified {release.good}: ")
    ]
    assert not any(line.startswith("::") for line in lines)
    [failed] = [line for line in lines if line.startswith("FAILED ")]
    assert "x\\nverified app.tar.gz" in failed and failed.endswith("[unsigned]")
