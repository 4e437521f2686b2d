"""`sealgate run` end to end: real git + SSH signatures, SoftHSM, the local TSA, stock OpenSSL."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.components.cli import openssl_cms_verify, sealgate
from tests.components.gitrepo import Repo, SshUser, make_repo, ssh_user
from tests.components.hsm import HsmFixture
from tests.components.tsa import LocalTsa, TsaPki

BUILD = "mkdir -p dist && cp src/app.txt dist/app-1.bin && echo two > dist/app-2.bin"
STAGES = ["commits", "tree", "watch", "sign", "verify", "attest"]


@pytest.fixture
def alice(tmp_path: Path) -> SshUser:
    keys = tmp_path / "keys"
    keys.mkdir()
    return ssh_user(keys, "alice")


@pytest.fixture
def repo(tmp_path: Path, alice: SshUser) -> Repo:
    """A policy allowing alice, tagged `base`, then one signed commit with the sources."""
    repo = make_repo(tmp_path)
    repo.write(
        ".sealgate/policy.yml",
        "version: 1\nsigners:\n  - name: alice\n    roles: [developer, policy-admin]\n"
        f'    ssh: ["{alice.public_line}"]\n',
    )
    repo.commit_ssh(alice, "policy")
    repo.git("tag", "base")
    repo.write("src/app.txt", "the application\n")
    repo.commit_ssh(alice, "sources")
    return repo


def _signing_args(hsm: HsmFixture, tsa: LocalTsa, tsa_pki: TsaPki) -> list[str | Path]:
    return [
        "--key", hsm.uri("ec256"), "--chain", hsm.chain_pem, "--tsa", tsa.url,
        "--tsa-roots", tsa_pki.root_pem, "--trust-roots", hsm.root_pem,
    ]  # fmt: skip


def _run(
    repo: Repo, tmp_path: Path, hsm: HsmFixture, *args: str | Path, **env: str
) -> tuple[int, str, str, dict[str, Any]]:
    report = tmp_path / "report.json"
    result = sealgate("run", "--repo", repo.path, "--report", report, *args, env={**hsm.env, **env})
    assert report.exists(), result.stdout + result.stderr
    return result.returncode, result.stdout, result.stderr, json.loads(report.read_text())


def _statuses(report: dict[str, Any]) -> dict[str, str]:
    return {stage["name"]: stage["status"] for stage in report["stages"]}


def _signatures(repo: Repo) -> list[Path]:
    return sorted(repo.path.rglob("*.p7s"))


def test_the_whole_pipeline_signs_verifies_and_reports(
    repo: Repo, tmp_path: Path, hsm: HsmFixture, tsa: LocalTsa, tsa_pki: TsaPki
) -> None:
    summary = tmp_path / "summary.md"
    code, stdout, stderr, report = _run(
        repo, tmp_path, hsm,
        "--range", "base..HEAD", "--build-command", BUILD, "--artifacts", "dist/*",
        *_signing_args(hsm, tsa, tsa_pki), GITHUB_STEP_SUMMARY=str(summary),
    )  # fmt: skip
    assert code == 0, stdout + stderr
    assert _statuses(report) == dict.fromkeys(STAGES, "passed")
    signatures = _signatures(repo)
    assert [s.name for s in signatures] == ["app-1.bin.p7s", "app-2.bin.p7s"]
    for signature in signatures:
        checked = openssl_cms_verify(signature, signature.with_suffix(""), hsm.root_pem)
        assert checked.returncode == 0, checked.stderr
    assert {s["output"] for s in report["signatures"]} == {str(s) for s in signatures}
    assert all(v["verified"] and v["timestamp"] for v in report["verify"])
    assert report["range"] == "base..HEAD" and report["exit_code"] == 0
    for stage in STAGES:
        assert any(
            line.startswith(f"{stage} ") and "passed" in line for line in stdout.splitlines()
        )
    markdown = summary.read_text()
    assert "| stage | status | details |" in markdown
    assert all(f"| {stage} | ✅ passed |" in markdown for stage in STAGES)
    assert markdown.count("<details>") == 2 and "app-1.bin" in markdown
    attestation = tmp_path / "sealgate-vsa.intoto.json"
    checked_vsa = sealgate("attest", "verify", attestation, "--key", hsm.uri("ec256"), env=hsm.env)
    assert checked_vsa.returncode == 0, checked_vsa.stdout + checked_vsa.stderr


def test_an_unsigned_commit_stops_the_pipeline_before_signing(
    repo: Repo, tmp_path: Path, hsm: HsmFixture, tsa: LocalTsa, tsa_pki: TsaPki
) -> None:
    repo.write("src/extra.txt", "sneaked in\n")
    repo.commit_ssh(None, "unsigned change")
    code, stdout, _, report = _run(
        repo, tmp_path, hsm,
        "--range", "base..HEAD", "--build-command", BUILD, "--artifacts", "dist/*",
        *_signing_args(hsm, tsa, tsa_pki),
    )  # fmt: skip
    assert code == 1
    statuses = _statuses(report)
    assert statuses["commits"] == "failed"
    assert {statuses[s] for s in STAGES[1:]} == {"skipped"}
    commits = report["stages"][0]
    assert commits["code"] == "unsigned" and report["code"] == "unsigned"
    assert [(c["subject"], c["code"]) for c in commits["commits"]] == [
        ("sources", None),
        ("unsigned change", "unsigned"),
    ]
    assert "commits  failed   [unsigned]" in stdout
    assert all(report["stages"][i]["code"] is None for i in range(1, len(STAGES)))
    assert _signatures(repo) == [] and not (repo.path / "dist").exists()


def test_a_modified_source_fails_the_tree_stage_and_nothing_is_signed(
    repo: Repo, tmp_path: Path, hsm: HsmFixture, tsa: LocalTsa, tsa_pki: TsaPki
) -> None:
    repo.write("src/app.txt", "injected\n")
    code, stdout, _, report = _run(
        repo, tmp_path, hsm,
        "--range", "base..HEAD", "--build-command", BUILD, "--artifacts", "dist/*",
        *_signing_args(hsm, tsa, tsa_pki),
    )  # fmt: skip
    assert code == 1
    statuses = _statuses(report)
    assert statuses["commits"] == "passed" and statuses["tree"] == "failed"
    assert statuses["watch"] == statuses["sign"] == "skipped"
    tree = report["stages"][1]
    assert tree["code"] == "tree-mismatch"
    assert [(d["path"], d["code"]) for d in tree["differences"]] == [
        ("src/app.txt", "tree-modified")
    ]
    assert "tree     failed   [tree-mismatch]" in stdout
    assert report["stages"][1]["annotations"] == [
        {"file": "src/app.txt", "message": "modified: content differs"}
    ]
    assert "src/app.txt" in stdout
    assert _signatures(repo) == []


def test_stages_switched_off_by_flags_and_environment(
    repo: Repo, tmp_path: Path, hsm: HsmFixture
) -> None:
    """An unsigned commit and an untracked file pass when their checks are off."""
    repo.commit_ssh(None, "unsigned")
    (repo.path / "dist").mkdir()
    (repo.path / "dist" / "prebuilt.bin").write_text("prebuilt\n")
    (repo.path / "stray.txt").write_text("untracked\n")
    elsewhere = tmp_path / "env-report.json"
    code, stdout, stderr, report = _run(
        repo, tmp_path, hsm,
        "--no-commits", "--no-verify", "--artifacts", "dist/*.bin", "--key", hsm.uri("ec256"),
        SEALGATE_CHECK_TREE="false", SEALGATE_ATTEST="no", SEALGATE_REPORT=str(elsewhere),
    )  # fmt: skip
    assert code == 0, stdout + stderr
    assert not elsewhere.exists()  # the --report flag wins over $SEALGATE_REPORT
    assert _statuses(report) == {
        "commits": "skipped", "tree": "skipped", "watch": "skipped",
        "sign": "passed", "verify": "skipped", "attest": "skipped",
    }  # fmt: skip
    assert _signatures(repo) == [repo.path / "dist" / "prebuilt.bin.p7s"]

    bad = sealgate(
        "run", "--repo", repo.path, "--report", tmp_path / "r.json", "--artifacts", "dist/*.bin",
        "--key", hsm.uri("ec256"), "--no-commits", "--no-tree",
        env={**hsm.env, "SEALGATE_VERIFY": "maybe"},
    )  # fmt: skip
    assert bad.returncode == 2 and "$SEALGATE_VERIFY: 'maybe' is not a boolean" in bad.stderr


def test_configuration_from_sealgate_yml_and_the_pin_stays_secret(
    repo: Repo, tmp_path: Path, alice: SshUser, hsm: HsmFixture, tsa: LocalTsa, tsa_pki: TsaPki
) -> None:
    pin = hsm.token.pin_file.read_text().strip()
    key = f"pkcs11:token={hsm.token.label};object=ec256?module-path={hsm.token.module}&pin-value={pin}"
    # The key and what the gate trusts come from the CI configuration, never from the file
    # under test (test_the_sealgate_yml_under_test_cannot_choose_the_key_or_the_trust).
    repo.write(
        "sealgate.yml",
        f"build-command: {json.dumps(BUILD)}\n"
        "artifacts: [nothing/*]\n"
        f"chain: [{hsm.chain_pem}]\n"
        f"tsa_urls: [{tsa.url}]\n",
    )
    repo.commit_ssh(alice, "pipeline settings")
    summary = tmp_path / "summary.md"
    code, stdout, stderr, report = _run(
        repo, tmp_path, hsm, "--range", "base..HEAD",
        SEALGATE_ARTIFACTS="dist/app-1.bin\ndist/app-2.bin", GITHUB_STEP_SUMMARY=str(summary),
        SEALGATE_KEY=key, SEALGATE_TSA_ROOTS=str(tsa_pki.root_pem),
        SEALGATE_TRUST_ROOTS=str(hsm.root_pem),
    )  # fmt: skip
    assert code == 0, stdout + stderr
    assert _statuses(report) == dict.fromkeys(STAGES, "passed")
    assert len(_signatures(repo)) == 2  # $SEALGATE_ARTIFACTS won over the file's glob
    assert report["key"] == f"pkcs11:token={hsm.token.label};object=ec256"
    outputs = [stdout, stderr, json.dumps(report), summary.read_text()]
    assert all(pin not in text for text in outputs)

    shutil.rmtree(repo.path / "dist")
    no_match = sealgate(
        "run", "--repo", repo.path, "--report", tmp_path / "r2.json", "--range", "base..HEAD",
        "--artifacts", "missing/*.tar.gz",
        env={
            **hsm.env, "SEALGATE_BUILD_COMMAND": "true", "SEALGATE_KEY": key,
            "SEALGATE_TSA_ROOTS": str(tsa_pki.root_pem), "SEALGATE_TRUST_ROOTS": str(hsm.root_pem),
        },
    )  # fmt: skip
    assert no_match.returncode == 2, no_match.stdout + no_match.stderr
    assert "'missing/*.tar.gz' matches no file" in no_match.stdout
    assert pin not in no_match.stdout + no_match.stderr


def test_default_range_starts_at_the_newest_tag_signed_under_the_fixed_policy(
    repo: Repo, tmp_path: Path, hsm: HsmFixture, alice: SshUser, tsa: LocalTsa, tsa_pki: TsaPki
) -> None:
    """A lightweight tag anyone with push access can move is no base; a tag signed by a key
    of the fixed --policy is, and the report says which base was chosen and why."""
    policy = tmp_path / "policy.yml"
    policy.write_text((repo.path / ".sealgate" / "policy.yml").read_text())
    base = repo.git("rev-parse", "base")
    repo.git("-c", "gpg.format=ssh", "-c", f"user.signingkey={alice.key}",
             "tag", "-s", "v1", "-m", "release 1", "base")  # fmt: skip
    repo.write("src/more.txt", "more\n")
    repo.commit_ssh(alice, "more")
    repo.git("tag", "moved")  # lightweight, on HEAD^: ignored
    repo.write("src/last.txt", "last\n")
    repo.commit_ssh(alice, "last")
    args = ("--build-command", BUILD, "--artifacts", "dist/*", *_signing_args(hsm, tsa, tsa_pki))
    code, stdout, stderr, report = _run(repo, tmp_path, hsm, "--policy", policy, *args)
    assert code == 0, stdout + stderr
    assert report["range"] == f"{base}..HEAD"
    commits = report["stages"][0]
    assert commits["checked"] == 3
    assert commits["base"] == f"signed tag v1, verified under {policy}"
    assert f"base: signed tag v1, verified under {policy}" in stdout

    shutil.rmtree(repo.path / "dist")
    for signature in _signatures(repo):
        signature.unlink()
    code, stdout, _, report = _run(repo, tmp_path, hsm, *args)  # no fixed policy, no branch
    assert code == 2
    assert report["stages"][0]["status"] == "failed"
    assert (
        "no trusted base for the commit range: give --range BASE..HEAD (or --base-branch, "
        "or a fixed --policy with signed release tags)" in stdout
    )
    assert _signatures(repo) == []


@pytest.mark.parametrize(
    ("build", "code"),
    [
        ("mkdir -p dist && echo one > dist/app-1.bin && exit 3", "build-failed"),
        ("mkdir -p dist && echo one > dist/app-1.bin && echo more >> src/app.txt", "tampered"),
    ],
)
def test_a_failed_or_tampering_build_fails_the_watch_stage_with_its_code(
    repo: Repo, tmp_path: Path, hsm: HsmFixture, build: str, code: str
) -> None:
    exit_code, stdout, _, report = _run(
        repo, tmp_path, hsm, "--range", "base..HEAD", "--build-command", build,
        "--artifacts", "dist/*", "--key", hsm.uri("ec256"), "--no-verify",
    )  # fmt: skip
    assert exit_code == 1, stdout
    watch = next(stage for stage in report["stages"] if stage["name"] == "watch")
    assert watch["status"] == "failed" and watch["code"] == code
    assert f"watch    failed   [{code}]" in stdout
    if code == "tampered":
        assert [(f["path"], f["code"]) for f in watch["findings"]][:1] == [
            ("src/app.txt", "tampered")
        ]
    assert _signatures(repo) == []
