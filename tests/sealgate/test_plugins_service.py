"""Signing through a live `sealgate serve` (SoftHSM key, local TSA, local OIDC issuer): the
client end to end with the service's own refusals, `sealgate run --service`, the GitHub Action
under act (act has no OIDC: its token endpoint is a local server minting the issuer's tokens)
and the GitLab component under gitlab-ci-local (the token in an id_tokens-style variable).
No PIN, key URI or certificate reaches the CI side in any of them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.components.act import git_repo_with_action, run_act
from tests.components.cli import openssl_cms_verify, sealgate
from tests.components.gitlab_ci_local import run_pipeline
from tests.components.hsm import HsmFixture
from tests.components.oidc import OidcIssuer, github_claims
from tests.components.service import KEY, ServiceProcess
from tests.components.tsa import TsaPki
from tests.sealgate.test_idtoken import TokenEndpoint, start_endpoint

pytestmark = pytest.mark.slow  # each test starts `sealgate serve` (and act or gitlab-ci-local)


def _artifacts(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in ("one.bin", "two.bin"):
        (folder / name).write_text(f"artifact {name}\n")
        paths.append(folder / name)
    return paths


def _env(**extra: str) -> dict[str, str]:
    """The job's environment: no HSM configuration, no PIN; only what the test gives."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SEALGATE_", "ACTIONS_", "SOFTHSM2"))}  # fmt: skip
    env.update(extra)
    return env


def _sign(
    server: ServiceProcess, oidc: OidcIssuer, artifacts: list[Path], *extra: str | Path,
    env: dict[str, str],
) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return sealgate("sign", "--service", server.url, "--audience", oidc.audience, *extra,
                    *artifacts, env=env)  # fmt: skip


