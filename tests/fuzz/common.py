"""Shared settings and structure-aware mutations for the fuzz targets.

Each target starts from a VALID object made at test time and mutates it (bit flips, length
bytes, truncation, splices, dictionary tokens), plus pure random bytes. The bar: the target
raises nothing but its module's typed errors. CI runs `SEALGATE_FUZZ_EXAMPLES` examples per
target (default 200), derandomized so a CI failure reproduces; `python -m bench.fuzz` runs more.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.components import IN_CI

EXAMPLES = int(os.environ.get("SEALGATE_FUZZ_EXAMPLES") or 200)

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=IN_CI and not os.environ.get("SEALGATE_FUZZ_RANDOM"),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)

#: Bytes that matter in DER and binary framing: lengths, indefinite length, tags, extremes.
DER_BYTES = [0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x0C, 0x13, 0x16, 0x17, 0x18, 0x30,
             0x31, 0x7F, 0x80, 0x81, 0x82, 0x83, 0x84, 0x88, 0xA0, 0xA1, 0xFE, 0xFF]  # fmt: skip
#: Tokens that change the meaning of YAML, git headers, armor and key lines.
TEXT_TOKENS = [b"\n", b"\r\n", b"\x00", b"\xff", b"\xc3\x28", b" ", b"\t", b": ", b"- ", b"[",
               b"]", b"{", b"}", b"&a ", b"*a", b"<<: ", b"!!set ", b"!!binary ", b"? ", b"~",
               b"__line__: 1\n", b"'", b'"', b"\\u0000", b"\\ud800", b"#", b"=", b"-----",
               b"gpgsig ", b"gpgsig-sha256 ", b"tree ", b"parent ", b"object ", b"tag ",
               b"-----BEGIN SSH SIGNATURE-----\n", b"-----END SSH SIGNATURE-----\n",
               b"-----BEGIN PGP SIGNATURE-----\n", b"-----END PGP SIGNATURE-----\n",
               b"1e999", b"-0", b"99999999999999999999", b"NaN", b"true", b"null"]  # fmt: skip


@st.composite
def mutated(
    draw: st.DrawFn,
    seed: bytes,
    *,
    tokens: Sequence[bytes] = (),
    others: Sequence[bytes] = (),
    max_ops: int = 4,
) -> bytes:
    """`seed` changed by 1..max_ops mutations; `others` are spliced in, `tokens` inserted."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, max_ops))):
        if not data:
            data += draw(st.binary(min_size=1, max_size=16))
            continue
        i = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(_OPS if tokens or others else _OPS[:7]))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte":
            data[i] = draw(st.sampled_from(DER_BYTES))
        elif op == "truncate":
            del data[i:]
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 64))]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "duplicate":
            data[i:i] = data[i : i + draw(st.integers(1, 256))]
        elif op == "length":  # a big or odd length where one may be
            data[i : i + 1] = bytes([draw(st.sampled_from([0x84, 0x88, 0x80, 0x81]))]) + b"\xff" * 4
        elif op == "token" and tokens:
            data[i:i] = draw(st.sampled_from(list(tokens)))
        elif op == "splice" and others:
            other = draw(st.sampled_from(list(others)))
            j = draw(st.integers(0, max(len(other) - 1, 0)))
            data[i:] = other[j:]
    return bytes(data)


_OPS = ["flip", "byte", "truncate", "delete", "insert", "duplicate", "length", "token", "splice"]


def hostile(
    seed: bytes, *, tokens: Sequence[bytes] = (), others: Sequence[bytes] = ()
) -> st.SearchStrategy[bytes]:
    """Mostly mutations of `seed`, sometimes the seed itself, sometimes random bytes."""
    return st.one_of(
        mutated(seed, tokens=tokens, others=others),
        mutated(seed, tokens=tokens, others=others, max_ops=16),
        st.just(seed),
        st.binary(max_size=2048),
    )


def only_typed(
    call: Callable[[], Any], typed: tuple[type[BaseException], ...]
) -> BaseException | None:
    """Run the target; its typed errors are fine, anything else fails the example."""
    try:
        call()
    except typed as exc:
        return exc
    return None
