"""Every input is hostile: FIFOs and devices, odd YAML and JSON, archive tricks, and secrets.

Each case runs the real `sealgate` command with a timeout (a hang fails the test), and asserts
the exit code and the reason, naming the file and, for YAML, the line.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

import integrity.archive_diff as archive_diff
from signer.dsse import IN_TOTO_PAYLOAD_TYPE, PAE, open_envelope
from signer.errors import ConfigError, VerificationError
from signer.keys.awskms import AwsKmsKey
from tests.components.gitrepo import Repo, SshUser, make_repo, ssh_user
from tests.components.hsm import HsmFixture
from tests.components.openbao import OpenBao, free_port, openbao_server
from tests.components.tsa import LocalTsa, TsaPki

TIMEOUT = 180  # seconds: a command that blocks on a FIFO or reads /dev/zero never gets here


def _sealgate(
    *args: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [sys.executable, "-m", "sealgate", *map(str, args)],
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            check=False,
            timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"sealgate {' '.join(map(str, args))} hung for {TIMEOUT} s")


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe.yml"
    os.mkfifo(path)
    return path


@pytest.fixture
def alice(tmp_path: Path) -> SshUser:
    keys = tmp_path / "keys"
    keys.mkdir()
    return ssh_user(keys, "alice")


def _policy(alice: SshUser, extra: str = "") -> str:
    return (
        "version: 1\nsigners:\n  - name: alice\n    roles: [developer, policy-admin]\n"
        f'    ssh: ["{alice.public_line}"]\n{extra}'
    )


def _public_pem(tmp_path: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = tmp_path / "trusted.pem"
    pem.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pem


# -- 1. regular files under a cap ------------------------------------------------------------


@pytest.mark.parametrize("special", ["fifo", "/dev/zero"])
@pytest.mark.parametrize(
    "command",
    [
        ["policy", "check", "{f}"],
        ["policy", "import", "--allowed-signers", "{f}"],
        ["policy", "import", "--openpgp-policy", "{f}"],
        ["attest", "verify", "{f}", "--public-key", "{pem}"],
        ["attest", "verify", "{envelope}", "--public-key", "{f}"],
    ],
    ids=["policy-check", "allowed-signers", "sequoia-toml", "envelope", "public-key-pem"],
)
def test_a_fifo_or_device_as_a_data_file_is_refused_at_once(
    tmp_path: Path, fifo: Path, special: str, command: list[str]
) -> None:
    target = fifo if special == "fifo" else Path(special)
    envelope = tmp_path / "envelope.json"
    envelope.write_text('{"payloadType": "x", "payload": "", "signatures": []}')
    values = {"f": str(target), "pem": str(_public_pem(tmp_path)), "envelope": str(envelope)}
    result = _sealgate(*(part.format(**values) for part in command))
    assert result.returncode == 2, result.stdout + result.stderr
    assert str(target) in result.stderr
    kind = "FIFO" if special == "fifo" else "character device"
    assert kind in result.stderr or "not a regular file" in result.stderr, result.stderr


def test_a_fifo_key_file_beside_the_policy_is_refused(tmp_path: Path, alice: SshUser) -> None:
    os.mkfifo(tmp_path / "release.asc")
    policy = tmp_path / "policy.yml"
    policy.write_text(_policy(alice) + '  - name: release\n    openpgp: ["release.asc"]\n')
    result = _sealgate("policy", "check", policy)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{policy} line 6" in result.stderr
    assert "'release.asc'" in result.stderr and "not a regular file" in result.stderr


def test_an_oversized_policy_is_refused(tmp_path: Path, alice: SshUser) -> None:
    policy = tmp_path / "policy.yml"
    policy.write_text(_policy(alice) + "#" * (2 << 20) + "\n")
    result = _sealgate("policy", "check", policy)
    assert result.returncode == 2
    assert f"{policy}: larger than the" in result.stderr


def test_a_fifo_as_sealgate_yml_is_refused(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    os.mkfifo(repo.path / "sealgate.yml")
    result = _sealgate("run", "--repo", repo.path, "--report", tmp_path / "r.json")
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"settings file {repo.path / 'sealgate.yml'}: a FIFO" in result.stderr


def test_the_honest_policy_still_checks(tmp_path: Path, alice: SshUser) -> None:
    policy = tmp_path / "policy.yml"
    policy.write_text(
        _policy(alice, 'rules:\n  - paths: ["deploy/**"]\n    require: policy-admin\n')
    )
    result = _sealgate("policy", "check", policy)
    assert result.returncode == 0, result.stderr
    assert "valid policy" in result.stdout and "deploy/**" in result.stdout


# -- 2. total parsers: the policy loader ----------------------------------------------------

_SIGNER = '  - name: alice\n    ssh: ["{key}"]\n'
HOSTILE_POLICIES = {
    "deep-nesting": ("version: 1\nsigners: " + "[" * 3000 + "]" * 3000 + "\n", 2, "nested deeper"),
    "billion-laughs": (
        'version: 1\na: &a ["lol", "lol"]\nb: &b [*a, *a, *a]\nc: [*b, *b, *b]\n',
        3,
        "aliases (*name) are not allowed",
    ),
    "int-key": ("version: 1\n1: x\nsigners:\n" + _SIGNER, 2, "keys must be plain strings"),
    "list-key": ("version: 1\n[a]: b\n", 2, "keys must be plain strings"),
    "mapping-key": ("version: 1\n? {a: 1}\n: x\n", 2, "keys must be plain strings"),
    "bool-key": ("version: 1\nyes: x\n", 2, "keys must be plain strings, not !!bool"),
    "null-key": ("version: 1\n~: x\n", 2, "keys must be plain strings"),
    "user-line-key": ("version: 1\n__line__: 99\nsigners:\n" + _SIGNER, 2, "'__line__'"),
    "signer-line-key": (
        "version: 1\nsigners:\n  - name: alice\n    __line__: 1\n    ssh: []\n",
        4,
        "unknown field '__line__'",
    ),
    "duplicate-top-key": (
        "version: 1\nsigners:\n" + _SIGNER + "signers:\n" + _SIGNER,
        5,
        "duplicate key 'signers' (first on line 2)",
    ),
    "duplicate-signer-key": (
        "version: 1\nsigners:\n  - name: alice\n    roles: [developer]\n    roles: [policy-admin]\n"
        '    ssh: ["{key}"]\n',
        5,
        "duplicate key 'roles' (first on line 4)",
    ),
    "merge-key": ("version: 1\n<<: {signers: []}\n", 2, "merge key"),
    "version-true": ("version: true\nsigners:\n" + _SIGNER, 1, "`version: 1` is required"),
    "version-string": ('version: "1"\nsigners:\n' + _SIGNER, 1, "`version: 1` is required"),
    "name-int": ("version: 1\nsigners:\n  - name: 7\n    ssh: []\n", 3, "needs a `name`"),
    "roles-bool": (
        'version: 1\nsigners:\n  - name: a\n    roles: [true]\n    ssh: ["{key}"]\n',
        4,
        "`roles` must be a list of strings",
    ),
    "ssh-int": ("version: 1\nsigners:\n  - name: a\n    ssh: [1]\n", 3, "`ssh` must be a list"),
    "signers-mapping": ("version: 1\nsigners: {a: 1}\n", 2, "`signers` must be a non-empty list"),
    "set-tag": ("version: 1\nsigners: !!set {a}\n", 2, "!!set is not allowed"),
    "bad-timestamp": ("version: 1\nsigners:\n  - name: !!timestamp 2026-13-45\n", 3, "unreadable"),
    "huge-int": ("version: " + "9" * 6000 + "\n", 1, "unreadable YAML value"),
    "huge-string": ("version: 1\nsigners:\n  - name: " + "a" * 300_000 + "\n", 3, "longer than"),
    "long-name": ("version: 1\nsigners:\n  - name: " + "a" * 300 + "\n", 3, "at most 256"),
    "control-name": ('version: 1\nsigners:\n  - name: "a\\u0007b"\n', 3, "printable"),
    "surrogate-name": ('version: 1\nsigners:\n  - name: "\\ud800"\n', 3, "unpaired surrogate"),
    "unknown-rule-field": (
        "version: 1\nsigners:\n" + _SIGNER + 'rules:\n  - paths: ["x"]\n    require: developer\n'
        "    requires: policy-admin\n",
        8,
        "unknown rule field 'requires'",
    ),
    "nul-byte": ("version: 1\x00\n", 0, "not valid YAML (character #x0"),
    "not-utf8": ("version: 1\n# \udcff\n", 0, "not valid YAML"),
    "document-list": ("- version: 1\n", 1, "a policy is a mapping"),
    "two-documents": ("version: 1\n---\nversion: 2\n", 2, "not valid YAML"),
    "python-tag": ("version: !!python/object:os.system [id]\n", 1, "not valid YAML"),
    "too-many-nodes": ("version: 1\nx: [" + "a," * 120_000 + "]\n", 0, "more than 100000 YAML"),
    "dev-zero-key-file": (
        'version: 1\nsigners:\n  - name: a\n    openpgp: ["/dev/zero"]\n',
        3,
        "key file '/dev/zero': outside the policy's folder",
    ),
    "escaping-key-file": (
        'version: 1\nsigners:\n  - name: a\n    openpgp: ["../../../../etc/passwd"]\n',
        3,
        "key file '../../../../etc/passwd': outside the policy's folder",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE_POLICIES))
def test_hostile_policy_yaml_is_exit_2_with_file_and_line(
    tmp_path: Path, alice: SshUser, case: str
) -> None:
    text, line, reason = HOSTILE_POLICIES[case]
    policy = tmp_path / "policy.yml"
    policy.write_bytes(text.replace("{key}", alice.public_line).encode("utf-8", "surrogateescape"))
    result = _sealgate("policy", "check", policy)
    assert result.returncode == 2, result.stdout + result.stderr
    where = rf"{re.escape(str(policy))} line {line}[: ]" if line else rf"{re.escape(str(policy))}:"
    assert re.search(where, result.stderr), result.stderr
    assert reason in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_the_line_loader_cannot_be_confused_by_a_user_line_key(
    tmp_path: Path, alice: SshUser
) -> None:
    """Lines live outside the mapping: a `__line__` key is refused, and never shifts a report."""
    policy = tmp_path / "policy.yml"
    policy.write_text(
        "version: 1\nsigners:\n  - name: alice\n    __line__: 1\n    roles: [developer]\n"
        f'    ssh: ["{alice.public_line}"]\n'
    )
    result = _sealgate("policy", "check", policy)
    assert result.returncode == 2
    assert f"{policy} line 4: signer 'alice' has unknown field '__line__'" in result.stderr


# -- 2b. sealgate.yml ------------------------------------------------------------------------

HOSTILE_SETTINGS = {
    "duplicate": ("key: a\nkey: b\n", 2, "duplicate key 'key' (first on line 1)"),
    "alias": ("artifacts: &a [x]\noutputs: *a\n", 2, "aliases"),
    "int-key": ("1: x\n", 1, "keys must be plain strings"),
    "nested-list": ("artifacts: [[a, b]]\n", 1, "expected a string or a list of strings"),
    "mapping-value": ("build_command: {a: 1}\n", 1, "expected a string or a list of strings"),
    "alias-twice": ("tsa: [http://a/]\ntsa_urls: [http://b/]\n", 2, "a second time"),
    "unknown": ("\n\nkye: x\n", 3, "unknown setting 'kye'"),
    "deep": ("artifacts: " + "[" * 2000 + "]" * 2000 + "\n", 1, "nested deeper"),
}


@pytest.mark.parametrize("case", list(HOSTILE_SETTINGS))
def test_hostile_sealgate_yml_is_exit_2_with_file_and_line(tmp_path: Path, case: str) -> None:
    text, line, reason = HOSTILE_SETTINGS[case]
    repo = make_repo(tmp_path)
    (repo.path / "sealgate.yml").write_text(text)
    result = _sealgate("run", "--repo", repo.path, "--report", tmp_path / "r.json")
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{repo.path / 'sealgate.yml'} line {line}" in result.stderr, result.stderr
    assert reason in result.stderr
    assert "Traceback" not in result.stderr


# -- 2c. DSSE envelopes ----------------------------------------------------------------------

HOSTILE_ENVELOPES = {
    "duplicate-field": (
        '{"payloadType": "application/vnd.in-toto+json", "payloadType": "x", "payload": "", '
        '"signatures": []}',
        "duplicate field 'payloadType'",
    ),
    "nan": ('{"payloadType": NaN, "payload": "", "signatures": []}', "NaN, which is not JSON"),
    "infinity": ('{"payloadType": "x", "payload": "", "signatures": [-Infinity]}', "Infinity"),
    "deep": ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", "not a JSON DSSE envelope"),
    "huge-number": ('{"payloadType": ' + "9" * 100_000 + "}", "not a JSON DSSE envelope"),
    "array": ("[]", "expected an object"),
    "not-utf8": ('{"payloadType": "\xff"}', "not a JSON DSSE envelope"),
}


@pytest.mark.parametrize("case", list(HOSTILE_ENVELOPES))
def test_hostile_envelope_json_is_exit_2_naming_the_file(tmp_path: Path, case: str) -> None:
    text, reason = HOSTILE_ENVELOPES[case]
    envelope = tmp_path / "vsa.json"
    envelope.write_bytes(text.encode("latin-1"))
    result = _sealgate("attest", "verify", envelope, "--public-key", _public_pem(tmp_path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{envelope}: " in result.stderr and reason in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_surrogate_payload_type_is_a_verification_failure_not_a_crash() -> None:
    """JSON may spell a lone surrogate; PAE needs UTF-8: a typed refusal, not UnicodeEncodeError."""
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    envelope = '{"payloadType": "\\ud800", "payload": "", "signatures": [{"sig": ""}]}'
    with pytest.raises(VerificationError, match="payloadType is not valid Unicode"):
        open_envelope(envelope, [key])


def test_a_pem_with_a_private_key_is_refused(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = tmp_path / "private.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    envelope = tmp_path / "vsa.json"
    envelope.write_text('{"payloadType": "x", "payload": "", "signatures": []}')
    result = _sealgate("attest", "verify", envelope, "--public-key", pem)
    assert result.returncode == 2
    assert f"{pem}: holds a private key" in result.stderr


# -- 2d. archives ----------------------------------------------------------------------------


def _tar(path: Path, members: list[tuple[str, bytes, str]]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
                continue
            info.type = {"chr": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE,
                         "sym": tarfile.SYMTYPE, "lnk": tarfile.LNKTYPE}[kind]  # fmt: skip
            if kind == "chr":
                info.devmajor, info.devminor = 1, 5
            if kind in ("sym", "lnk"):
                info.linkname = data.decode()
            archive.addfile(info)
    return path


def test_tar_members_that_escape_or_are_devices_are_reported_and_never_extracted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = _tar(tmp_path / "app.tar.gz", [("app/main.py", b"print(1)\n", "file")])
    rebuilt = _tar(
        tmp_path / "rebuilt.tar.gz",
        [
            ("app/main.py", b"print(1)\n", "file"),
            ("/etc/cron.d/evil", b"* * * * * root sh\n", "file"),
            ("../../outside", b"x", "file"),
            ("dev/zero", b"", "chr"),
            ("app/pipe", b"", "fifo"),
            ("app/link", b"/etc/shadow", "sym"),
            ("app/hard", b"../../../etc/passwd", "lnk"),
            ("app/x\nadded app/forged (size 0)", b"", "file"),
        ],
    )
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    lines = archive_diff.explain(expected, rebuilt, limit=100)
    assert "unsafe member in rebuilt: /etc/cron.d/evil: absolute path" in lines
    assert "unsafe member in rebuilt: ../../outside: `..` in its path" in lines
    assert "unsafe member in rebuilt: dev/zero: a special file (chardev), not extracted" in lines
    assert "unsafe member in rebuilt: app/pipe: a special file (fifo), not extracted" in lines
    assert "unsafe member in rebuilt: app/link: links outside the archive (/etc/shadow)" in lines
    assert any(
        line.startswith("unsafe member in rebuilt: app/hard: links outside") for line in lines
    )
    assert not any(line.startswith("added app/forged") for line in lines)  # no forged line
    assert any(line.startswith("added app/x\\nadded app/forged") for line in lines)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing was extracted
    assert not Path("/etc/cron.d/evil").exists()


def test_an_honest_tar_difference_has_no_warnings(tmp_path: Path) -> None:
    expected = _tar(tmp_path / "a.tar.gz", [("app/main.py", b"1\n", "file")])
    rebuilt = _tar(tmp_path / "b.tar.gz", [("app/main.py", b"2\n", "file")])
    lines = archive_diff.explain(expected, rebuilt)
    assert not any("unsafe" in line for line in lines)
    assert lines[0].startswith("differs app/main.py: size 2 -> 2, sha256 ")


def test_zip_and_gzip_bombs_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Read at most MAX_UNPACKED bytes, then compare the bytes instead (limit lowered to 1 MiB)."""
    monkeypatch.setattr(archive_diff, "MAX_UNPACKED", 1 << 20)
    small_zip = tmp_path / "a.zip"
    with zipfile.ZipFile(small_zip, "w") as archive:
        archive.writestr("a", b"1")
    bomb_zip = tmp_path / "b.zip"
    with zipfile.ZipFile(bomb_zip, "w", zipfile.ZIP_DEFLATED) as archive:
        for n in range(4):
            archive.writestr(f"zeros{n}", b"\0" * (1 << 20))
    lines = archive_diff.explain(small_zip, bomb_zip)
    assert lines[0] == (
        f"cannot read as zip (unpacks to more than {1 << 20} bytes); comparing bytes"
    )
    assert lines[1].startswith("first difference at byte offset")
    small_tar = _tar(tmp_path / "a.tar.gz", [("a", b"1", "file")])
    bomb_tar = _tar(tmp_path / "b.tar.gz", [("zeros", b"\0" * (4 << 20), "file")])
    lines = archive_diff.explain(small_tar, bomb_tar)
    assert lines[0] == f"cannot read as tar (unpacks to more than {1 << 20} bytes); comparing bytes"


