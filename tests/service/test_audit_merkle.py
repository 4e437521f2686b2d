"""The audit log's Merkle tree against the RFC 6962 definitions written naively, for every size
1..64 and every pair m < n up to 64, and proofs that must not verify when anything is changed."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealgate.service.audit import merkle

N = 64
LEAVES = [hashlib.sha256(b"record %d" % i).digest() for i in range(N)]


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(d: list[bytes]) -> bytes:
    """RFC 6962 §2.1, word for word."""
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = _k(len(d))
    return hashlib.sha256(b"\x01" + mth(d[:k]) + mth(d[k:])).digest()


def path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*path(m, d[:k]), mth(d[k:])]
    return [*path(m - k, d[k:]), mth(d[:k])]


def subproof(m: int, d: list[bytes], whole: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if whole else [mth(d)]
    k = _k(n)
    if m <= k:
        return [*subproof(m, d[:k], whole), mth(d[k:])]
    return [*subproof(m - k, d[k:], False), mth(d[:k])]


def test_known_vectors() -> None:
    """The empty root is SHA-256(""); one leaf is H(0x00||leaf); two leaves H(0x01||l||r)."""
    assert merkle.root([]).hex() == hashlib.sha256(b"").hexdigest()
    assert merkle.root([b"a"]) == hashlib.sha256(b"\x00a").digest()
    left, right = hashlib.sha256(b"\x00a").digest(), hashlib.sha256(b"\x00b").digest()
    assert merkle.root([b"a", b"b"]) == hashlib.sha256(b"\x01" + left + right).digest()


def test_roots_and_inclusion_for_every_size_and_index() -> None:
    for n in range(1, N + 1):
        d = LEAVES[:n]
        root = mth(d)
        assert merkle.root(d) == root, n
        for m in range(n):
            proof = merkle.inclusion_proof(d, m)
            assert proof == path(m, d), (m, n)
            assert merkle.verify_inclusion(m, n, d[m], proof, root), (m, n)
            # the same proof must not place another leaf, index or size there
            assert not merkle.verify_inclusion(m, n, LEAVES[(m + 1) % N] + b"x", proof, root)
            if n > 1:
                assert not merkle.verify_inclusion((m + 1) % n, n, d[m], proof, root)
            if n < N:
                assert not merkle.verify_inclusion(m, n + 1, d[m], proof, mth(LEAVES[: n + 1]))


def test_consistency_for_every_pair() -> None:
    for n in range(1, N + 1):
        d = LEAVES[:n]
        new_root = mth(d)
        for m in range(1, n + 1):
            old_root = mth(d[:m])
            proof = merkle.consistency_proof(d, m)
            assert proof == subproof(m, d, True), (m, n)
            assert merkle.verify_consistency(m, n, old_root, new_root, proof), (m, n)
            assert not merkle.verify_consistency(m, n, new_root if m < n else b"\0" * 32,
                                                 new_root, proof), (m, n)  # fmt: skip
            # a rewritten leaf below m: the old root no longer follows
            if m < n:
                forged = [*d[: m - 1], b"forged", *d[m:]]
                assert not merkle.verify_consistency(m, n, old_root, mth(forged), proof)


def test_streaming_frontier_matches_every_prefix() -> None:
    frontier = merkle.Frontier()
    assert frontier.root() == mth([])
    for n, leaf in enumerate(LEAVES, start=1):
        frontier.append(leaf)
        assert frontier.size == n
        assert frontier.root() == mth(LEAVES[:n])


@pytest.mark.parametrize("bad", [-1, 5])
def test_proofs_refuse_what_is_not_in_the_tree(bad: int) -> None:
    with pytest.raises(ValueError, match="not in a tree of 5"):
        merkle.inclusion_proof(LEAVES[:5], bad)
    assert not merkle.verify_inclusion(bad, 5, LEAVES[0], [], mth(LEAVES[:5]))


def test_consistency_refuses_sizes_out_of_order() -> None:
    with pytest.raises(ValueError, match="from size 0 to 5"):
        merkle.consistency_proof(LEAVES[:5], 0)
    with pytest.raises(ValueError, match="from size 6 to 5"):
        merkle.consistency_proof(LEAVES[:5], 6)
    r3, r5 = mth(LEAVES[:3]), mth(LEAVES[:5])
    assert not merkle.verify_consistency(5, 3, r5, r3, merkle.consistency_proof(LEAVES[:5], 3))
    assert not merkle.verify_consistency(0, 5, merkle.EMPTY_ROOT, r5, [])
    assert not merkle.verify_consistency(5, 5, r5, r5, [r5])  # equal sizes: an empty proof only


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, N),
    data=st.data(),
)
def test_a_changed_proof_hash_never_verifies(n: int, data: st.DataObject) -> None:
    """Flip one bit of one proof hash, or drop or add one: neither proof still verifies."""
    d = LEAVES[:n]
    m = data.draw(st.integers(0, n - 1))
    proof = merkle.inclusion_proof(d, m)
    root = mth(d)
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        bad = list(proof)
        bad[i] = bytes(b ^ (1 << (bit % 8)) if j == bit // 8 else b for j, b in enumerate(bad[i]))
        assert not merkle.verify_inclusion(m, n, d[m], bad, root)
        assert not merkle.verify_inclusion(m, n, d[m], proof[:-1], root)
    assert not merkle.verify_inclusion(m, n, d[m], [*proof, root], root)
    old = data.draw(st.integers(1, n))
    cons = merkle.consistency_proof(d, old)
    if cons:
        i = data.draw(st.integers(0, len(cons) - 1))
        bad = list(cons)
        bad[i] = hashlib.sha256(bad[i]).digest()
        assert not merkle.verify_consistency(old, n, mth(d[:old]), root, bad)
    assert not merkle.verify_consistency(old, n, mth(d[:old]), root, [*cons, root])
