"""RFC 6962 / RFC 9162 Merkle trees over the audit records' chained hashes.

Leaves are the records' `hash` values; a leaf's tree hash is SHA-256(0x00 || leaf) and a node's
SHA-256(0x01 || left || right), so a leaf can never pass for a node (second-preimage safety).
Proof generation follows RFC 6962 §2.1.1-2.1.2; the verifiers are RFC 9162 §2.1.3.2 and §2.1.4.2,
which use only the proof, never the leaves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

HASH_SIZE = 32
#: The root of the empty tree: SHA-256 of nothing.
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(size: int) -> int:
    """The largest power of two smaller than `size` (size >= 2): where RFC 6962 splits a tree."""
    return 1 << ((size - 1).bit_length() - 1)


class Frontier:
    """The compact range of a growing tree: one subtree root per set bit of the size, so leaves
    stream in (the verifier reads millions of records) and the root costs O(log n)."""

    def __init__(self) -> None:
        self.size = 0
        #: (height, hash) of the perfect subtrees, largest first.
        self._stack: list[tuple[int, bytes]] = []

    def append(self, leaf: bytes) -> None:
        height, value = 0, leaf_hash(leaf)
        while self._stack and self._stack[-1][0] == height:
            _, left = self._stack.pop()
            height, value = height + 1, node_hash(left, value)
        self._stack.append((height, value))
        self.size += 1

    def extend(self, leaves: Iterable[bytes]) -> None:
        for leaf in leaves:
            self.append(leaf)

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        value = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            value = node_hash(left, value)
        return value


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of RFC 6962 §2.1."""
    frontier = Frontier()
    frontier.extend(leaves)
    return frontier.root()


def _subtree(leaves: Sequence[bytes], start: int, stop: int) -> bytes:
    frontier = Frontier()
    frontier.extend(leaves[i] for i in range(start, stop))
    return frontier.root()


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """PATH(index, D[n]): the sibling hashes from the leaf up to the root."""
    if not 0 <= index < len(leaves):
        raise ValueError(f"leaf {index} is not in a tree of {len(leaves)}")
    path: list[bytes] = []
    start, stop, m = 0, len(leaves), index
    while stop - start > 1:
        k = _split(stop - start)
        if m < k:
            path.append(_subtree(leaves, start + k, stop))
            stop = start + k
        else:
            path.append(_subtree(leaves, start, start + k))
            start, m = start + k, m - k
    path.reverse()
    return path


def consistency_proof(leaves: Sequence[bytes], old_size: int) -> list[bytes]:
    """PROOF(m, D[n]) of RFC 6962 §2.1.2 for 0 < m <= n (empty when m == n)."""
    size = len(leaves)
    if not 0 < old_size <= size:
        raise ValueError(f"no consistency proof from size {old_size} to {size}")
    proof: list[bytes] = []
    start, stop, m, whole = 0, size, old_size, True
    while m != stop - start:
        k = _split(stop - start)
        if m <= k:
            proof.append(_subtree(leaves, start + k, stop))
            stop = start + k
        else:
            proof.append(_subtree(leaves, start, start + k))
            start, m, whole = start + k, m - k, False
    if not whole:
        proof.append(_subtree(leaves, start, stop))
    proof.reverse()
    return proof


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes | None:
    """The root a proof leads to (RFC 9162 §2.1.3.2), or None when the proof cannot fit the size."""
    if not 0 <= index < size or any(len(p) != HASH_SIZE for p in proof):
        return None
    fn, sn, value = index, size - 1, leaf_hash(leaf)
    for sibling in proof:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            value = node_hash(sibling, value)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            value = node_hash(value, sibling)
        fn, sn = fn >> 1, sn >> 1
    return value if sn == 0 else None


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], expected_root: bytes
) -> bool:
    """True when `leaf` is leaf `index` of the tree of `size` whose root is `expected_root`."""
    return root_from_inclusion(index, size, leaf, proof) == expected_root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """True when the tree of `old_size` is a prefix of the tree of `new_size` (RFC 9162 §2.1.4.2)."""
    if not 0 < old_size <= new_size or any(len(p) != HASH_SIZE for p in proof):
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is a node of the new tree
        path.insert(0, old_root)
    if not path:
        return False
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    first = second = path[0]
    for sibling in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            first, second = node_hash(sibling, first), node_hash(sibling, second)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            second = node_hash(second, sibling)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and first == old_root and second == new_root
