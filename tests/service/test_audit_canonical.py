"""The record hash's canonical JSON: the fast path writes exactly RFC 8785's bytes."""

from __future__ import annotations

from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from sealgate.service.audit.records import canonical

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.text()
    | st.floats(allow_nan=False, allow_infinity=False)
)
_json: st.SearchStrategy[Any] = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)


def _rfc8785(value: Any) -> bytes | type[Exception]:
    try:
        return bytes(rfc8785.dumps(value))
    except (rfc8785.CanonicalizationError, ValueError) as exc:
        return type(exc)


@settings(max_examples=400, deadline=None)
@given(_json)
def test_canonical_is_rfc8785_for_any_json(value: Any) -> None:
    """Keys outside the BMP (UTF-16 order differs), control characters, big integers, floats."""
    expected = _rfc8785(value)
    if isinstance(expected, bytes):
        assert canonical(value) == expected
    else:
        with pytest.raises(expected):
            canonical(value)


@pytest.mark.parametrize(
    "value",
    [
        {"\U0001f600": 1, "\ue000": 2},  # UTF-16 puts the emoji (a surrogate pair) first
        {"a": "tab\there\x00\x1f\x7f\u2028"},
        {"n": 2**53 - 1, "m": -(2**53) + 1},
        [1.5, 1e21, -0.0],
    ],
)
def test_the_edges_of_the_fast_path(value: Any) -> None:
    assert canonical(value) == bytes(rfc8785.dumps(value))


def test_a_lone_surrogate_is_refused_as_rfc8785_refuses_it() -> None:
    with pytest.raises(rfc8785.CanonicalizationError):
        canonical({"name": "\ud800"})