def test_sign_through_the_live_service_and_its_refusals(
    service_server: ServiceProcess,
    oidc: OidcIssuer,
    hsm: HsmFixture,
    tsa_pki: TsaPki,
    tmp_path: Path,
) -> None:
    artifacts = _artifacts(tmp_path / "dist")
    token = oidc.mint(github_claims())
    env = _env(SEALGATE_ID_TOKEN=token)
    roots: list[str | Path] = ["--trust-roots", hsm.root_pem, "--tsa-roots", tsa_pki.root_pem]
    result = _sign(service_server, oidc, artifacts, "--key", KEY, *roots, "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert token not in result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert all(s["timestamp"] for s in report["signed"])  # CAdES-T, checked by the client
    for artifact in artifacts:
        p7s = artifact.with_name(artifact.name + ".p7s")
        assert openssl_cms_verify(p7s, artifact, hsm.root_pem).returncode == 0
    gate = sealgate("verify", *roots, "--require-timestamp", *artifacts)
    assert gate.returncode == 0, gate.stdout + gate.stderr
    receipt = artifacts[0].with_name("one.bin.p7s.receipt.json")
    assert json.loads(receipt.read_text())["receipt"]["index"] == report["receipt"]["index"]

    # the same token again: the service refuses the replayed jti, nothing is rewritten
    before = {a: a.with_name(a.name + ".p7s").read_bytes() for a in artifacts}
    again = _sign(service_server, oidc, artifacts, "--key", KEY, env=env)
    assert again.returncode == 2, again.stderr
    assert "[token-replayed]" in again.stderr and "HTTP 401" in again.stderr
    assert "fresh" in again.stderr and token not in again.stderr
    assert before == {a: a.with_name(a.name + ".p7s").read_bytes() for a in artifacts}

    fresh = tmp_path / "fresh"
    other = _artifacts(fresh)
    # a good token from another repository: no grant (exit 1, the claim named)
    foreign = _env(SEALGATE_ID_TOKEN=oidc.mint(github_claims(repository_id="999")))
    denied = _sign(service_server, oidc, other, "--key", KEY, env=foreign)
    assert denied.returncode == 1, denied.stderr
    assert "[no-grant]" in denied.stderr and "repository_id" in denied.stderr
    # an unknown key, and the wrong digest algorithm for the key: exit 2, the service's code
    unknown = _sign(service_server, oidc, other, "--key", "nope",
                    env=_env(SEALGATE_ID_TOKEN=oidc.mint(github_claims())))  # fmt: skip
    assert unknown.returncode == 2 and "HTTP 404" in unknown.stderr, unknown.stderr
    wrong = _sign(service_server, oidc, other, "--key", KEY, "--digest", "sha384",
                  env=_env(SEALGATE_ID_TOKEN=oidc.mint(github_claims())))  # fmt: skip
    assert wrong.returncode == 2, wrong.stderr
    assert "[digest-algorithm-mismatch]" in wrong.stderr and "--digest" in wrong.stderr
    assert sorted(p.name for p in fresh.iterdir()) == ["one.bin", "two.bin"]  # nothing written


def _github_endpoint(oidc: OidcIssuer) -> TokenEndpoint:
    return TokenEndpoint(mint=lambda aud: oidc.mint(github_claims(), audience=aud))


def test_run_signs_through_the_service_with_github_tokens(
    service_server: ServiceProcess, oidc: OidcIssuer, hsm: HsmFixture, tsa_pki: TsaPki,
    tmp_path: Path,
) -> None:  # fmt: skip
    repo = git_repo_with_action(tmp_path / "repo", {".gitignore": "dist/\n"}, extra=())
    _artifacts(repo / "dist")
    with start_endpoint(_github_endpoint(oidc)) as github:
        env = _env(**github.env())
        result = sealgate(
            "run", "--repo", repo, "--no-commits", "--no-tree", "--artifacts", "dist/*.bin",
            "--outputs", "dist/", "--service", service_server.url, "--service-key", KEY,
            "--service-audience", oidc.audience, "--trust-roots", hsm.root_pem,
            "--tsa-roots", tsa_pki.root_pem, "--require-timestamp",
            "--report", tmp_path / "report.json", env=env,
        )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(github.minted) == 1 and github.seen[0]["query"]["audience"] == [oidc.audience]
    report = json.loads((tmp_path / "report.json").read_text())
    stages = {s["name"]: s for s in report["stages"]}
    assert stages["sign"]["status"] == "passed" and stages["verify"]["status"] == "passed"
    assert "signing service" in stages["sign"]["summary"]
    assert stages["attest"]["status"] != "failed"
    for name in ("one.bin", "two.bin"):
        assert (repo / "dist" / f"{name}.p7s").is_file()
    # both at once is refused before anything runs: one signer, never two
    both = sealgate("run", "--repo", repo, "--no-commits", "--no-tree", "--artifacts", "dist/*",
                    "--service", service_server.url, "--service-key", KEY, "--key",
                    hsm.uri("ec256"), env=env)  # fmt: skip
    assert both.returncode == 2 and "[option-conflict]" in both.stderr, both.stderr


def test_sealgate_yml_cannot_point_the_token_elsewhere(tmp_path: Path) -> None:
    """A pusher's own server in sealgate.yml would receive the job's OIDC token."""
    repo = git_repo_with_action(
        tmp_path / "repo", {"sealgate.yml": "service: https://evil.example/\n"}, extra=()
    )
    result = sealgate("run", "--repo", repo, "--no-commits", "--no-tree", env=_env())
    assert result.returncode == 2, result.stderr
    assert "[setting-not-allowed]" in result.stderr and "service" in result.stderr


WORKFLOW = """\
on: push
permissions:
  contents: read
  id-token: write
jobs:
  release:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - name: Build
        run: mkdir -p dist && echo "artifact one" > dist/one.bin && echo "artifact two" > dist/two.bin
      - id: sealgate
        uses: ./
        with:
          artifacts: dist/*.bin
          service: ${{ env.TEST_SERVICE }}
          service-key: release
          service-audience: ${{ env.TEST_AUDIENCE }}
          trust-roots: ${{ env.TEST_TRUST_ROOTS }}
          tsa-roots: ${{ env.TEST_TSA_ROOTS }}
          verify-commits: "false"
          check-tree: "false"
      - name: Keep the results
        env:
          SIGNATURES: ${{ steps.sealgate.outputs.signatures }}
          VERIFIED: ${{ steps.sealgate.outputs.verified }}
        run: |
          cp -r dist "$TEST_RESULTS/dist"
          python3 -c 'import json, os; print(json.dumps({k: os.environ[k] for k in
            ["SIGNATURES", "VERIFIED"]}))' > "$TEST_RESULTS/outputs.json"
"""


def test_action_signs_through_the_service_under_act(
    service_server: ServiceProcess, oidc: OidcIssuer, hsm: HsmFixture, tsa_pki: TsaPki,
    tmp_path: Path,
) -> None:  # fmt: skip
    repo = git_repo_with_action(
        tmp_path / "repo",
        {".github/workflows/release.yml": WORKFLOW, ".gitignore": "dist/\n__pycache__/\n"},
    )
    results = tmp_path / "results"
    results.mkdir()
    with start_endpoint(_github_endpoint(oidc)) as github:
        run = run_act(
            repo,
            cache=tmp_path / "cache",
            secrets={},
            env={
                **github.env(),  # what a runner with `id-token: write` provides
                "TEST_SERVICE": service_server.url,
                "TEST_AUDIENCE": oidc.audience,
                "TEST_TRUST_ROOTS": str(hsm.root_pem),
                "TEST_TSA_ROOTS": str(tsa_pki.root_pem),
                "TEST_RESULTS": str(results),
            },
        )
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-8000:]
    assert github.minted, "the action never asked the token endpoint"
    assert all(token not in log for token in github.minted), "a token reached the log"
    assert github.request_token not in log
    outputs = json.loads((results / "outputs.json").read_text())
    assert outputs["VERIFIED"] == "true"
    assert sorted(Path(s).name for s in outputs["SIGNATURES"].splitlines()) == [
        "one.bin.p7s", "two.bin.p7s"
    ]  # fmt: skip
    for name in ("one.bin", "two.bin"):
        dist = results / "dist"
        check = openssl_cms_verify(dist / f"{name}.p7s", dist / name, hsm.root_pem)
        assert check.returncode == 0, check.stderr