@pytest.mark.parametrize(
    "damage",
    ["truncate", "garbage", "encrypted-flag", "unknown-compression"],
)
def test_malformed_zips_fall_back_to_a_byte_comparison(tmp_path: Path, damage: str) -> None:
    good = tmp_path / "a.whl"
    with zipfile.ZipFile(good, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("pkg/__init__.py", b"x = 1\n" * 100)
    data = bytearray(good.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "garbage":
        data[40:60] = b"\xff" * 20
    elif damage == "encrypted-flag":
        data[6] |= 0x01  # general purpose flag bit 0 in the local header
        central = data.rfind(b"PK\x01\x02")
        data[central + 8] |= 0x01
    else:
        central = data.rfind(b"PK\x01\x02")
        data[8:10] = data[central + 10 : central + 12] = (99).to_bytes(2, "little")
    bad = tmp_path / "b.whl"
    bad.write_bytes(bytes(data))
    lines = archive_diff.explain(good, bad)
    assert lines[0].startswith("cannot read as zip ("), lines
    assert lines[-1].startswith("first difference at byte offset") or "sizes" in lines[-1]


def test_a_fifo_artifact_is_not_opened(tmp_path: Path) -> None:
    good = tmp_path / "a.bin"
    good.write_bytes(b"1")
    os.mkfifo(tmp_path / "b.bin")
    lines = archive_diff.explain(good, tmp_path / "b.bin")
    assert lines == [f"{tmp_path / 'b.bin'}: not a regular file (prw-r--r--); not compared"] or (
        len(lines) == 1 and "not a regular file" in lines[0]
    )


# -- 4. secrets never reach output -----------------------------------------------------------

TSA_PASSWORD = "tsa-Pa55word-secret"
TSA_TOKEN = "tsa-QueryToken-secret"
VAULT_PASSWORD = "vault-Pa55word-secret"
VAULT_TOKEN = "s.vault-Token-secret"
SECRETS = (TSA_PASSWORD, TSA_TOKEN, VAULT_PASSWORD, VAULT_TOKEN)


@pytest.fixture(scope="module")
def bao() -> Iterator[OpenBao]:
    with openbao_server() as server:
        yield server


@pytest.fixture
def signed_repo(tmp_path: Path, alice: SshUser) -> Repo:
    repo = make_repo(tmp_path)
    repo.write(".sealgate/policy.yml", _policy(alice))
    repo.commit_ssh(alice, "policy")
    repo.git("tag", "base")
    repo.write("dist/app.bin", "the application\n")
    repo.commit_ssh(alice, "sources")
    return repo


def _credential_tsa(tsa: LocalTsa) -> str:
    scheme, rest = tsa.url.split("://", 1)
    host, _, path = rest.partition("/")
    return f"{scheme}://tsa-user:{TSA_PASSWORD}@{host}/{path}?token={TSA_TOKEN}"


def _outputs(result: subprocess.CompletedProcess[str], *files: Path) -> dict[str, str]:
    shown = {"stdout": result.stdout, "stderr": result.stderr}
    shown |= {str(f): f.read_text() for f in files if f.exists()}
    return shown


def _assert_no_secret(shown: dict[str, str]) -> None:
    for where, text in shown.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} leaked into {where}"


def test_run_with_credentials_in_the_tsa_url_and_vault_env_shows_them_nowhere(
    signed_repo: Repo, tmp_path: Path, hsm: HsmFixture, tsa: LocalTsa, tsa_pki: TsaPki
) -> None:
    report, summary = tmp_path / "report.json", tmp_path / "summary.md"
    env = {**hsm.env, "GITHUB_STEP_SUMMARY": str(summary), "VAULT_TOKEN": VAULT_TOKEN,
           "VAULT_ADDR": f"http://root:{VAULT_PASSWORD}@127.0.0.1:1/"}  # fmt: skip
    result = _sealgate(
        "run", "--repo", signed_repo.path, "--report", report, "--range", "base..HEAD",
        "--artifacts", "dist/*", "--key", hsm.uri("ec256"), "--chain", hsm.chain_pem,
        "--tsa", _credential_tsa(tsa), "--tsa-roots", tsa_pki.root_pem,
        "--trust-roots", hsm.root_pem, "--no-tree", env=env,
    )  # fmt: skip
    shown = _outputs(result, report, summary)
    _assert_no_secret(shown)
    assert result.returncode == 0, result.stdout + result.stderr
    document: dict[str, Any] = json.loads(report.read_text())
    urls = [s["timestamp"]["tsa_url"] for s in document["signatures"]]
    assert urls and all("tsa-user" not in url and "token=REDACTED" in url for url in urls)


def test_run_and_sign_with_a_credential_vault_address_show_it_nowhere(
    signed_repo: Repo, tmp_path: Path, hsm: HsmFixture, bao: OpenBao
) -> None:
    host = bao.address.split("://", 1)[1]
    report, summary = tmp_path / "report.json", tmp_path / "summary.md"
    for address in (f"http://root:{VAULT_PASSWORD}@{host}", f"http://{host}/?token={VAULT_TOKEN}"):
        env = {"VAULT_ADDR": address, "VAULT_TOKEN": VAULT_TOKEN,
               "GITHUB_STEP_SUMMARY": str(summary)}  # fmt: skip
        ran = _sealgate(
            "run", "--repo", signed_repo.path, "--report", report, "--range", "base..HEAD",
            "--artifacts", "dist/*", "--key", "hashivault://release", "--cert", hsm.cert_pems["ec256"],
            "--no-verify", "--no-tree", env=env,
        )  # fmt: skip
        _assert_no_secret(_outputs(ran, report, summary))
        assert ran.returncode == 2, ran.stdout + ran.stderr
        assert "VAULT_ADDR carries credentials" in ran.stdout + ran.stderr
        signed = _sealgate(
            "sign", "--key", "hashivault://release", "--cert", hsm.cert_pems["ec256"],
            signed_repo.path / "dist" / "app.bin", env=env,
        )  # fmt: skip
        _assert_no_secret(_outputs(signed))
        assert signed.returncode == 2, signed.stdout + signed.stderr
        assert "VAULT_ADDR carries credentials" in signed.stderr


def test_the_vault_token_is_never_shown_when_the_server_refuses_it(
    signed_repo: Repo, tmp_path: Path, hsm: HsmFixture, bao: OpenBao
) -> None:
    """Control for the address: a clean VAULT_ADDR reaches the server; a bad token is refused
    (exit 2) and appears in no output."""
    report, summary = tmp_path / "report.json", tmp_path / "summary.md"
    env = {"VAULT_ADDR": bao.address, "VAULT_TOKEN": VAULT_TOKEN,
           "GITHUB_STEP_SUMMARY": str(summary)}  # fmt: skip
    ran = _sealgate(
        "run", "--repo", signed_repo.path, "--report", report, "--range", "base..HEAD",
        "--artifacts", "dist/*", "--key", "hashivault://release", "--cert", hsm.cert_pems["ec256"],
        "--no-verify", "--no-tree", env=env,
    )  # fmt: skip
    _assert_no_secret(_outputs(ran, report, summary))
    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert f"permission denied for transit key 'release' on {bao.address}" in ran.stdout


def test_sign_json_with_a_credential_tsa_url_shows_it_nowhere(
    tmp_path: Path, hsm: HsmFixture, tsa: LocalTsa, tsa_pki: TsaPki
) -> None:
    artifact = tmp_path / "app.bin"
    artifact.write_bytes(b"the application\n")
    result = _sealgate(
        "sign", "--key", hsm.uri("ec256"), "--chain", hsm.chain_pem, "--tsa", _credential_tsa(tsa),
        "--tsa-roots", tsa_pki.root_pem, "--json", artifact, env=hsm.env,
    )  # fmt: skip
    _assert_no_secret(_outputs(result))
    assert result.returncode == 0, result.stdout + result.stderr
    stamp = json.loads(result.stdout)["signed"][0]["timestamp"]
    assert (
        stamp["tsa_url"].startswith(tsa.url.split("://")[0])
        and "token=REDACTED" in stamp["tsa_url"]
    )


def test_timestamp_json_with_a_credential_tsa_url_shows_it_nowhere(
    tmp_path: Path, hsm: HsmFixture, tsa: LocalTsa, tsa_pki: TsaPki
) -> None:
    """`sealgate timestamp --json` printed the TSA URL as given, credentials and all."""
    artifact = tmp_path / "app.bin"
    artifact.write_bytes(b"the application\n")
    signed = _sealgate("sign", "--key", hsm.uri("ec256"), "--chain", hsm.chain_pem, artifact,
                       env=hsm.env)  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    result = _sealgate(
        "timestamp", "--tsa", _credential_tsa(tsa), "--tsa-roots", tsa_pki.root_pem, "--json",
        tmp_path / "app.bin.p7s",
    )  # fmt: skip
    _assert_no_secret(_outputs(result))
    assert result.returncode == 0, result.stdout + result.stderr
    stamp = json.loads(result.stdout)["timestamped"][0]["timestamp"]
    assert "token=REDACTED" in stamp["tsa_url"] and stamp["gen_time"].endswith("+00:00")


def test_an_unreachable_credential_tsa_is_reported_without_its_credentials(
    signed_repo: Repo, tmp_path: Path, hsm: HsmFixture, tsa_pki: TsaPki
) -> None:
    """The failure path: every retry and the final exit-3 line name the TSA, never its secret."""
    dead = f"http://tsa-user:{TSA_PASSWORD}@127.0.0.1:{free_port()}/?token={TSA_TOKEN}"
    artifact = signed_repo.path / "dist" / "app.bin"
    signed = _sealgate(
        "sign", "--key", hsm.uri("ec256"), "--chain", hsm.chain_pem, "--tsa", dead,
        "--tsa-roots", tsa_pki.root_pem, "--tsa-retries", "0", "--json", artifact, env=hsm.env,
    )  # fmt: skip
    _assert_no_secret(_outputs(signed))
    assert signed.returncode == 3, signed.stdout + signed.stderr
    assert "127.0.0.1" in signed.stderr
    report, summary = tmp_path / "report.json", tmp_path / "summary.md"
    ran = _sealgate(
        "run", "--repo", signed_repo.path, "--report", report, "--range", "base..HEAD",
        "--artifacts", "dist/*", "--key", hsm.uri("ec256"), "--chain", hsm.chain_pem,
        "--tsa", dead, "--tsa-roots", tsa_pki.root_pem, "--tsa-retries", "0",
        "--trust-roots", hsm.root_pem, "--no-tree",
        env={**hsm.env, "GITHUB_STEP_SUMMARY": str(summary)},
    )  # fmt: skip
    _assert_no_secret(_outputs(ran, report, summary))
    assert ran.returncode == 3, ran.stdout + ran.stderr
    assert json.loads(report.read_text())["stages"][3]["status"] == "failed"


@pytest.mark.parametrize(
    "endpoint",
    ["http://kms-user:{secret}@127.0.0.1:1", "http://127.0.0.1:1/?X-Amz-Security-Token={secret}"],
)
def test_an_aws_endpoint_carrying_credentials_is_refused_without_echoing_them(
    monkeypatch: pytest.MonkeyPatch, endpoint: str
) -> None:
    secret = "aws-Endpoint-secret"
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL_KMS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint.format(secret=secret))
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with pytest.raises(ConfigError, match="carries credentials") as caught:
        AwsKmsKey("awskms:///alias/release")
    assert secret not in caught.value.diagnostics() and secret not in repr(caught.value)


