"""The house rules, held by CI: ruff (lint and format) and mypy --strict over the whole tree."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

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


#: DESIGN.md section 2: which top-level packages each package may import.
FORBIDDEN_IMPORTS = {
    "signer": ("integrity", "sealgate"),
    "integrity": ("signer", "sealgate"),
}


def _imported_packages(path: Path) -> set[str]:
    """The top-level names a module imports (plain, from-imports and importlib strings)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN_IMPORTS))
def test_import_rules_of_the_design_hold(package: str) -> None:
    """`signer` and `integrity` do not import each other or `sealgate` (nothing imports upward)."""
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for name in sorted(_imported_packages(path) & set(FORBIDDEN_IMPORTS[package]))
    ]
    assert not offenders, "\n".join(offenders)


def test_the_import_rule_check_sees_an_offence(tmp_path: Path) -> None:
    """The checker itself: each way of importing is seen (a check that cannot fail is none)."""
    module = tmp_path / "offender.py"
    module.write_text(
        "import integrity.tree\nfrom sealgate.cli import main\n"
        "import importlib\nimportlib.import_module('signer.keys')\n"
    )
    assert _imported_packages(module) >= {"integrity", "sealgate", "signer"}
