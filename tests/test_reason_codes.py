"""The reason-code table (docs/reason-codes.md) and the code agree: every code the code can
raise or report is documented, every documented code is used, and codes keep their shape.

The audit log and the dashboard key on these codes, so a code that changes or vanishes
silently breaks them; this test makes that a visible change to the table.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "docs" / "reason-codes.md"
PACKAGES = ("signer", "integrity", "sealgate")

#: `code="..."` / `code = "..."` (keyword arguments, class attributes, dataclass fields) and
#: `"code": "..."` in literal dicts.
_USE = re.compile(r"""(?:\bcode\s*=\s*|["']code["']\s*:\s*)["']([a-z0-9][a-z0-9-]*)["']""")
_ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|\s*([0-9])\s*\|\s*(\S.*?)\s*\|\s*$")
_SHAPE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


def used_codes() -> dict[str, list[str]]:
    """Code -> the files that use it."""
    found: dict[str, list[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for code in _USE.findall(path.read_text()):
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


def test_the_scan_sees_each_form(tmp_path: Path) -> None:
    """The scanner itself (a check that cannot fail is none)."""
    text = 'raise X("m", code="digest-mismatch")\n    code = "bad-input"\n{"code": "unsigned"}\n'
    assert _USE.findall(text) == ["digest-mismatch", "bad-input", "unsigned"]
