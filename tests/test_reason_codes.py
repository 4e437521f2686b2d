"""The reason-code table (docs/reason-codes.md) and the code agree: every code the code can
raise or report is documented, every documented code is used, and codes keep their shape.

The audit log and the dashboard key on these codes, so a code that changes or vanishes
silently breaks them; this test makes that a visible change to the table.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "docs" / "reason-codes.md"
PACKAGES = ("signer", "integrity", "sealgate")

_ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|\s*([0-9])\s*\|\s*(\S.*?)\s*\|\s*$")
_SHAPE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


def _codes_in(tree: ast.AST) -> list[str]:
    """The reason codes a module spells out: `code="..."` keyword arguments, assignments to
    `code` or a `*_CODE` name, the values of a `*_CODES` table, and `"code": "..."` entries."""
    found: list[str] = []

    def text(node: ast.AST | None) -> None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.append(node.value)

    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "code":
            text(node.value)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                name = getattr(target, "id", getattr(target, "attr", ""))
                if name == "code" or name.endswith("_CODE"):
                    text(node.value)
                elif name.endswith("_CODES") and isinstance(node.value, ast.Dict):
                    for value in node.value.values:
                        text(value)
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "code":
                    text(value)
    return found


def used_codes() -> dict[str, list[str]]:
    """Code -> the files that use it."""
    found: dict[str, list[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for code in _codes_in(ast.parse(path.read_text(), filename=str(path))):
                found.setdefault(code, []).append(str(path.relative_to(ROOT)))
    return found


def documented_codes() -> dict[str, tuple[int, str]]:
    rows: dict[str, tuple[int, str]] = {}
    for number, line in enumerate(TABLE.read_text().splitlines(), 1):
        match = _ROW.match(line)
        if match:
            code, exit_code, meaning = match.groups()
            assert code not in rows, f"{TABLE.name}:{number}: {code} listed twice"
            rows[code] = (int(exit_code), meaning)
    return rows


def test_every_used_code_is_documented() -> None:
    missing = {
        code: files for code, files in used_codes().items() if code not in documented_codes()
    }
    assert not missing, f"codes used but not in docs/reason-codes.md: {missing}"


def test_every_documented_code_is_used() -> None:
    unused = sorted(set(documented_codes()) - set(used_codes()))
    assert not unused, f"codes in docs/reason-codes.md that nothing raises: {unused}"


def test_codes_are_stable_identifiers() -> None:
    """kebab-case, no data in them, exit codes from the documented set."""
    for code, (exit_code, meaning) in documented_codes().items():
        assert _SHAPE.match(code), code
        assert exit_code in (1, 2, 3), (code, exit_code)
        assert meaning, code


def test_the_scan_sees_each_form() -> None:
    """The scanner itself (a check that cannot fail is none)."""
    text = (
        'raise X("m", code="digest-mismatch")\nclass E:\n    code = "bad-input"\n'
        'D = {"code": "unsigned"}\nTAMPERED_CODE = "tampered"\nK_CODES = {"a": "tree-added"}\n'
        'OTHER = {"a": "not-a-code"}\n'
    )
    assert sorted(_codes_in(ast.parse(text))) == [
        "bad-input", "digest-mismatch", "tampered", "tree-added", "unsigned",
    ]  # fmt: skip
