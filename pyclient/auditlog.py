"""The device as a witness of the server's audit log (CT-style gossip, RFC 9162 consistency proofs).

Every sync pull hands the device the server's newest signed audit checkpoint (``auditCheckpoint``:
tree size, Merkle root, ...). The device keeps the newest one it has accepted. When the server offers a
bigger tree, the device asks ``GET /api/audit/log/consistency?first=<held>&second=<offered>`` and accepts
the new checkpoint only if the proof shows the old tree is a prefix of the new one. A server that rewrote
history (deleted a patient's events and rebuilt the chain) cannot produce that proof for any device that
saw a checkpoint from before the rewrite.

Pure functions over bytes and dicts: no I/O, clock or randomness (the caller fetches and stores).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 leaf hash, ``SHA-256(0x00 || data)``: THE one (the server's tree, omnicare.audit.merkle, uses it)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node hash, ``SHA-256(0x01 || left || right)``: a leaf can never pass for a node."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def verify_consistency(
    *, first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 section 2.1.4.2: is the tree (first, first_root) a prefix of (second, second_root)?"""
    if first < 0 or first > second:
        return False
    if first == second:
        return not proof and first_root == second_root
    if first == 0:
        return not proof
    if not proof:
        return False
    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == first_root and sr == second_root and sn == 0


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """MTH of leaf data (for tests and small logs)."""
    if not leaves:
        return hashlib.sha256(b"").digest()

    def mth(hashes: Sequence[bytes]) -> bytes:
        if len(hashes) == 1:
            return hashes[0]
        k = 1
        while k * 2 < len(hashes):
            k *= 2
        return node_hash(mth(hashes[:k]), mth(hashes[k:]))

    return mth([leaf_hash(d) for d in leaves])


class CheckpointError(ValueError):
    pass


@dataclass(frozen=True)
class Checkpoint:
    """A signed audit checkpoint as the server publishes it (the signature is kept, checked by the auditor)."""

    tree_size: int
    root: str
    head: str
    time: str
    key_id: str
    signature: str

    @classmethod
    def from_json(cls, data: Any) -> Checkpoint:
        if not isinstance(data, Mapping):
            raise CheckpointError("checkpoint must be an object")
        try:
            size = data["treeSize"]
            root = str(data["root"])
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise CheckpointError("treeSize must be a non-negative integer")
            bytes.fromhex(root)
            if len(root) != 64:
                raise CheckpointError("root must be 32 bytes of hex")
            return cls(size, root, str(data.get("head", "")), str(data.get("time", "")),
                       str(data.get("keyId", "")), str(data.get("signature", "")))
        except KeyError as exc:
            raise CheckpointError(f"checkpoint lacks {exc.args[0]}") from None
        except ValueError as exc:
            raise CheckpointError(str(exc)) from None

    def to_json(self) -> dict[str, Any]:
        return {"treeSize": self.tree_size, "root": self.root, "head": self.head, "time": self.time,
                "keyId": self.key_id, "signature": self.signature}


@dataclass(frozen=True)
class Decision:
    """What to do with an offered checkpoint.

    ``kind``: ``adopt`` (nothing held yet: keep it), ``keep`` (not newer: keep the held one),
    ``need-proof`` (fetch the consistency proof ``first`` -> ``second``), ``violation`` (the server
    contradicts what this device saw: report it, keep the held checkpoint).
    """

    kind: str
    first: int = 0
    second: int = 0
    reason: str = ""


def checkpoint_offered(held: Checkpoint | None, offered: Checkpoint) -> Decision:
    """Decide about a checkpoint handed over with a pull."""
    if held is None:
        return Decision("adopt")
    if offered.tree_size == held.tree_size:
        if offered.root != held.root:
            return Decision("violation", reason=f"two different logs of size {held.tree_size}")
        return Decision("keep")
    if offered.tree_size < held.tree_size:
        # An older checkpoint (a lagging replica) is not a rewrite by itself; keep ours and ask for the proof
        # that the offered one is a prefix of what we hold, as a check of the server's history.
        return Decision("need-proof", first=offered.tree_size, second=held.tree_size)
    return Decision("need-proof", first=held.tree_size, second=offered.tree_size)


def checkpoint_proof_check(held: Checkpoint, offered: Checkpoint, proof: Mapping[str, Any]) -> Decision:
    """Check ``GET /api/audit/log/consistency`` for (held, offered): ``adopt`` the newer one or ``violation``."""
    small, big = (held, offered) if held.tree_size <= offered.tree_size else (offered, held)
    try:
        path = [bytes.fromhex(str(p)) for p in proof.get("path", [])]
        ok = (int(proof.get("first", -1)) == small.tree_size and int(proof.get("second", -1)) == big.tree_size
              and verify_consistency(first=small.tree_size, second=big.tree_size,
                                     first_root=bytes.fromhex(small.root), second_root=bytes.fromhex(big.root),
                                     proof=path))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        return Decision("violation", first=small.tree_size, second=big.tree_size,
                        reason=f"the audit log of size {small.tree_size} is not a prefix of size {big.tree_size}: "
                               "history was rewritten")
    return Decision("adopt" if offered.tree_size > held.tree_size else "keep")


#: The device audit action of a history rewrite this device saw; the server files it as a security event and the
#: privacy officer's dashboard counts and alerts on it (issue 10: a witness that tells nobody is no witness).
WITNESS_ACTION = "audit-witness"


def violation_key(held: Checkpoint | None, offered: Checkpoint) -> str:
    """What a violation was found against: the checkpoint this device holds (it keeps it after a violation, so
    every later sync finds the same violation again, with a growing offered size and a new wording)."""
    return f"{held.tree_size}:{held.root}" if held is not None else f"-:{offered.tree_size}:{offered.root}"


def violation_report(held: Checkpoint | None, offered: Checkpoint, reason: str,
                     already_reported: str | None) -> dict[str, str] | None:
    """The detail of the security event to queue for a violation, or None when a violation against the same
    held checkpoint (``already_reported``: its :func:`violation_key`) was already reported: one event, not one
    per sync. Tree sizes and roots only: checkpoints carry no patient data."""
    if already_reported == violation_key(held, offered):
        return None
    out = {"reason": reason[:200], "offeredSize": str(offered.tree_size), "offeredRoot": offered.root[:64],
           "offeredKey": offered.key_id[:64]}
    if held is not None:
        out |= {"heldSize": str(held.tree_size), "heldRoot": held.root[:64], "heldTime": held.time[:40]}
    return out
