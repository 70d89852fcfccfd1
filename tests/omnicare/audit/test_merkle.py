"""RFC 9162 Merkle proofs: every inclusion and consistency proof verifies; altered ones do not."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from omnicare.audit import merkle


def _leaves(n: int) -> list[bytes]:
    return [hashlib.sha256(str(i).encode()).digest() for i in range(n)]


def test_known_small_trees() -> None:
    a, b, c = _leaves(3)
    assert merkle.root([]) == hashlib.sha256(b"").digest()
    assert merkle.root([a]) == hashlib.sha256(b"\x00" + a).digest()
    ab = merkle.node_hash(merkle.leaf_hash(a), merkle.leaf_hash(b))
    assert merkle.root([a, b, c]) == merkle.node_hash(ab, merkle.leaf_hash(c))


def test_all_proofs_for_trees_up_to_33_leaves() -> None:
    for n in range(1, 34):
        leaves = _leaves(n)
        root = merkle.root(leaves)
        frontier = merkle.Frontier()
        for i, leaf in enumerate(leaves):
            frontier.append(leaf)
            assert frontier.root() == merkle.root(leaves[: i + 1])
        for i in range(n):
            proof = merkle.inclusion_proof(leaves, i)
            assert merkle.verify_inclusion(leaf=leaves[i], index=i, size=n, proof=proof, root_hash=root)
            assert not merkle.verify_inclusion(leaf=leaves[(i + 1) % n] if n > 1 else b"x", index=i, size=n,
                                               proof=proof, root_hash=root)
        for m in range(0, n + 1):
            proof = merkle.consistency_proof(leaves, m)
            assert merkle.verify_consistency(first=m, second=n, first_root=merkle.root(leaves[:m]),
                                             second_root=root, proof=proof)


@given(st.integers(2, 200), st.data())
def test_a_rewritten_prefix_fails_consistency(n: int, data: st.DataObject) -> None:
    leaves = _leaves(n)
    m = data.draw(st.integers(1, n - 1))
    j = data.draw(st.integers(0, m - 1))
    forged = list(leaves)
    forged[j] = b"forged"
    proof = merkle.consistency_proof(forged, m)
    assert not merkle.verify_consistency(first=m, second=n, first_root=merkle.root(leaves[:m]),
                                         second_root=merkle.root(forged), proof=proof)


@given(st.integers(1, 300), st.data())
def test_frontier_roundtrips_through_json(n: int, data: st.DataObject) -> None:
    leaves = _leaves(n)
    f = merkle.Frontier()
    for leaf in leaves:
        f.append(leaf)
    g = merkle.Frontier.from_json(f.to_json())
    assert g.size == n and g.root() == merkle.root(leaves)