_STATEMENT = (
    '{"_type": "https://in-toto.io/Statement/v1", "subject": [{"name": "a", "digest": '
    '{"sha256": "'
    + "ab"
    * 32
    + '"}}], "predicateType": "https://slsa.dev/verification_summary/v1", '
    '"predicate": {"verifier": {"id": "x"}, "timeVerified": "2026-01-01T00:00:00Z", '
    '"resourceUri": "git+https://e/r", "policy": {"uri": "p"}, "verificationResult": "PASSED", '
    '"verifiedLevels": ["SEALGATE_TREE_VERIFIED"]__EXTRA__}}'
)
HOSTILE_STATEMENTS = {
    "duplicate-result": (', "verificationResult": "FAILED"', "duplicate field"),
    "nan": (', "dependencyLevels": {"x": NaN}', "NaN, which is not JSON"),
    "huge-number": (', "dependencyLevels": {"x": ' + "9" * 5000 + "}", "not JSON"),
    "deep": (', "x": ' + "[" * 5000 + "]" * 5000, "not JSON"),
    "duplicate-verifier": (', "verifier": {"id": "other"}', "verifier: duplicate field"),
    "lone-surrogate": (', "note": "\\udc00"', "unpaired surrogate"),
}


def _signed_envelope(tmp_path: Path, payload: bytes) -> tuple[Path, Path]:
    """`payload` in a DSSE envelope validly signed by a fresh key, and that key's PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = tmp_path / "trusted.pem"
    pem.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    signature = key.sign(PAE(IN_TOTO_PAYLOAD_TYPE, payload), ec.ECDSA(hashes.SHA256()))
    envelope = tmp_path / "vsa.json"
    envelope.write_text(json.dumps({
        "payloadType": IN_TOTO_PAYLOAD_TYPE,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [{"sig": base64.b64encode(signature).decode()}],
    }))  # fmt: skip
    return envelope, pem


@pytest.mark.parametrize("case", list(HOSTILE_STATEMENTS))
def test_a_signed_but_hostile_statement_is_exit_2_naming_the_field(
    tmp_path: Path, case: str
) -> None:
    """The signature verifies; the statement inside is still read as hostile JSON."""
    extra, reason = HOSTILE_STATEMENTS[case]
    payload = _STATEMENT.replace("__EXTRA__", extra).encode()
    envelope, pem = _signed_envelope(tmp_path, payload)
    result = _sealgate("attest", "verify", envelope, "--public-key", pem)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{envelope}: " in result.stderr and reason in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_the_honest_signed_statement_verifies(tmp_path: Path) -> None:
    """Control for the cases above: the same statement without the extra field passes."""
    payload = _STATEMENT.replace("__EXTRA__", "").encode()
    envelope, pem = _signed_envelope(tmp_path, payload)
    result = _sealgate("attest", "verify", envelope, "--public-key", pem)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "result  PASSED" in result.stdout


def test_an_error_line_that_echoes_input_never_shows_a_credential(tmp_path: Path) -> None:
    """The last door: whatever a message quotes, the CLI's error line is redacted too."""
    repo = make_repo(tmp_path)
    repo.write("a.txt", "a\n")
    repo.commit_ssh(None, "a")
    for value in ("https://user:hunter22pw@tsa.example/x", "s.vaulttokenvalue"):
        result = _sealgate(
            "commits", "--repo", repo.path, "--range", value,
            env={"VAULT_TOKEN": "s.vaulttokenvalue"},
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        assert "use BASE..HEAD" in result.stderr  # the line is still there, and says why
        assert "hunter22pw" not in result.stderr and "vaulttokenvalue" not in result.stderr
