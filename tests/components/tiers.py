"""Which tier a test belongs to, judged from where it lives and what it uses (see conftest)."""

from __future__ import annotations

import fnmatch
import types
from collections.abc import Collection, Iterable
from typing import Any

import pytest


def code_names(function: Any, namespace: dict[str, Any], depth: int = 4) -> set[str]:
    """The names (and short string constants: a tool run as ["gpg", ...]) a test's code uses,
    following the module's own helpers and nested functions `depth` calls deep, so a helper
    such as `_run_component` counts as what it calls."""
    names: set[str] = set()
    seen: set[types.CodeType] = set()
    level = [getattr(function, "__code__", None)]
    for _ in range(depth):
        following: list[types.CodeType | None] = []
        for code in level:
            if not isinstance(code, types.CodeType) or code in seen:
                continue
            seen.add(code)
            names.update(code.co_names)
            names.update(c for c in code.co_consts if isinstance(c, str) and len(c) < 40)
            following += [c for c in code.co_consts if isinstance(c, types.CodeType)]
            for name in code.co_names:
                helper = namespace.get(name)
                if isinstance(helper, types.FunctionType) and helper.__globals__ is namespace:
                    following.append(helper.__code__)
        level = following
    return names


def matches(nodeid: str, patterns: Iterable[str]) -> bool:
    """A pattern with parameters ("test_x[a-b]") names one case exactly; any other is an
    fnmatch pattern for the node id without its parameters (all cases of a test)."""
    base = nodeid.split("[", 1)[0]
    return any(
        nodeid == pattern if "[" in pattern else fnmatch.fnmatchcase(base, pattern)
        for pattern in patterns
    )


def mark(
    items: list[pytest.Item],
    *,
    component_fixtures: Collection[str],
    component_calls: Collection[str],
    plugin_calls: Collection[str],
    slow: Collection[str],
) -> None:
    """Add the tier markers: adversarial by folder, component and plugin by what a test uses
    (its fixtures, or the component helpers its code calls), slow by the measured list."""
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        function = getattr(item, "function", None)
        module = getattr(item, "module", None)
        names = code_names(function, vars(module)) if module is not None else set()
        fixtures = set(getattr(item, "fixturenames", ()))
        if path.startswith("tests/adversarial/"):
            item.add_marker(pytest.mark.adversarial)
        if names & set(plugin_calls):
            item.add_marker(pytest.mark.plugin)
        if fixtures & set(component_fixtures) or names & set(component_calls):
            item.add_marker(pytest.mark.component)
        if matches(item.nodeid, slow) and item.get_closest_marker("slow") is None:
            item.add_marker(pytest.mark.slow)
