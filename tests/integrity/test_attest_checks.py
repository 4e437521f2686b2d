"""tree, watch and rebuild write a DSSE-signed SLSA VSA of their verdict; `attest verify` reads it."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from tests.components.cli import sealgate
from tests.components.gitrepo import Repo, make_repo
from tests.components.hsm import HsmFixture


def _repo(tmp_path: Path) -> Repo:
    repo = make_repo(tmp_path)
    repo.write("src/app.txt", "the signed source\n")
    repo.write(".gitignore", "dist/\n")
    repo.commit_ssh(None, "source")
    return repo


def _statement(envelope: Path) -> Any:
    document = json.loads(envelope.read_text())
    return json.loads(base64.b64decode(document["payload"]))


def test_tree_attestation_records_the_verdict(hsm: HsmFixture, tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    out = tmp_path / "tree.vsa.json"
    args = ("tree", "--repo", repo.path, "--attest", out, "--attest-key", hsm.uri("ec256"),
            "--attest-subject", "src/**")  # fmt: skip
    assert sealgate(*args, env=hsm.env).returncode == 0
    statement = _statement(out)
    assert statement["subject"] == [
        {
            "name": "src/app.txt",
            "digest": {"sha256": hashlib.sha256(b"the signed source\n").hexdigest()},
        }
    ]
    predicate = statement["predicate"]
    assert predicate["verificationResult"] == "PASSED"
    assert predicate["verifiedLevels"] == ["SEALGATE_TREE_VERIFIED"]
    verified = sealgate("attest", "verify", out, "--key", hsm.uri("ec256"), env=hsm.env)
    assert verified.returncode == 0, verified.stdout + verified.stderr

    (repo.path / "src/app.txt").write_text("the tampered source\n")
    assert sealgate(*args, env=hsm.env).returncode == 1
    assert _statement(out)["predicate"]["verificationResult"] == "FAILED"
    failed = sealgate("attest", "verify", out, "--public-key", hsm.cert_pems["ec256"], env=hsm.env)
    assert failed.returncode == 1
    assert "FAILED" in failed.stdout + failed.stderr


def test_attest_needs_a_key_before_any_work(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    result = sealgate("tree", "--repo", repo.path, "--attest", tmp_path / "x.json",
                      env={"PATH": "/usr/bin:/bin"})  # fmt: skip
    assert result.returncode == 2
    assert "--attest needs --attest-key" in result.stderr
    assert not (tmp_path / "x.json").exists()


def test_watch_and_rebuild_attest_their_outputs(hsm: HsmFixture, tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    build = "mkdir -p dist && cp src/app.txt dist/app.txt"
    watch_out = tmp_path / "watch.vsa.json"
    watched = sealgate(
        "watch", "--repo", repo.path, "--outputs", "dist/**", "--attest", watch_out,
        "--attest-key", hsm.uri("rsa3072"), "--", "sh", "-c", build, env=hsm.env,
    )  # fmt: skip
    assert watched.returncode == 0, watched.stdout + watched.stderr
    statement = _statement(watch_out)
    assert [s["name"] for s in statement["subject"]] == ["dist/app.txt"]
    assert statement["predicate"]["verifiedLevels"] == ["SEALGATE_BUILD_WATCHED"]

    rebuild_out = tmp_path / "rebuild.vsa.json"
    rebuilt = sealgate(
        "rebuild", "--repo", repo.path, "--command", build, "--artifacts", "dist/*",
        "--attest", rebuild_out, "--attest-key", hsm.uri("ec256"), env=hsm.env,
    )  # fmt: skip
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    predicate = _statement(rebuild_out)["predicate"]
    assert predicate["verifiedLevels"] == ["SEALGATE_BUILD_REPRODUCED"]
    verified = sealgate("attest", "verify", rebuild_out, "--key", hsm.uri("ec256"), env=hsm.env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
