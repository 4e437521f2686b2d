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
from tests.components.act import git_repo_with_action, run_act
from tests.components.cli import openssl_cms_verify
from tests.components.gitlab_ci_local import run_pipeline
from tests.components.hsm import HsmFixture
from tests.components.tsa import LocalTsa, TsaPki

ROOT = Path(__file__).resolve().parent.parent
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


# A real run with gitlab-ci-local -----------------------------------------------------------


def _run_component(
    hsm: HsmFixture, tsa: LocalTsa, tsa_pki: TsaPki, tmp_path: Path, jobs: dict[str, Any]
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """A pipeline: build, the component's signing and gate jobs (merged with `jobs`), release."""
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
    repo = git_repo_with_action(
        tmp_path / "repo",
        {
            ".gitlab-ci.yml": yaml.safe_dump(pipeline, sort_keys=False),
            ".gitignore": "dist/\n.gitlab-ci-local/\nsealgate-report.json\nsealgate.env\n",
        },
        extra=["gitlab-ci-component.yml"],
    )
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
