"""The house rules, held by CI: ruff (lint and format), mypy --strict over the whole tree, and
the import contracts of DESIGN.md section 2 (import-linter)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path
from subprocess import CompletedProcess

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["mypy"],
    ],
    ids=["ruff-check", "ruff-format", "mypy-strict"],
)
def test_linter_is_clean(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _lint_imports(cwd: Path, *extra: str, pythonpath: Path | None = None) -> CompletedProcess[str]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    script = Path(sys.executable).parent / "lint-imports"
    return subprocess.run(
        [str(script), "--no-cache", *extra], cwd=cwd, env=env, capture_output=True, text=True,
        check=False,
    )  # fmt: skip


def test_import_contracts_hold() -> None:
    """DESIGN.md section 2 as import-linter contracts (pyproject.toml): signer and integrity are
    independent, neither imports sealgate, nothing in sealgate imports upward, and the service
    never imports the CLI (nor integrity beyond its attestations)."""
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 5 kept, 0 broken." in result.stdout, result.stdout


def test_import_contracts_see_an_upward_import(tmp_path: Path) -> None:
    """The same kind of contract fails on an offence (a check that cannot fail is none)."""
    package = tmp_path / "demo_pkg"
    (package / "low").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "low" / "__init__.py").write_text("import demo_pkg.high\n")
    (package / "high.py").write_text("import demo_pkg.low\n")
    (tmp_path / ".importlinter").write_text(
        "[importlinter]\nroot_package = demo_pkg\n\n[importlinter:contract:1]\n"
        "name = no upward import\ntype = layers\nlayers =\n    demo_pkg.high\n    demo_pkg.low\n"
    )
    result = _lint_imports(tmp_path, pythonpath=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "demo_pkg.low is not allowed to import demo_pkg.high" in result.stdout, result.stdout


#: Imports by string (`importlib.import_module("...")`) that import-linter cannot see.
FORBIDDEN_IMPORTS = {
    "signer": ("integrity", "sealgate"),
    "integrity": ("signer", "sealgate"),
}


def _imported_by_string(path: Path) -> set[str]:
    """The top-level names a module imports through importlib.import_module string literals."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return {
        node.args[0].value.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    }


@pytest.mark.parametrize("package", sorted(FORBIDDEN_IMPORTS))
def test_no_forbidden_import_by_string(package: str) -> None:
    """What import-linter cannot see: `signer` and `integrity` import nothing of each other or
    of `sealgate` by name either."""
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for name in sorted(_imported_by_string(path) & set(FORBIDDEN_IMPORTS[package]))
    ]
    assert not offenders, "\n".join(offenders)


def test_the_string_import_check_sees_an_offence(tmp_path: Path) -> None:
    module = tmp_path / "offender.py"
    module.write_text("import importlib\nimportlib.import_module('signer.keys')\n")
    assert _imported_by_string(module) == {"signer"}


#: DESIGN.md section 2 for the service: which of its modules may import what (top-level names).
SERVICE = ROOT / "sealgate" / "service"
SERVICE_ONLY_IN = {
    # the web framework lives in one file; the server (uvicorn) is not the framework
    "fastapi": {"app.py"},
    "starlette": {"app.py"},
    # the signer is reached through one door (the client and its token source, on the job's
    # side, hash, fetch the token and verify answers)
    "signer": {"signing.py", "client.py", "idtoken.py"},
}


def _top_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = _imported_by_string(path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def service_import_offences(root: Path) -> list[str]:
    offences = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        for name in sorted(_top_level_imports(path) & set(SERVICE_ONLY_IN)):
            if relative not in SERVICE_ONLY_IN[name]:
                offences.append(f"sealgate/service/{relative} imports {name}")
    return offences


def test_service_reaches_the_framework_and_the_signer_through_one_module() -> None:
    assert SERVICE.is_dir()
    offences = service_import_offences(SERVICE)
    assert not offences, "\n".join(offences)


def test_the_service_import_check_sees_an_offence(tmp_path: Path) -> None:
    (tmp_path / "grants.py").write_text(
        "from signer.keys import open_key\nimport fastapi.routing\n"
    )
    (tmp_path / "app.py").write_text("import fastapi\n")
    assert service_import_offences(tmp_path) == [
        "sealgate/service/grants.py imports fastapi",
        "sealgate/service/grants.py imports signer",
    ]
