"""`sealgate policy check` and `sealgate policy import` from allowed-signers and sequoia-git."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from tests.components.cli import sealgate
from tests.components.gitrepo import gpg_user, make_repo, ssh_user


def test_import_allowed_signers_then_check(tmp_path: Path) -> None:
    alice = ssh_user(tmp_path, "alice")
    bob = ssh_user(tmp_path, "bob")
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(
        "# team keys\n"
        f"alice@example.com {alice.public_line}\n"
        f'bob@example.com valid-after="20240101",namespaces="git" {bob.public_line}\n'
        f'ci@example.com namespaces="file" {bob.public_line}\n'
    )
    out = tmp_path / "policy.yml"
    result = sealgate("policy", "import", "--allowed-signers", allowed, "--out", out)
    assert result.returncode == 0, result.stderr
    assert f"{allowed} line 3: valid-after/valid-before dropped" in result.stderr
    assert f"{allowed} line 4: key not allowed for the `git` namespace; skipped" in result.stderr
    document = yaml.safe_load(out.read_text())
    assert [s["name"] for s in document["signers"]] == ["alice@example.com", "bob@example.com"]
    assert document["signers"][0]["ssh"] == [alice.public_line.rsplit(" ", 1)[0] + " alice"]
    check = sealgate("policy", "check", out)
    assert check.returncode == 0, check.stderr
    assert "alice@example.com: roles developer; keys SHA256:" in check.stdout


def test_import_sequoia_policy(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    carol = gpg_user(repo, "Carol")
    toml = tmp_path / "openpgp-policy.toml"
    toml.write_text(
        "version = 0\ncommit_goodlist = []\n\n[authorization.carol]\n"
        f'sign_commit = true\nadd_user = true\naudit = true\nkeyring = """\n{carol.armored}"""\n'
    )
    result = sealgate("policy", "import", "--openpgp-policy", toml)
    assert result.returncode == 0, result.stderr
    assert "rights audit have no Sealgate role" in result.stderr
    document = yaml.safe_load(result.stdout)
    [signer] = document["signers"]
    assert signer["name"] == "carol"
    assert signer["roles"] == ["developer", "policy-admin"]
    policy = tmp_path / "imported.yml"
    policy.write_text(result.stdout)
    check = sealgate("policy", "check", policy)
    assert check.returncode == 0, check.stderr
    assert carol.fingerprint in check.stdout


def test_check_names_the_bad_line(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yml"
    policy.write_text('version: 1\nsigners:\n  - name: x\n    ssh: ["ssh-ed25519 AAAA"]\n')
    result = sealgate("policy", "check", policy)
    assert result.returncode == 2
    assert f"{policy} line 3" in result.stderr
    bad_line = tmp_path / "allowed"
    bad_line.write_text("alice@example.com ssh-ed25519\n")
    imported = sealgate("policy", "import", "--allowed-signers", bad_line)
    assert imported.returncode == 2
    assert f"{bad_line} line 1" in imported.stderr
    assert "[policy-invalid]" in result.stderr and "[policy-invalid]" in imported.stderr


def test_check_never_names_a_flag_it_was_not_given(tmp_path: Path) -> None:
    """`policy check FILE` takes a positional file: no `--policy` in any of its errors."""
    fifo = tmp_path / "fifo.yml"
    os.mkfifo(fifo)
    outside = tmp_path / "sub" / "policy.yml"
    outside.parent.mkdir()
    outside.write_text(
        'version: 1\nsigners:\n  - name: a\n    roles: [developer]\n    openpgp: ["../k.asc"]\n'
    )
    not_yaml = tmp_path / "tabs.yml"
    not_yaml.write_text("version: 1\nsigners:\n\t- name: a\n")
    cases = {
        tmp_path / "missing.yml": "path-error",
        fifo: "not-a-file",
        outside: "policy-invalid",
        not_yaml: "yaml-invalid",
    }
    for path, code in cases.items():
        result = sealgate("policy", "check", path)
        assert result.returncode == 2, result.stderr
        assert f"[{code}]" in result.stderr, result.stderr
        assert str(path) in result.stderr
        assert "--policy" not in result.stderr
    # control: `commits --policy` is given the flag, and the same error says so
    result = sealgate("commits", "--range", "a..b", "--policy", tmp_path / "missing.yml")
    assert result.returncode == 2 and "--policy" in result.stderr
