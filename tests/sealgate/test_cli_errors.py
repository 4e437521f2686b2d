"""The CLI's error line: `[CODE]`, the flag of the field, OS errors on paths as exit 2, and
`--json`'s error document. Through the real command, as a release engineer meets them."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sealgate.cli import build_parser, error_line, flag_names
from sealgate.errors import SealgateError
from signer.errors import ConfigError
from tests.components.cli import sealgate
from tests.components.gitrepo import make_repo
from tests.components.hsm import HsmFixture

LONG = "x" * 300  # longer than NAME_MAX (255) on every file system we run on


def _one_error(result: subprocess.CompletedProcess[str], exit_code: int, code: str) -> str:
    """The single stderr line, checked for its exit code and reason code, never a traceback."""
    assert result.returncode == exit_code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"sealgate: error: [{code}] "), lines[0]
    return lines[0]


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    path = tmp_path / "a.bin"
    path.write_bytes(b"an artifact\n")
    return path


def test_sign_a_file_name_longer_than_the_system_allows(
    hsm: HsmFixture, tmp_path: Path, artifact: Path
) -> None:
    long = tmp_path / LONG
    result = sealgate("sign", "--key", hsm.uri("ec256"), artifact, long, env=hsm.env)
    line = _one_error(result, 2, "path-error")
    assert LONG in line
    assert not list(tmp_path.glob("*.p7s"))  # the batch wrote nothing


def test_sign_out_dir_that_is_a_file(hsm: HsmFixture, tmp_path: Path, artifact: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the folder should be\n")
    result = sealgate(
        "sign", "--key", hsm.uri("ec256"), "--out-dir", blocker, artifact, env=hsm.env
    )
    line = _one_error(result, 2, "path-error")
    assert f"--out-dir: {blocker}" in line  # the CLI names the flag of the field, once
    assert line.count("--out-dir") == 1
    assert blocker.read_text() == "a file where the folder should be\n"
    assert not list(tmp_path.glob("*.p7s"))


def test_sign_json_prints_the_error_document(
    hsm: HsmFixture, tmp_path: Path, artifact: Path
) -> None:
    result = sealgate(
        "sign", "--json", "--key", hsm.uri("ec256"), artifact, tmp_path / LONG, env=hsm.env
    )
    _one_error(result, 2, "path-error")
    document = json.loads(result.stdout)
    assert document["error"]["code"] == "path-error"
    assert LONG in document["error"]["message"]
    assert set(document["error"]) == {"code", "message", "field"}


def test_verify_a_file_name_longer_than_the_system_allows(hsm: HsmFixture, tmp_path: Path) -> None:
    """Each artifact gets its verdict and code; an unusable path makes the whole run exit 2."""
    unsigned = tmp_path / "unsigned.bin"
    unsigned.write_bytes(b"no signature beside me\n")
    result = sealgate("verify", "--json", "--trust-roots", hsm.root_pem, unsigned, tmp_path / LONG)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    verdicts = json.loads(result.stdout)["artifacts"]
    assert [(v["code"], v["verified"]) for v in verdicts] == [
        ("unsigned", False),
        ("path-error", False),
    ]
    assert LONG in verdicts[1]["reason"]


def test_tree_a_repository_path_longer_than_the_system_allows(tmp_path: Path) -> None:
    result = sealgate("tree", "--json", "--repo", tmp_path / LONG)
    line = _one_error(result, 2, "path-error")
    assert LONG in line
    assert json.loads(result.stdout)["error"]["code"] == "path-error"


def test_an_os_error_in_a_subdirectory_of_a_file_is_exit_2(
    hsm: HsmFixture, tmp_path: Path, artifact: Path
) -> None:
    """ENOTDIR: an artifact 'inside' a file. A usage error naming the path, not a verdict."""
    inside = artifact / "inner.bin"
    result = sealgate("sign", "--key", hsm.uri("ec256"), inside, env=hsm.env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert str(inside) in result.stderr


def test_the_error_line_names_the_flag_of_the_field() -> None:
    parser = build_parser("verify")
    args = parser.parse_args(["verify", "--trust-roots", "r.pem", "a.bin"])
    flags = flag_names(parser, args)
    assert flags["trust_roots"] == "--trust-roots"
    assert flags["tsa_certs"] == "--tsa-certs"
    bare = ConfigError("r.pem: not a certificate", field="trust_roots")
    assert error_line(bare, flags) == "--trust-roots: r.pem: not a certificate"
    named = ConfigError("--trust-roots is required", field="trust_roots")
    assert error_line(named, flags) == "--trust-roots is required"  # never twice
    unknown = SealgateError("something", field="no_such_option")
    assert error_line(unknown, flags) == "something"


def test_the_flag_map_follows_nested_commands_and_aliases() -> None:
    parser = build_parser("keys")
    args = parser.parse_args(["keys", "csr", "pkcs11:token=t;object=k", "--subject", "CN=x"])
    assert flag_names(parser, args)["rsa_padding"] == "--rsa-padding"
    parser = build_parser("run")
    args = parser.parse_args(["run"])
    names = flag_names(parser, args)
    assert names["tsa_urls"] == "--tsa" and names["certificate"] == "--certificate"
    assert isinstance(args, argparse.Namespace)


def test_a_field_error_through_the_cli_shows_code_and_flag(hsm: HsmFixture) -> None:
    """A field-bearing error: the line carries the code and the flag, once."""
    result = sealgate("verify", "--at", "not a time", "--trust-roots", hsm.root_pem, "a")
    line = _one_error(result, 2, "bad-time")
    assert line == "sealgate: error: [bad-time] --at: 'not a time': not an ISO 8601 time"


def test_a_field_error_with_json_carries_the_field(hsm: HsmFixture) -> None:
    result = sealgate("verify", "--json", "--at", "1999-13-40", "--trust-roots", hsm.root_pem, "a")
    _one_error(result, 2, "bad-time")
    assert json.loads(result.stdout)["error"] == {
        "code": "bad-time",
        "field": "at",
        "message": "--at: '1999-13-40': not an ISO 8601 time",
    }


@pytest.mark.parametrize("command", ["sign", "verify"])
def test_a_file_name_that_is_not_utf8_under_a_strict_locale(
    hsm: HsmFixture, tmp_path: Path, command: str
) -> None:
    """Printing the name must not raise UnicodeEncodeError (a traceback, exit 1)."""
    name = os.fsdecode(b"app-\xff.bin")
    artifact = tmp_path / name
    artifact.write_bytes(b"an artifact with a Latin-1 name\n")
    env = {**hsm.env, "PYTHONIOENCODING": "utf-8:strict"}
    args: list[str | Path] = (
        ["sign", "--key", hsm.uri("ec256"), artifact]
        if command == "sign"
        else ["verify", "--trust-roots", hsm.root_pem, artifact]
    )
    result = sealgate(*args, env=env)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == (0 if command == "sign" else 1), result.stderr
    assert "app-\\udcff.bin" in result.stdout


def test_tree_attest_subject_whose_name_is_not_utf8(hsm: HsmFixture, tmp_path: Path) -> None:
    """A VSA subject is a JSON string: the name is refused with its code, never a traceback."""
    repo = make_repo(tmp_path)
    repo.write(".gitignore", "dist/\n")
    repo.commit_ssh(None, "ignore the build output")
    (repo.path / "dist").mkdir()
    (repo.path / "dist" / os.fsdecode(b"app-\xff.bin")).write_bytes(b"a latin-1 name\n")
    out = tmp_path / "tree.vsa.json"
    result = sealgate(
        "tree", "--repo", repo.path, "--allow-untracked", "dist/", "--attest", out,
        "--attest-key", hsm.uri("ec256"), "--attest-subject", "dist/*", env=hsm.env,
    )  # fmt: skip
    line = _one_error(result, 2, "name-not-utf8")
    assert '--attest-subject: "dist/app-\\xff.bin": the name is not UTF-8' in line
    assert not out.exists()


@pytest.mark.parametrize("output", [["--json"], []])
def test_a_reader_that_goes_away_is_no_traceback_and_no_pass(
    hsm: HsmFixture, tmp_path: Path, output: list[str]
) -> None:
    """`sealgate verify --json ... | head`: a closed pipe is exit 141, never 0, never a trace."""
    artifacts = []
    for number in range(3):
        artifacts.append(tmp_path / f"a{number}.bin")
        artifacts[-1].write_bytes(b"unsigned\n")
    command = [sys.executable, "-m", "sealgate", "verify", *output, "--trust-roots",
               str(hsm.root_pem), *map(str, artifacts)]  # fmt: skip
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()  # the reader is gone before the first byte
        stderr = process.stderr.read().decode()
        code = process.wait(timeout=120)
    assert code == 141, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr


def test_verify_reads_the_shared_variables_as_run_does(hsm: HsmFixture, tmp_path: Path) -> None:
    """$SEALGATE_LEVEL and $SEALGATE_AT mean the same to verify as to run: checked, typed."""
    artifact = tmp_path / "a.bin"
    artifact.write_bytes(b"x\n")
    for variable, value, code in (("SEALGATE_LEVEL", "lenient", "bad-setting"),
                                  ("SEALGATE_AT", "yesterday", "bad-time")):  # fmt: skip
        env = {**hsm.env, variable: value}
        result = sealgate("verify", "--trust-roots", hsm.root_pem, artifact, env=env)
        line = _one_error(result, 2, code)
        assert value in line
    control = sealgate(
        "verify", "--trust-roots", hsm.root_pem, artifact, env={**hsm.env, "SEALGATE_LEVEL": ""}
    )
    assert control.returncode == 1 and "unsigned" in control.stdout  # empty means unset
