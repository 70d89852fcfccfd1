"""A pure-Python model of the sync server, for client tests and the convergence simulation.

It follows PROTOCOL.md §5: versioned resources with full history, one change
feed with opaque cursors, idempotent push by mutationId (a reused id with other
content is refused, as the server does), stored conflicts closed by a superseding
mutation, and rejection of resource types the caller may not write. Each push is
decided by ``pyclient.push_rules.decide`` — the same table the Django server calls.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pyclient.protocol import (
    Change,
    Mutation,
    MutationResult,
    PullRequest,
    PullResponse,
    PushRequest,
    PushResponse,
)
from pyclient.push_rules import base_relation, decide, mutation_hash

Key = tuple[str, str]


@dataclass
class StoredConflict:
    conflict_id: str
    mutation_id: str
    key: Key
    open: bool = True
    device_id: str = ""
    base_version: int | None = None
    ours_version: int | None = None
    base: dict[str, Any] | None = None
    ours: dict[str, Any] | None = None
    theirs: dict[str, Any] | None = None
    details: tuple[dict[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The shape of ``GET /api/sync/conflicts`` items (``omnicare.sync.api.ConflictOut``, the schema ninja
        serialises)."""
        return {
            "id": self.conflict_id,
            "resourceType": self.key[0],
            "resourceId": self.key[1],
            "status": "open" if self.open else "resolved",
            "baseVersion": self.base_version,
            "oursVersion": self.ours_version,
            "base": self.base,
            "ours": self.ours,
            "theirs": self.theirs,
            "conflicts": list(self.details),
            "deviceId": self.device_id,
            "mutationId": self.mutation_id,
        }


@dataclass
class SimServer:
    reject_types: frozenset[str] = frozenset({"Forbidden"})
    history: dict[Key, list[dict[str, Any] | None]] = field(default_factory=dict)  # index = version - 1
    feed: list[tuple[Key, int]] = field(default_factory=list)
    results: dict[str, MutationResult] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)  # mutationId -> mutation_hash of its first use
    reused_ids: list[str] = field(default_factory=list)  # ids a client re-sent with other content
    decisions: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # table rows reached
    conflicts: dict[str, StoredConflict] = field(default_factory=dict)
    applied_deletes: list[tuple[Key, int]] = field(default_factory=list)  # (key, clock)
    clock: int = 0  # set by the simulation, for bookkeeping only

    # -- state
    def current(self, key: Key) -> tuple[int, dict[str, Any] | None]:
        hist = self.history.get(key, [])
        return len(hist), (hist[-1] if hist else None)

    def live(self) -> dict[Key, dict[str, Any]]:
        out = {}
        for key, hist in self.history.items():
            if hist and hist[-1] is not None:
                out[key] = hist[-1]
        return out

    def open_conflicts(self) -> list[StoredConflict]:
        return [c for c in self.conflicts.values() if c.open]

    def write(self, key: Key, resource: dict[str, Any] | None) -> int:
        hist = self.history.setdefault(key, [])
        version = len(hist) + 1
        if resource is not None:
            resource = {**resource, "resourceType": key[0], "id": key[1], "meta": {"versionId": str(version)}}
        hist.append(resource)
        self.feed.append((key, version))
        return version

    # -- pull
    def pull(self, request: PullRequest) -> PullResponse:
        reset = False
        pos = 0
        if request.cursor is not None:
            if (
                request.cursor.startswith("c")
                and request.cursor[1:].isdigit()
                and int(request.cursor[1:]) <= len(self.feed)
            ):
                pos = int(request.cursor[1:])
            else:
                reset = True  # unknown cursor: start over, client clears clean records
        page = self.feed[pos : pos + request.limit]
        changes = []
        for i, (key, version) in enumerate(page):
            res = self.history[key][version - 1]
            changes.append(
                Change(
                    seq=pos + i + 1,
                    resource_type=key[0],
                    id=key[1],
                    version_id=version,
                    deleted=res is None,
                    resource=res,
                )
            )
        end = pos + len(page)
        return PullResponse(
            changes=tuple(changes), cursor=f"c{end}", has_more=end < len(self.feed), reset=reset
        )

    # -- push
    def push(self, request: PushRequest) -> PushResponse:
        return PushResponse(tuple(self._one(m, request.device_id) for m in request.mutations))

    def conflicts_of(self, device_id: str) -> list[dict[str, Any]]:
        """``GET /api/sync/conflicts?deviceId=…``: the open conflicts this device's pushes stored."""
        return [c.to_json() for c in self.conflicts.values() if c.open and c.device_id == device_id]

    def _one(self, m: Mutation, device_id: str = "") -> MutationResult:
        h = mutation_hash(m)
        if m.mutation_id in self.results:
            if self.hashes[m.mutation_id] != h:
                # The server's replay rule: an id reused for other content is refused, never applied.
                self.reused_ids.append(m.mutation_id)
                return MutationResult(
                    m.mutation_id,
                    "rejected",
                    outcome={
                        "resourceType": "OperationOutcome",
                        "issue": [{"severity": "error", "code": "conflict", "diagnostics": "id reused"}],
                    },
                )
            return self.results[m.mutation_id]  # idempotent replay
        result = self._decide(m, device_id)
        self.results[m.mutation_id] = result
        self.hashes[m.mutation_id] = h
        if m.supersedes is not None and result.status != "rejected":
            for c in self.conflicts.values():
                if c.mutation_id == m.supersedes:
                    c.open = False
        return result

    def _decide(self, m: Mutation, device_id: str) -> MutationResult:
        key = (m.resource_type, m.id)
        if m.resource_type in self.reject_types:
            return MutationResult(
                m.mutation_id,
                "rejected",
                outcome={
                    "resourceType": "OperationOutcome",
                    "issue": [{"severity": "error", "code": "forbidden", "diagnostics": "not allowed"}],
                },
            )
        cur_v, cur = self.current(key)
        theirs = None if m.resource is None else {**m.resource, "id": m.id}
        target = "absent" if cur_v == 0 else ("live" if cur is not None else "deleted")
        self.decisions[(m.op, target, base_relation(m.base_version, cur_v))] += 1
        d = decide(
            op=m.op,
            cur_version=cur_v,
            live=cur is not None,
            ours=cur,
            base_version=m.base_version,
            base_of=lambda v: self.history[key][v - 1],
            theirs=theirs,
        )
        if d.kind == "reject":
            return MutationResult(
                m.mutation_id,
                "rejected",
                outcome={
                    "resourceType": "OperationOutcome",
                    "issue": [{"code": "invalid", "diagnostics": d.reason}],
                },
            )
        if d.kind == "noop":
            return MutationResult(
                m.mutation_id,
                d.status,
                version_id=cur_v or None,
                resource=cur if d.status == "merged" else None,
            )
        if d.kind == "conflict":
            cid = f"conflict-{len(self.conflicts) + 1}"
            base = (
                self.history[key][m.base_version - 1] if m.base_version and m.base_version <= cur_v else None
            )
            self.conflicts[cid] = StoredConflict(
                cid,
                m.mutation_id,
                key,
                True,
                device_id,
                m.base_version,
                cur_v or None,
                base,
                cur,
                theirs,
                d.conflicts,
            )
            return MutationResult(
                m.mutation_id,
                "conflict",
                version_id=cur_v or None,
                resource=cur,
                conflict_id=cid,
                conflicts=d.conflicts,
            )
        v = self.write(key, d.body)
        if d.body is None:
            self.applied_deletes.append((key, self.clock))
        return MutationResult(m.mutation_id, d.status, version_id=v, resource=self.history[key][v - 1])