GITIGNORE = "dist/\n__pycache__/\n.gitlab-ci-local/\nsealgate-report.json\nsealgate.env\n"


def test_component_signs_through_the_service_under_gitlab_ci_local(
    service_server: ServiceProcess, oidc: OidcIssuer, hsm: HsmFixture, tsa_pki: TsaPki,
    tmp_path: Path,
) -> None:  # fmt: skip
    pipeline: dict[str, Any] = {
        "stages": ["build", "sign"],
        "include": [{
            "local": "gitlab-ci-component.yml",
            "inputs": {
                "artifacts": "dist/*.bin",
                "service": service_server.url,
                "service_key": KEY,
                "service_audience": oidc.audience,
                "trust_roots": str(hsm.root_pem),
                "tsa_roots": str(tsa_pki.root_pem),
                "verify_commits": "false",
                "job_artifacts": ["dist/", "sealgate-report.json"],
            },
        }],
        "build": {
            "stage": "build",
            "script": ["mkdir -p dist", "echo one > dist/one.bin", "echo two > dist/two.bin"],
            "artifacts": {"paths": ["dist/"]},
        },
    }  # fmt: skip
    files = {
        ".gitlab-ci.yml": yaml.safe_dump(pipeline, sort_keys=False),
        ".gitignore": GITIGNORE,
        "sealgate.yml": "outputs: [dist/]\n",
    }
    repo = git_repo_with_action(tmp_path / "repo", files, extra=["gitlab-ci-component.yml"])
    token = oidc.mint(github_claims(), lifetime=600)
    # what `id_tokens: SEALGATE_ID_TOKEN: aud: ...` gives the job; no SoftHSM, no PIN
    run = run_pipeline(repo, home=tmp_path / "gcl-home", variables={"SEALGATE_ID_TOKEN": token})
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-8000:]
    assert token not in log
    signed = repo / ".gitlab-ci-local" / "artifacts" / "sealgate-sign" / "dist"
    for name in ("one.bin", "two.bin"):
        check = openssl_cms_verify(signed / f"{name}.p7s", repo / "dist" / name, hsm.root_pem)
        assert check.returncode == 0, check.stderr
    assert (signed / "one.bin.p7s.receipt.json").is_file()
