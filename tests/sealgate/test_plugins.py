"""The CI plugins: the GitHub Action, the GitLab component, the Dockerfile and the examples.

Static checks hold the files to their contracts (inputs declared == inputs used, no template
expression pasted into a script, schemas, zizmor, hadolint); the act test runs the action for real
on the host executor against the SoftHSM token and the local TSA, and checks what OpenSSL says.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.components import require
from tests.components.act import commit_unsigned, git_repo_with_action, run_act
from tests.components.cli import openssl_cms_verify
from tests.components.gitlab_ci_local import run_pipeline
from tests.components.gitrepo import SshUser, ssh_user
from tests.components.hsm import HsmFixture
from tests.components.tsa import LocalTsa, TsaPki

ROOT = Path(__file__).resolve().parents[2]
ACTIONS = [ROOT / "action.yml", ROOT / "verify" / "action.yml"]
COMPONENT = ROOT / "gitlab-ci-component.yml"
CATALOG_TEMPLATE = ROOT / "templates" / "sealgate.yml"
GITHUB_INPUT_USE = re.compile(r"\binputs\.([A-Za-z0-9_-]+)")
GITLAB_INPUT_USE = re.compile(r"\$\[\[\s*inputs\.([A-Za-z0-9_]+)\s*\]\]")


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _component() -> tuple[dict[str, Any], str]:
    """The component's spec (first document) and the jobs' text (second document)."""
    header, _, body = COMPONENT.read_text().partition("\n---\n")
    return yaml.safe_load(header)["spec"], body


def _tool(name: str) -> str:
    """A linter from the venv (PyPI); missing locally it skips, under CI=true it fails."""
    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    require(path is not None, f"{name} (pip install it; see pyproject's dev extras)")
    assert path is not None
    return path


# GitHub Action -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ACTIONS, ids=lambda p: str(p.relative_to(ROOT)))
def test_action_inputs_are_declared_and_used(path: Path) -> None:
    action = _load(path)
    declared = set(action["inputs"])
    used = set(GITHUB_INPUT_USE.findall(yaml.safe_dump(action["runs"])))
    assert used == declared, (
        f"declared but unused: {declared - used}; used, undeclared: {used - declared}"
    )
    assert all(re.fullmatch(r"[a-z]+(-[a-z]+)*", name) for name in declared), declared
    for name, spec in action["inputs"].items():
        assert spec.get("description"), name


@pytest.mark.parametrize("path", ACTIONS, ids=lambda p: str(p.relative_to(ROOT)))
def test_action_scripts_take_inputs_only_from_the_environment(path: Path) -> None:
    for step in _load(path)["runs"]["steps"]:
        assert "${{" not in step.get("run", ""), (
            f"template expression inside run: of {step['name']}"
        )
        for value in step.get("env", {}).values():
            name = GITHUB_INPUT_USE.findall(value)
            assert not name or value.strip() == f"${{{{ inputs.{name[0]} }}}}", value


def test_action_outputs_come_from_the_run_step() -> None:
    outputs = _load(ROOT / "action.yml")["outputs"]
    assert set(outputs) == {"signatures", "report", "verified"}
    for name, spec in outputs.items():
        assert spec["value"] == f"${{{{ steps.run.outputs.{name} }}}}"


# GitLab component --------------------------------------------------------------------------


def test_component_inputs_are_declared_typed_and_used() -> None:
    spec, body = _component()
    declared = set(spec["inputs"])
    used = set(GITLAB_INPUT_USE.findall(body))
    assert used == declared, (
        f"declared but unused: {declared - used}; used, undeclared: {used - declared}"
    )
    for name, item in spec["inputs"].items():
        assert re.fullmatch(r"[a-z]+(_[a-z]+)*", name), name
        assert item.get("type") in {"string", "boolean", "number", "array"}, name
        assert item.get("description"), name
        if "regex" in item and "default" in item:
            assert re.fullmatch(item["regex"], str(item["default"])), name
        if "options" in item:
            assert item["default"] in item["options"], name


def test_component_scripts_take_inputs_only_from_variables() -> None:
    _, body = _component()
    for name, job in yaml.safe_load(body).items():
        for line in job["script"]:
            assert "$[[" not in line, f"{name}: input interpolated into the script"


def _interpolated_jobs() -> Any:
    """The jobs with each `$[[ inputs.x ]]` replaced as GitLab does (whole values keep their type)."""
    spec, body = _component()
    values = {name: item.get("default", f"sample-{name}") for name, item in spec["inputs"].items()}

    def interpolate(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: interpolate(value) for key, value in node.items()}
        if isinstance(node, list):
            return [interpolate(value) for value in node]
        if isinstance(node, str):
            whole = GITLAB_INPUT_USE.fullmatch(node)
            if whole:
                return values[whole.group(1)]
            return GITLAB_INPUT_USE.sub(lambda m: str(values[m.group(1)]).lower(), node)
        return node

    return interpolate(yaml.safe_load(body))


def test_catalog_template_is_the_component() -> None:
    assert CATALOG_TEMPLATE.read_text() == COMPONENT.read_text(), (
        "templates/sealgate.yml drifted: cp gitlab-ci-component.yml templates/sealgate.yml"
    )


# Schemas and linters -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "relative"),
    [
        ("vendor.github-actions", "action.yml"),
        ("vendor.github-actions", "verify/action.yml"),
        ("vendor.github-workflows", "examples/github-release.yml"),
        ("vendor.gitlab-ci", "examples/gitlab-pipeline.yml"),
        ("vendor.gitlab-ci", "gitlab-ci-component.yml"),
    ],
)
def test_schema(schema: str, relative: str, tmp_path: Path) -> None:
    path = ROOT / relative
    if path == COMPONENT:  # the jobs are the second YAML document, inputs interpolated
        path = tmp_path / "component-jobs.yml"
        path.write_text(json.dumps(_interpolated_jobs()))
    result = subprocess.run(
        [_tool("check-jsonschema"), "--builtin-schema", schema, str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_zizmor_finds_nothing() -> None:
    files = ["action.yml", "verify/action.yml", "examples/github-release.yml"]
    result = subprocess.run(
        [_tool("zizmor"), "--offline", "--no-progress", *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_dockerfile() -> None:
    result = subprocess.run(
        [_tool("hadolint"), "Dockerfile"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_action_requirements_pin_every_dependency_by_hash() -> None:
    text = (ROOT / "requirements" / "action.txt").read_text()
    pinned = {
        m.group(1).lower().replace("_", "-")
        for m in re.finditer(r"^([A-Za-z0-9_.-]+)==\S+ \\$", text, re.M)
    }
    blocks = re.split(r"^(?=[A-Za-z])", text, flags=re.M)[1:]
    assert all("--hash=sha256:" in block for block in blocks)
    for requirement in _pyproject_dependencies():
        name = re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        assert name in pinned, f"{name} is a dependency but not in requirements/action.txt"


def _pyproject_dependencies() -> list[str]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        dependencies: list[str] = tomllib.load(f)["project"]["dependencies"]
    return dependencies


# A real run with act -----------------------------------------------------------------------

WORKFLOW = """\
on: push
jobs:
  release:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - name: Build
        run: mkdir -p dist && echo "artifact one" > dist/one.bin && head -c 100000 /dev/urandom > dist/two.bin
      - id: sealgate
        uses: ./
        with:
          artifacts: |
            dist/*.bin
          key: ${{ env.TEST_KEY }}
          certificate: ${{ env.TEST_CERT }}
          certificate-chain: ${{ env.TEST_CHAIN }}
          tsa-urls: ${{ env.TEST_TSA_URL }}
          tsa-roots: ${{ env.TEST_TSA_ROOTS }}
          trust-roots: ${{ env.TEST_TRUST_ROOTS }}
          verify-commits: "false"
      - name: Print the key (the action masked its PIN for the rest of the job)
        run: echo "key=$TEST_KEY"
      - id: gate
        uses: ./verify
        with:
          artifacts: dist/*.bin
          trust-roots: ${{ env.TEST_TRUST_ROOTS }}
          tsa-roots: ${{ env.TEST_TSA_ROOTS }}
      - name: Tamper
        run: echo "tampered" >> dist/one.bin
      - id: gate_tampered
        continue-on-error: true
        uses: ./verify
        with:
          artifacts: dist/*.bin
          trust-roots: ${{ env.TEST_TRUST_ROOTS }}
          tsa-roots: ${{ env.TEST_TSA_ROOTS }}
      - name: Keep what the test checks
        env:
          SIGNATURES: ${{ steps.sealgate.outputs.signatures }}
          REPORT: ${{ steps.sealgate.outputs.report }}
          VERIFIED: ${{ steps.sealgate.outputs.verified }}
          GATE: ${{ steps.gate.outputs.verified }}
          GATE_TAMPERED: ${{ steps.gate_tampered.outputs.verified }}
          GATE_TAMPERED_OUTCOME: ${{ steps.gate_tampered.outcome }}
        run: |
          cp -r dist "$TEST_RESULTS/dist"
          cp "$REPORT" "$TEST_RESULTS/report.json"
          python3 -c 'import json, os; print(json.dumps({k: os.environ[k] for k in
            ["SIGNATURES", "VERIFIED", "GATE", "GATE_TAMPERED", "GATE_TAMPERED_OUTCOME"]}))' \\
            > "$TEST_RESULTS/outputs.json"
"""


def test_action_signs_and_gates_under_act(
    hsm: HsmFixture, tsa: LocalTsa, tsa_pki: TsaPki, tmp_path: Path
) -> None:
    repo = git_repo_with_action(
        tmp_path / "repo",
        {".github/workflows/release.yml": WORKFLOW, ".gitignore": "dist/\n__pycache__/\n"},
    )
    results = tmp_path / "results"
    results.mkdir()
    pin = hsm.token.pin_file.read_text()
    key = hsm.token.uri("ec256", with_pin=False) + f"&pin-value={pin}"
    run = run_act(
        repo,
        cache=tmp_path / "cache",
        secrets={},
        env={
            "TEST_KEY": key,  # not a secret: only the action's ::add-mask:: keeps its PIN out
            "SOFTHSM2_CONF": hsm.env["SOFTHSM2_CONF"],
            "TEST_CERT": str(hsm.cert_pems["ec256"]),
            "TEST_CHAIN": str(hsm.chain_pem),
            "TEST_TRUST_ROOTS": str(hsm.root_pem),
            "TEST_TSA_URL": tsa.url,
            "TEST_TSA_ROOTS": str(tsa_pki.root_pem),
            "TEST_RESULTS": str(results),
        },
    )
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-8000:]
    assert pin not in log, "the PIN in the key URI reached the log"
    assert "pin-value=***" in log, "the echo step should have printed the masked key"

    outputs = json.loads((results / "outputs.json").read_text())
    assert outputs["VERIFIED"] == "true"
    assert outputs["GATE"] == "true"
    assert outputs["GATE_TAMPERED"] == "false"
    assert outputs["GATE_TAMPERED_OUTCOME"] == "failure"
    signatures = sorted(Path(s).name for s in outputs["SIGNATURES"].splitlines())
    assert signatures == ["one.bin.p7s", "two.bin.p7s"]
    assert json.loads((results / "report.json").read_text())
    # act prints each step's job summary into its log ("Summary - ..."); files do not outlive the step.
    assert "Summary - " in log, "no job summary was written"
    assert "two.bin" in log[log.index("Summary - ") :]

    dist = results / "dist"
    (dist / "one.bin").write_text("artifact one\n")  # undo the tamper step
    for name in ("one.bin", "two.bin"):
        check = openssl_cms_verify(dist / f"{name}.p7s", dist / name, hsm.root_pem)
        assert check.returncode == 0, check.stderr


FAILING_WORKFLOW = """\
on: push
jobs:
  release:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - name: Build
        run: mkdir -p dist && echo "artifact" > dist/one.bin
      - id: unsigned
        continue-on-error: true
        uses: ./
        with:
          artifacts: dist/*.bin
          key: ${{ env.TEST_KEY }}
          certificate: ${{ env.TEST_CERT }}
          trust-roots: ${{ env.TEST_TRUST_ROOTS }}
          range: base..HEAD
          verify-commits: "true"
          check-tree: "false"
      - name: Keep the first outcome
        env:
          OUTCOME: ${{ steps.unsigned.outcome }}
          VERIFIED: ${{ steps.unsigned.outputs.verified }}
          REPORT: ${{ steps.unsigned.outputs.report }}
        run: |
          echo "UNSIGNED_OUTCOME=$OUTCOME UNSIGNED_VERIFIED=$VERIFIED" > "$TEST_RESULTS/unsigned.txt"
          cp "$REPORT" "$TEST_RESULTS/unsigned-report.json"
      - name: Modify a tracked file after checkout
        run: echo "injected" >> src/app.txt
      - id: modified
        continue-on-error: true
        uses: ./
        with:
          artifacts: dist/*.bin
          key: ${{ env.TEST_KEY }}
          certificate: ${{ env.TEST_CERT }}
          trust-roots: ${{ env.TEST_TRUST_ROOTS }}
          verify-commits: "false"
          check-tree: "true"
      - name: Keep the second outcome
        env:
          OUTCOME: ${{ steps.modified.outcome }}
          VERIFIED: ${{ steps.modified.outputs.verified }}
          REPORT: ${{ steps.modified.outputs.report }}
        run: |
          echo "MODIFIED_OUTCOME=$OUTCOME MODIFIED_VERIFIED=$VERIFIED" > "$TEST_RESULTS/modified.txt"
          cp "$REPORT" "$TEST_RESULTS/modified-report.json"
"""

GITIGNORE = "dist/\n__pycache__/\n.gitlab-ci-local/\nsealgate-report.json\nsealgate.env\n"


def _policy(user: SshUser) -> str:
    return (
        "version: 1\nsigners:\n  - name: alice\n    roles: [developer, policy-admin]\n"
        f'    ssh: ["{user.public_line}"]\n'
    )


def _statuses(report: dict[str, Any]) -> dict[str, str]:
    return {stage["name"]: stage["status"] for stage in report["stages"]}


def _reasons(report: dict[str, Any], name: str) -> str:
    return " ".join(r for s in report["stages"] if s["name"] == name for r in s["reasons"])


def _signed_repo_with_unsigned_head(tmp_path: Path, files: dict[str, str], **kw: Any) -> Path:
    """The action and a policy allowing alice in one commit signed by alice (tag `base`), then
    an unsigned commit on top: `base..HEAD` holds exactly that unsigned commit."""
    keys = tmp_path / "keys"
    keys.mkdir()
    alice = ssh_user(keys, "alice")
    repo = git_repo_with_action(
        tmp_path / "repo",
        {".sealgate/policy.yml": _policy(alice), "src/app.txt": "app\n", **files},
        signer=alice,
        **kw,
    )
    commit_unsigned(repo, {"src/extra.txt": "sneaked in\n"}, "unsigned change")
    return repo


def test_action_fails_on_an_unsigned_commit_and_a_modified_workspace_under_act(
    hsm: HsmFixture, tmp_path: Path
) -> None:
    repo = _signed_repo_with_unsigned_head(
        tmp_path, {".github/workflows/release.yml": FAILING_WORKFLOW, ".gitignore": GITIGNORE}
    )
    results = tmp_path / "results"
    results.mkdir()
    run = run_act(
        repo,
        cache=tmp_path / "cache",
        secrets={},
        env={
            "TEST_KEY": hsm.uri("ec256"),
            "SOFTHSM2_CONF": hsm.env["SOFTHSM2_CONF"],
            "TEST_CERT": str(hsm.cert_pems["ec256"]),
            "TEST_TRUST_ROOTS": str(hsm.root_pem),
            "TEST_RESULTS": str(results),
        },
    )
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-8000:]  # both failing steps are continue-on-error

    # (a) the unsigned commit in base..HEAD stops the run before signing.
    outcome = (results / "unsigned.txt").read_text()
    assert "UNSIGNED_OUTCOME=failure UNSIGNED_VERIFIED=false" in outcome, outcome
    report = json.loads((results / "unsigned-report.json").read_text())
    assert _statuses(report)["commits"] == "failed"
    assert _statuses(report)["sign"] == "skipped"
    assert "'unsigned change': unsigned" in _reasons(report, "commits")
    # act prints each step's job summary into its log ("Summary - ..."): the first is this step's.
    summaries = log.split("Summary - ")[1:]
    assert summaries, log[-8000:]
    assert "| commits | ❌ failed |" in summaries[0], summaries[0]
    assert "'unsigned change': unsigned" in summaries[0], summaries[0]

    # (b) a tracked file modified in the workspace fails the tree proof, naming the file.
    outcome = (results / "modified.txt").read_text()
    assert "MODIFIED_OUTCOME=failure MODIFIED_VERIFIED=false" in outcome, outcome
    report = json.loads((results / "modified-report.json").read_text())
    assert _statuses(report)["tree"] == "failed"
    assert _statuses(report)["sign"] == "skipped"
    assert "src/app.txt" in _reasons(report, "tree")
    assert "| tree | ❌ failed |" in summaries[-1], summaries[-1]
    assert "modified src/app.txt: content differs" in summaries[-1], summaries[-1]
    assert "file=src/app.txt,title=sealgate tree::modified: content differs" in log, log[-3000:]


# A real run with gitlab-ci-local -----------------------------------------------------------


def _run_component(
    hsm: HsmFixture,
    tsa: LocalTsa,
    tsa_pki: TsaPki,
    tmp_path: Path,
    jobs: dict[str, Any],
    *,
    inputs: dict[str, Any] | None = None,
    unsigned_head: bool = False,
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """A pipeline: build, the component's signing and gate jobs (merged with `jobs`), release.

    `inputs` override the component's inputs; `unsigned_head` builds the repository as a commit
    signed by alice under a policy allowing her (tag `base`), then an unsigned commit.
    """
    pipeline = {
        "stages": ["build", "sign", "release"],
        "include": [
            {
                "local": "gitlab-ci-component.yml",
                "inputs": {
                    "artifacts": "dist/*.bin",
                    "key": hsm.uri("ec256"),
                    "certificate": str(hsm.cert_pems["ec256"]),
                    "certificate_chain": str(hsm.chain_pem),
                    "tsa_urls": tsa.url,
                    "tsa_roots": str(tsa_pki.root_pem),
                    "trust_roots": str(hsm.root_pem),
                    "verify_commits": "false",
                    "job_artifacts": ["dist/", "sealgate-report.json"],
                    **(inputs or {}),
                },
            }
        ],
        "build": {
            "stage": "build",
            "script": [
                "mkdir -p dist",
                "echo one > dist/one.bin",
                "echo two > dist/two.bin",
                "echo never signed > dist/late.dat",  # matches no `artifacts` glob of the signer
            ],
            "artifacts": {"paths": ["dist/"]},
        },
        "release": {
            "stage": "release",
            "needs": ["sealgate-verify", {"job": "sealgate-sign", "artifacts": True}],
            "script": ['echo "released verified=$SEALGATE_VERIFIED sigs=$SEALGATE_SIGNATURES"'],
        },
        **jobs,
    }
    files = {
        ".gitlab-ci.yml": yaml.safe_dump(pipeline, sort_keys=False),
        ".gitignore": GITIGNORE,
        # the build job's outputs reach the signing job's workspace: declared, as the README says
        "sealgate.yml": "outputs: [dist/]\n",
    }
    extra = ["gitlab-ci-component.yml"]
    if unsigned_head:
        repo = _signed_repo_with_unsigned_head(tmp_path, files, extra=extra)
    else:
        repo = git_repo_with_action(tmp_path / "repo", files, extra=extra)
    run = run_pipeline(
        repo, home=tmp_path / "gcl-home", variables={"SOFTHSM2_CONF": hsm.env["SOFTHSM2_CONF"]}
    )
    return repo, run


def test_component_signs_and_gates_under_gitlab_ci_local(
    hsm: HsmFixture, tsa: LocalTsa, tsa_pki: TsaPki, tmp_path: Path
) -> None:
    repo, run = _run_component(hsm, tsa, tsa_pki, tmp_path, {})
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-8000:]
    # The dotenv report of the signing job reaches the jobs that need it.
    assert "released verified=true sigs=" in log, log[-8000:]
    released = log[log.index("released verified=true sigs=") :].splitlines()[0]
    assert sorted(Path(p).name for p in released.split("sigs=")[1].split(",")) == [
        "one.bin.p7s",
        "two.bin.p7s",
    ]
    artifacts = repo / ".gitlab-ci-local" / "artifacts" / "sealgate-sign"
    for name in ("one.bin", "two.bin"):
        check = openssl_cms_verify(
            artifacts / "dist" / f"{name}.p7s", repo / "dist" / name, hsm.root_pem
        )
        assert check.returncode == 0, check.stderr


def test_component_gate_blocks_an_unsigned_artifact_under_gitlab_ci_local(
    hsm: HsmFixture, tsa: LocalTsa, tsa_pki: TsaPki, tmp_path: Path
) -> None:
    # The gate is asked about an artifact the signing job never signed: it must block the release.
    gate = {"sealgate-verify": {"variables": {"SEALGATE_ARTIFACTS": "dist/*.bin,dist/*.dat"}}}
    _, run = _run_component(hsm, tsa, tsa_pki, tmp_path, gate)
    log = run.stdout + run.stderr
    assert run.returncode != 0, log[-8000:]
    assert re.search(r"PASS\s+sealgate-sign", log), log[-8000:]
    assert re.search(r"FAIL\s+sealgate-verify", log), log[-8000:]
    assert "dist/late.dat.p7s missing" in log, log[-8000:]
    assert "released verified" not in log, "the release ran although the gate failed"


def _job_artifacts(repo: Path, job: str) -> Path:
    return repo / ".gitlab-ci-local" / "artifacts" / job


def _dotenv(repo: Path, job: str) -> dict[str, str]:
    """The dotenv report `job` left, where gitlab-ci-local keeps it for the jobs that need it."""
    path = _job_artifacts(repo, job) / ".gitlab-ci-reports" / "dotenv" / "sealgate.env"
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def _job_report(repo: Path, job: str) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(
        (_job_artifacts(repo, job) / "sealgate-report.json").read_text()
    )
    return report


def test_component_stops_at_an_unsigned_commit_under_gitlab_ci_local(
    hsm: HsmFixture, tsa: LocalTsa, tsa_pki: TsaPki, tmp_path: Path
) -> None:
    inputs = {"verify_commits": "true", "range": "base..HEAD"}
    repo, run = _run_component(hsm, tsa, tsa_pki, tmp_path, {}, inputs=inputs, unsigned_head=True)
    log = run.stdout + run.stderr
    assert run.returncode != 0, log[-8000:]
    assert re.search(r"FAIL\s+sealgate-sign", log), log[-8000:]
    assert "'unsigned change': unsigned" in log, log[-8000:]
    assert "released verified" not in log, "the release ran although signing failed"
    assert _dotenv(repo, "sealgate-sign") == {
        "SEALGATE_SIGNATURES": "",
        "SEALGATE_REPORT": "sealgate-report.json",
        "SEALGATE_VERIFIED": "false",
    }
    report = _job_report(repo, "sealgate-sign")
    assert _statuses(report)["commits"] == "failed" and _statuses(report)["sign"] == "skipped"
    assert "'unsigned change': unsigned" in _reasons(report, "commits")


def test_component_stops_at_a_modified_workspace_under_gitlab_ci_local(
    hsm: HsmFixture, tsa: LocalTsa, tsa_pki: TsaPki, tmp_path: Path
) -> None:
    # A tracked file changed in the signing job's workspace before `sealgate run`.
    jobs = {"sealgate-sign": {"before_script": ["echo injected >> README.md"]}}
    repo, run = _run_component(hsm, tsa, tsa_pki, tmp_path, jobs)
    log = run.stdout + run.stderr
    assert run.returncode != 0, log[-8000:]
    assert re.search(r"FAIL\s+sealgate-sign", log), log[-8000:]
    assert "modified README.md: content differs" in log, log[-8000:]
    assert "released verified" not in log, "the release ran although signing failed"
    assert _dotenv(repo, "sealgate-sign")["SEALGATE_VERIFIED"] == "false"
    report = _job_report(repo, "sealgate-sign")
    assert _statuses(report)["tree"] == "failed" and _statuses(report)["sign"] == "skipped"
    assert "modified README.md: content differs" in _reasons(report, "tree")


def test_component_gate_blocks_a_tampered_artifact_under_gitlab_ci_local(
    hsm: HsmFixture, tsa: LocalTsa, tsa_pki: TsaPki, tmp_path: Path
) -> None:
    # The artifact changes between the signing job and the gate: the gate must block the release.
    jobs = {"sealgate-verify": {"before_script": ["echo tampered >> dist/one.bin"]}}
    repo, run = _run_component(hsm, tsa, tsa_pki, tmp_path, jobs)
    log = run.stdout + run.stderr
    assert run.returncode != 0, log[-8000:]
    assert re.search(r"PASS\s+sealgate-sign", log), log[-8000:]
    assert re.search(r"FAIL\s+sealgate-verify", log), log[-8000:]
    assert "FAILED dist/one.bin: dist/one.bin.p7s: digest mismatch" in log, log[-8000:]
    assert "released verified" not in log, "the release ran although the gate failed"
    assert _dotenv(repo, "sealgate-sign")["SEALGATE_VERIFIED"] == "true"
