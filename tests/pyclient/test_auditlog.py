"""The device as a witness of the audit log: consistency proofs (runs on CPython and in Pyodide)."""

from __future__ import annotations

import hashlib
from typing import Any

from pyclient import auditlog
from pyclient.auditlog import Checkpoint


def _leaves(n: int, salt: str = "") -> list[bytes]:
    return [hashlib.sha256(f"{salt}event {i}".encode()).digest() for i in range(n)]


def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def _mth(hashes: list[bytes]) -> bytes:
    if len(hashes) == 1:
        return hashes[0]
    k = _split(len(hashes))
    return auditlog.node_hash(_mth(hashes[:k]), _mth(hashes[k:]))


def _subproof(m: int, hashes: list[bytes], complete: bool) -> list[bytes]:
    n = len(hashes)
    if m == n:
        return [] if complete else [_mth(hashes)]
    k = _split(n)
    if m <= k:
        return _subproof(m, hashes[:k], complete) + [_mth(hashes[k:])]
    return _subproof(m - k, hashes[k:], False) + [_mth(hashes[:k])]


def _proof(leaves: list[bytes], first: int) -> list[bytes]:
    """RFC 9162 PROOF(m, D[n]) written independently of the server's code."""
    if first in (0, len(leaves)):
        return []
    return _subproof(first, [auditlog.leaf_hash(d) for d in leaves], True)


def _cp(leaves: list[bytes]) -> Checkpoint:
    return Checkpoint(len(leaves), auditlog.merkle_root(leaves).hex(), "h" * 64, "t", "audit-signing:v1", "s")


def _wire(leaves: list[bytes], first: int) -> dict[str, Any]:
    return {"first": first, "second": len(leaves), "path": [p.hex() for p in _proof(leaves, first)]}


def test_every_prefix_is_proven_consistent() -> None:
    log = _leaves(37)
    for second in range(1, 38):
        for first in range(0, second + 1):
            proof = _proof(log[:second], first)
            assert auditlog.verify_consistency(first=first, second=second,
                                               first_root=auditlog.merkle_root(log[:first]),
                                               second_root=auditlog.merkle_root(log[:second]), proof=proof)


def test_the_device_adopts_a_grown_log_after_checking_the_proof() -> None:
    log = _leaves(20)
    held = _cp(log[:7])
    offered = _cp(log)
    decision = auditlog.checkpoint_offered(held, offered)
    assert (decision.kind, decision.first, decision.second) == ("need-proof", 7, 20)
    assert auditlog.checkpoint_proof_check(held, offered, _wire(log, 7)).kind == "adopt"
    assert auditlog.checkpoint_offered(None, offered).kind == "adopt"
    assert auditlog.checkpoint_offered(offered, offered).kind == "keep"


def test_a_rewritten_history_is_a_violation() -> None:
    original = _leaves(20)
    held = _cp(original[:9])
    # The server deleted event 4 and rebuilt the chain: a valid-looking bigger log, but not an extension.
    rewritten = original[:4] + original[5:] + _leaves(3, "new")
    offered = _cp(rewritten)
    assert auditlog.checkpoint_offered(held, offered).kind == "need-proof"
    verdict = auditlog.checkpoint_proof_check(held, offered, _wire(rewritten, 9))
    assert verdict.kind == "violation" and "rewritten" in verdict.reason
    # Same size, different root: contradiction without any proof.
    assert auditlog.checkpoint_offered(held, _cp(rewritten[:9])).kind == "violation"
    # A proof for other sizes, or garbage, is no proof.
    assert auditlog.checkpoint_proof_check(held, _cp(original), _wire(original, 8)).kind == "violation"
    assert auditlog.checkpoint_proof_check(held, _cp(original), {"first": 9, "second": 20,
                                                                  "path": ["zz"]}).kind == "violation"


def test_checkpoint_json_round_trip_and_bad_input() -> None:
    cp = _cp(_leaves(3))
    assert Checkpoint.from_json(cp.to_json()) == cp
    for bad in (None, {}, {"treeSize": -1, "root": "00" * 32}, {"treeSize": 1, "root": "xyz"},
                {"treeSize": True, "root": "00" * 32}):
        try:
            Checkpoint.from_json(bad)
        except auditlog.CheckpointError:
            continue
        raise AssertionError(f"accepted {bad!r}")
