"""RFC 9162 (Certificate Transparency v2) Merkle tree: roots, inclusion and consistency proofs.

Pure functions over leaf *data* (here: each audit event's chain hash). Leaves are hashed
as ``SHA-256(0x00 || data)`` and interior nodes as ``SHA-256(0x01 || left || right)``,
so a leaf can never be passed off as a node. ``Frontier`` keeps the O(log n) compact
range of the tree so the server can append and know the root without rereading leaves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from pyclient import auditlog
from pyclient.auditlog import leaf_hash, node_hash  # the hashes the devices check proofs with, defined once

EMPTY_ROOT = hashlib.sha256(b"").digest()


def _split(n: int) -> int:
    """The largest power of two strictly less than ``n`` (n >= 2)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of the leaf data."""
    if not leaves:
        return EMPTY_ROOT
    return _mth([leaf_hash(d) for d in leaves])


def _mth(hashes: Sequence[bytes]) -> bytes:
    if len(hashes) == 1:
        return hashes[0]
    k = _split(len(hashes))
    return node_hash(_mth(hashes[:k]), _mth(hashes[k:]))


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """PATH(index, D[n]): the audit path proving leaf ``index`` is in the tree of ``leaves``."""
    if not 0 <= index < len(leaves):
        raise IndexError("leaf index outside the tree")
    return _path(index, [leaf_hash(d) for d in leaves])


def _path(m: int, hashes: Sequence[bytes]) -> list[bytes]:
    n = len(hashes)
    if n == 1:
        return []
    k = _split(n)
    if m < k:
        return _path(m, hashes[:k]) + [_mth(hashes[k:])]
    return _path(m - k, hashes[k:]) + [_mth(hashes[:k])]


def consistency_proof(leaves: Sequence[bytes], first: int) -> list[bytes]:
    """PROOF(first, D[n]): proves the tree of size ``first`` is a prefix of the tree of ``leaves``."""
    if not 0 <= first <= len(leaves):
        raise IndexError("first size outside the tree")
    if first in (0, len(leaves)):
        return []
    return _subproof(first, [leaf_hash(d) for d in leaves], True)


def _subproof(m: int, hashes: Sequence[bytes], complete: bool) -> list[bytes]:
    n = len(hashes)
    if m == n:
        return [] if complete else [_mth(hashes)]
    k = _split(n)
    if m <= k:
        return _subproof(m, hashes[:k], complete) + [_mth(hashes[k:])]
    return _subproof(m - k, hashes[k:], False) + [_mth(hashes[:k])]


def verify_inclusion(*, leaf: bytes, index: int, size: int, proof: Sequence[bytes], root_hash: bytes) -> bool:
    """RFC 9162 §2.1.3.2: does ``proof`` show leaf data ``leaf`` at ``index`` in the tree (size, root_hash)?"""
    if index >= size or index < 0:
        return False
    fn, sn, r = index, size - 1, leaf_hash(leaf)
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root_hash


# One rule in one place: the devices check consistency proofs with the same code (pyclient runs in Pyodide).
verify_consistency = auditlog.verify_consistency


class Frontier:
    """The compact range of a growing tree: the roots of its maximal perfect subtrees, left to right."""

    def __init__(self, nodes: Sequence[tuple[int, bytes]] = ()) -> None:
        self.nodes: list[tuple[int, bytes]] = list(nodes)

    @property
    def size(self) -> int:
        return sum(1 << h for h, _ in self.nodes)

    def append(self, data: bytes) -> None:
        height, node = 0, leaf_hash(data)
        while self.nodes and self.nodes[-1][0] == height:
            _, left = self.nodes.pop()
            node = node_hash(left, node)
            height += 1
        self.nodes.append((height, node))

    def root(self) -> bytes:
        if not self.nodes:
            return EMPTY_ROOT
        acc = self.nodes[-1][1]
        for _, left in reversed(self.nodes[:-1]):
            acc = node_hash(left, acc)
        return acc

    def to_json(self) -> list[list[object]]:
        return [[h, n.hex()] for h, n in self.nodes]

    @classmethod
    def from_json(cls, raw: list[list[object]] | None) -> Frontier:
        return cls([(int(str(h)), bytes.fromhex(str(n))) for h, n in (raw or [])])
