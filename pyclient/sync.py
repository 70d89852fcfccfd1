"""The client sync state machine: pull cursor, durable outbox, rebase, retry (sans-IO).

Like ``h11`` it never performs I/O. The caller feeds it local edits and server
responses, and asks it what to send; every method that changes durable state
returns a list of :data:`Effect` values (records / outbox entries / meta to
write, plus notices for the UI). The runner writes the storage effects of one
call in ONE store transaction (``to_store_ops`` + ``Store.apply``), so a pull
page and the outbox/base updates it causes land together. Clocks (``now``, in
seconds), randomness (``rng_value`` in [0, 1)) and mutation ids are arguments.

Invariants:

* A local change is never dropped: pulls rebase pending edits with the shared
  three-way merge (base = the copy the edit started from, ours = incoming
  server version, theirs = the local edit); an unclean merge parks the edit as
  *conflicted* with both sides kept until a person resolves it.
* What has been sent is never mutated in place while in flight; a new edit of a
  resource with a sent mutation becomes a new entry behind it. Squashing only
  happens into an entry that was never sent (entries restored from storage
  count as sent, because a crash may have hidden a send).
* Per resource at most one mutation is in flight; across resources entries go
  by priority (medication/allergy first), then FIFO. A rejected or conflicted
  entry blocks nothing but itself.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

from pyclient import store
from pyclient.merge import Conflict, merge
from pyclient.outcome import NO_RESULT
from pyclient.outcome import text as outcome_text
from pyclient.protocol import (
    Mutation,
    MutationResult,
    ProtocolError,
    PullRequest,
    PullResponse,
    PushRequest,
    PushResponse,
)

__all__ = [
    "DEFAULT_PRIORITY",
    "META_CURSOR",
    "PRIORITIES",
    "Backoff",
    "ConflictParked",
    "ConflictView",
    "DroppedWithPendingEdit",
    "Effect",
    "EntryEvent",
    "EpochChanged",
    "META_EPOCH",
    "META_RECOVERY",
    "EntryState",
    "InvalidTransition",
    "JsonCodec",
    "MetaPut",
    "MutationRejected",
    "OUTBOX_SEAL_TYPE",
    "OutboxDelete",
    "OutboxEntry",
    "OutboxPut",
    "RecordCodec",
    "RecordDelete",
    "RecordPut",
    "RecordsClear",
    "RowCodec",
    "SealItem",
    "SyncMachine",
    "SyncStatus",
    "TRANSITIONS",
    "notices",
    "priority_of",
    "seal_items",
    "store_ops",
    "to_store_ops",
]

#: Lower sends first. Medication and allergy changes are safety-critical.
PRIORITIES: Final[Mapping[str, int]] = {
    "MedicationRequest": 0,
    "MedicationStatement": 0,
    "MedicationAdministration": 0,
    "AllergyIntolerance": 0,
    "Condition": 1,
    "Observation": 1,
    "Patient": 2,
}
DEFAULT_PRIORITY: Final = 3  # DocumentReference, notes, everything else
META_CURSOR: Final = "sync.cursor"
META_LAST_SUCCESS: Final = "sync.lastSuccess"
#: The server database's epoch this device last saw, and the epoch-recovery step in progress
#: ("collect": the runner must hand over the records it holds; "pull": re-pulling from scratch).
META_EPOCH: Final = "sync.epoch"
META_RECOVERY: Final = "sync.recovery"

EntryState = Literal["pending", "in_flight", "conflicted", "rejected"]
Key = tuple[str, str]


def priority_of(resource_type: str) -> int:
    """Send priority of a resource type (0 = first)."""
    return PRIORITIES.get(resource_type, DEFAULT_PRIORITY)


# --- effects ----------------------------------------------------------------


@dataclass(frozen=True)
class RecordPut:
    """Write the local copy. ``base`` is the base copy while an edit is pending."""

    resource_type: str
    id: str
    version: int
    resource: dict[str, Any]
    base: dict[str, Any] | None = None
    base_version: int = 0


# The effects that need no sealing ARE the store ops they become (one type, not a copy mapped field by field):
# a record removed, the pull reset (every record dropped except those with outbox entries), an outbox entry
# removed, a meta value set.
RecordDelete = store.DeleteRecord
RecordsClear = store.ClearRecords
OutboxDelete = store.DeleteOutbox
MetaPut = store.PutMeta


@dataclass(frozen=True)
class OutboxPut:
    entry_id: str
    entry: dict[str, Any]  # OutboxEntry.to_json() snapshot


@dataclass(frozen=True)
class ConflictParked:
    """Notice: an edit needs a person's decision (see ``SyncMachine.conflicts``)."""

    entry_id: str
    resource_type: str
    id: str


@dataclass(frozen=True)
class MutationRejected:
    """Notice: the server refused an edit; it stays in the outbox until dismissed."""

    entry_id: str
    resource_type: str
    id: str
    reason: str


@dataclass(frozen=True)
class DroppedWithPendingEdit:
    """Notice: a record left our scope but has a local edit, so it was kept."""

    resource_type: str
    id: str


@dataclass(frozen=True)
class EpochChanged:
    """Notice: the server database went back in time (restored from a backup; PROTOCOL.md "Server epochs").

    The runner must call :meth:`SyncMachine.recover_held` with every record it holds before the next pull."""

    old: str | None
    new: str


Effect = (
    RecordPut
    | RecordDelete
    | RecordsClear
    | OutboxPut
    | OutboxDelete
    | MetaPut
    | ConflictParked
    | MutationRejected
    | DroppedWithPendingEdit
    | EpochChanged
)



# --- entry states: one table (h11's ``_state.py`` is the model) ---------------

#: Events that move an outbox entry. ``None`` as the target: the entry leaves the outbox.
EntryEvent = Literal[
    "queue", "adopt", "squash", "send", "fail", "ack", "park", "reject", "resolve", "dismiss", "absorb"
]

#: (state, event) -> next state. Any pair not listed is a bug and raises :class:`InvalidTransition`.
#: "new" is an entry being created. Meaning of the events:
#:   queue    a local edit becomes a new entry                    (record_local_edit)
#:   adopt    a conflict the server holds for this device         (adopt_server_conflicts)
#:   squash   a newer local edit replaces a never-sent/parked one (record_local_edit)
#:   send     put in a push request                               (next_push)
#:   fail     no usable answer: back to pending, still "sent"     (on_push_failed, missing result)
#:   ack      done: applied or merged on the server, or the same on both sides   (_finish)
#:   park     needs a person: a stored or local conflict          (_park)
#:   reject   the server refused it; kept, visible, until dismissed
#:   resolve  a person decided; a new superseding entry replaces it (resolve_conflict)
#:   dismiss  the user has seen a rejection                       (dismiss_rejected)
#:   absorb   folded into another entry (a tail joining a conflict, a create+delete never sent)
TRANSITIONS: Final[Mapping[tuple[str, EntryEvent], EntryState | None]] = {
    ("new", "queue"): "pending",
    ("new", "adopt"): "conflicted",
    ("pending", "squash"): "pending",
    ("pending", "send"): "in_flight",
    ("pending", "ack"): None,
    ("pending", "park"): "conflicted",
    ("pending", "absorb"): None,
    ("in_flight", "fail"): "pending",
    ("in_flight", "ack"): None,
    ("in_flight", "park"): "conflicted",
    ("in_flight", "reject"): "rejected",
    ("conflicted", "squash"): "conflicted",
    ("conflicted", "resolve"): None,
    ("rejected", "dismiss"): None,
}


class InvalidTransition(RuntimeError):
    """An outbox entry was asked to make a move the state table does not allow (a bug, never data)."""


# --- outbox entry -----------------------------------------------------------


@dataclass
class OutboxEntry:
    """One queued mutation and everything needed to retry, rebase or show it.

    ``server_*`` is the newest server state known for the resource (updated by
    pulls and acknowledgements); for a conflicted entry it is the "server side".
    """

    entry_id: str  # == the wire mutationId
    seq: int
    op: Literal["put", "delete"]
    resource_type: str
    id: str
    resource: dict[str, Any] | None
    base_version: int | None
    base_resource: dict[str, Any] | None
    priority: int
    state: EntryState = "pending"
    attempts: int = 0
    next_try: float = 0.0
    last_error: str | None = None
    server_version: int | None = None
    server_resource: dict[str, Any] | None = None
    server_deleted: bool = False
    conflict_id: str | None = None
    conflicts: tuple[dict[str, Any], ...] = ()
    supersedes: str | None = None
    # Sent as a server-epoch recovery: the server merges it against what the restored database held.
    recover: bool = False
    # Not persisted: True once put in a request during this session. Restored
    # entries are treated as sent (a crash may have hidden the send).
    sent: bool = field(default=False, compare=False)

    @property
    def key(self) -> Key:
        return (self.resource_type, self.id)

    def to_json(self) -> dict[str, Any]:
        out = self._json()
        if self.recover:
            out["recover"] = True
        return out

    def _json(self) -> dict[str, Any]:
        return {
            "entryId": self.entry_id,
            "seq": self.seq,
            "op": self.op,
            "resourceType": self.resource_type,
            "id": self.id,
            "resource": self.resource,
            "baseVersion": self.base_version,
            "baseResource": self.base_resource,
            "priority": self.priority,
            # in_flight is a per-session fact; after a restart it is "sent, unknown outcome".
            "state": "pending" if self.state == "in_flight" else self.state,
            "attempts": self.attempts,
            "nextTry": self.next_try,
            "lastError": self.last_error,
            "serverVersion": self.server_version,
            "serverResource": self.server_resource,
            "serverDeleted": self.server_deleted,
            "conflictId": self.conflict_id,
            "conflicts": list(self.conflicts),
            "supersedes": self.supersedes,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> OutboxEntry:
        try:
            state = data["state"]
            if state not in ("pending", "in_flight", "conflicted", "rejected"):
                raise ProtocolError(f"outbox entry state {state!r}")
            return cls(
                entry_id=str(data["entryId"]),
                seq=int(data["seq"]),
                op=data["op"],
                resource_type=str(data["resourceType"]),
                id=str(data["id"]),
                resource=data["resource"],
                base_version=data["baseVersion"],
                base_resource=data["baseResource"],
                priority=int(data["priority"]),
                state="pending" if state == "in_flight" else state,
                attempts=int(data["attempts"]),
                next_try=float(data["nextTry"]),
                last_error=data["lastError"],
                server_version=data["serverVersion"],
                server_resource=data["serverResource"],
                server_deleted=bool(data["serverDeleted"]),
                conflict_id=data["conflictId"],
                conflicts=tuple(data["conflicts"]),
                supersedes=data["supersedes"],
                recover=bool(data.get("recover", False)),
                sent=True,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"malformed outbox entry: {exc!r}") from None

    def to_mutation(self) -> Mutation:
        resource = None
        if self.resource is not None:
            resource = {**self.resource, "resourceType": self.resource_type, "id": self.id}
        return Mutation(
            mutation_id=self.entry_id,
            op=self.op,
            resource_type=self.resource_type,
            id=self.id,
            base_version=self.base_version,
            resource=resource,
            supersedes=self.supersedes,
            recover=self.recover,
        )


@dataclass(frozen=True)
class ConflictView:
    """Both sides of a parked edit, for the side-by-side resolution UI."""

    entry_id: str
    resource_type: str
    id: str
    base: dict[str, Any] | None
    server: dict[str, Any] | None  # None = deleted on the server
    server_version: int | None
    local: dict[str, Any] | None  # None = deleted locally
    conflicts: tuple[dict[str, Any], ...]
    conflict_id: str | None


@dataclass(frozen=True)
class SyncStatus:
    """The counts the status line is worded from (pyclient.views.status, the one wording). ``synced`` only after
    the server acknowledged everything."""

    pending: int
    conflicted: int
    rejected: int
    last_success: float | None
    last_error: str | None
    synced: bool


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with equal jitter: delay in [d/2, d), d = min(cap, base * 2**(n-1))."""

    base: float = 1.0
    cap: float = 300.0

    def delay(self, attempts: int, rng_value: float) -> float:
        d = min(self.cap, self.base * 2.0 ** max(0, attempts - 1))
        return d / 2 + d / 2 * min(max(rng_value, 0.0), 1.0)


@dataclass(frozen=True)
class Conflicts:
    """A rebase step that did not merge cleanly (internal to the machine)."""

    conflicts: tuple[Conflict, ...]


# --- the machine ------------------------------------------------------------


class SyncMachine:
    """Client side of pull/push for one device. Never touches storage or network."""

    def __init__(
        self,
        *,
        device_id: str,
        cursor: str | None = None,
        entries: Iterable[OutboxEntry] = (),
        last_success: float | None = None,
        backoff: Backoff = Backoff(),
        pull_limit: int = 1000,  # the server maximum: each page carries ~40 ms fixed server cost
        epoch: str | None = None,
        recovery: str | None = None,
    ) -> None:
        self.device_id = device_id
        self.cursor = cursor
        self.backoff = backoff
        self.pull_limit = pull_limit
        self._entries: dict[str, OutboxEntry] = {e.entry_id: e for e in entries}
        self._seq = max((e.seq for e in self._entries.values()), default=0) + 1
        self._not_before = 0.0  # server-wide Retry-After
        self.last_success = last_success
        self.last_error: str | None = None
        self._last_push_acked = True
        self.caught_up = False
        # Highest version of each resource this session learnt from its own acknowledged pushes and that a
        # pull has not yet reached: an older pull page must not replace it (the clinician's saved change
        # would vanish from the chart until the next page). Entries go when the pull catches up.
        self._acked: dict[Key, int] = {}
        self.epoch = epoch
        self.recovery: Literal["collect", "pull"] | None = (
            recovery if recovery in ("collect", "pull") else None  # type: ignore[assignment]
        )

    @classmethod
    def restore(
        cls,
        *,
        device_id: str,
        meta: Mapping[str, str | None],
        outbox: Iterable[Mapping[str, Any]],
        backoff: Backoff = Backoff(),
        pull_limit: int = 1000,
    ) -> SyncMachine:
        """Rebuild from what ``to_store_ops`` persisted (meta values and outbox entry dicts)."""
        last = meta.get(META_LAST_SUCCESS)
        return cls(
            device_id=device_id,
            cursor=meta.get(META_CURSOR),
            entries=[OutboxEntry.from_json(e) for e in outbox],
            last_success=None if last is None else float(last),
            backoff=backoff,
            pull_limit=pull_limit,
            epoch=meta.get(META_EPOCH),
            recovery=meta.get(META_RECOVERY),
        )

    # -- queries -------------------------------------------------------------

    @property
    def entries(self) -> list[OutboxEntry]:
        """All outbox entries, in send order (priority, then FIFO)."""
        return sorted(self._entries.values(), key=lambda e: (e.priority, e.seq))

    def entry(self, entry_id: str) -> OutboxEntry | None:
        return self._entries.get(entry_id)

    def has_pending_edit(self, resource_type: str, id: str) -> bool:
        return bool(self._chain((resource_type, id)))

    def conflicts(self) -> list[ConflictView]:
        """Every parked conflict with both sides."""
        return [
            ConflictView(
                entry_id=e.entry_id,
                resource_type=e.resource_type,
                id=e.id,
                base=e.base_resource,
                server=None if e.server_deleted else e.server_resource,
                server_version=e.server_version,
                local=e.resource,
                conflicts=e.conflicts,
                conflict_id=e.conflict_id,
            )
            for e in self.entries
            if e.state == "conflicted"
        ]

    def status(self) -> SyncStatus:
        states = [e.state for e in self._entries.values()]
        pending = sum(s in ("pending", "in_flight") for s in states)
        return SyncStatus(
            pending=pending,
            conflicted=states.count("conflicted"),
            rejected=states.count("rejected"),
            last_success=self.last_success,
            last_error=self.last_error,
            synced=not states and self._last_push_acked and self.last_success is not None,
        )

    def next_wake(self, now: float) -> float | None:
        """When the next push could go out (None: nothing to send)."""
        times = [max(e.next_try, self._not_before) for e in self._sendable()]
        return max(min(times), now) if times else None

    # -- local edits ---------------------------------------------------------

    def record_local_edit(
        self,
        *,
        now: float,
        mutation_id: str,
        resource_type: str,
        id: str,
        resource: dict[str, Any] | None,
        base_version: int | None,
        base_resource: dict[str, Any] | None,
    ) -> list[Effect]:
        """Queue a local change (``resource=None`` deletes).

        ``base_version``/``base_resource`` are the local server copy the edit was
        made on (None for a create); ignored when the resource already has a
        queued edit, whose original base is kept. ``mutation_id`` is a fresh
        UUID; it is used only if a new entry is needed.
        """
        key = (resource_type, id)
        op: Literal["put", "delete"] = "put" if resource is not None else "delete"
        if resource is not None:
            resource = {**resource, "resourceType": resource_type, "id": id}
        chain = self._chain(key)
        effects: list[Effect] = []
        if not chain:
            if op == "delete" and base_version is None:
                return [RecordDelete(resource_type, id)]  # never reached the server
            entry = self._new_entry(mutation_id, op, key, resource, base_version, base_resource, now=now)
            entry.server_version, entry.server_resource = base_version, base_resource
        else:
            last = chain[-1]
            if last.state == "conflicted" or (last.state == "pending" and not last.sent):
                # Squash: never-sent entries and parked conflicts are not on the
                # wire, so their content may change; the original base stays.
                if (
                    op == "delete"
                    and last.base_version is None
                    and len(chain) == 1
                    and last.state == "pending"
                ):
                    # Create then delete, nothing sent: nothing to tell the server.
                    self._move(last, "absorb")
                    return [OutboxDelete(last.entry_id), RecordDelete(resource_type, id)]
                self._move(last, "squash")
                last.op, last.resource = op, resource
                entry = last
            else:
                # `last` is in flight or was sent: a new entry behind it. Its base
                # is the content it was derived from; the base version is fixed
                # once `last` is acknowledged (see _finish).
                entry = self._new_entry(
                    mutation_id, op, key, resource, last.base_version, last.resource, now=now
                )
        effects.append(self._put(entry))
        effects.extend(self._local_view(key))
        return effects

    def resolve_conflict(
        self,
        *,
        now: float,
        entry_id: str,
        resource: dict[str, Any] | None,
        mutation_id: str,
    ) -> list[Effect]:
        """A person decided: ``resource`` is the chosen content (None = delete).

        Creates a new mutation based on the server side, which supersedes the
        parked one (so the server closes its stored conflict).
        """
        entry = self._entries.get(entry_id)
        if entry is None or entry.state != "conflicted":
            raise ValueError(f"no parked conflict {entry_id!r}")
        self._move(entry, "resolve")
        effects: list[Effect] = [OutboxDelete(entry_id)]
        key = entry.key
        server = None if entry.server_deleted else entry.server_resource
        known_to_server = entry.sent or entry.conflict_id is not None
        op: Literal["put", "delete"] = "put" if resource is not None else "delete"
        if resource is not None:
            resource = {**resource, "resourceType": entry.resource_type, "id": entry.id}
        nothing_to_send = entry.server_version is None if op == "delete" else False
        if not known_to_server and resource == server:
            nothing_to_send = True
        if nothing_to_send:
            effects.extend(self._server_view(key, entry.server_version, server))
            return effects
        # Based on the server side; re-sent even when equal to it so the server
        # can close the conflict it stored for the superseded mutation.
        new = self._new_entry(mutation_id, op, key, resource, entry.server_version, server, now=now)
        new.server_version, new.server_resource = entry.server_version, server
        new.server_deleted = entry.server_deleted
        new.supersedes = entry_id
        effects.append(self._put(new))
        effects.extend(self._local_view(key))
        return effects

    def adopt_server_conflicts(self, conflicts: Iterable[Mapping[str, Any]]) -> list[Effect]:
        """Park the server's open conflicts of this device that the outbox does not hold.

        ``conflicts`` are ``GET /api/sync/conflicts`` items (PROTOCOL.md §5, "Conflicts the device
        lost"). A device restored from a backup, or one whose push answer was lost before a crash,
        can have an edit parked on the server that it no longer knows; without this the edit would
        sit there, open, where no one sees it. Conflicts of other devices, already known or
        superseded here, or of a resource with queued edits (adopted later, once those are done) are
        skipped. Each adopted one becomes a ``conflicted`` entry, resolved like any other.
        """
        known = set(self._entries) | {e.supersedes for e in self._entries.values() if e.supersedes}
        effects: list[Effect] = []
        for c in conflicts:
            try:
                if c.get("status", "open") != "open" or c.get("deviceId") != self.device_id:
                    continue
                mid, rtype, rid = str(c["mutationId"]), str(c["resourceType"]), str(c["resourceId"])
                key = (rtype, rid)
                if not mid or mid in known or self._chain(key):
                    continue
                theirs, ours = c.get("theirs"), c.get("ours")
                ours_version = c.get("oursVersion")
                entry = self._new_entry(
                    mid, "put" if theirs is not None else "delete", key, theirs,
                    c.get("baseVersion"), c.get("base"), now=0.0, event="adopt",
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise ProtocolError(f"malformed conflict: {exc!r}") from None
            entry.sent = True
            entry.server_version = None if ours_version is None else int(ours_version)
            entry.server_resource = ours
            entry.server_deleted = ours is None and ours_version is not None
            entry.conflict_id = str(c.get("id") or "") or None
            entry.conflicts = tuple(dict(d) for d in c.get("conflicts") or ())
            known.add(mid)
            effects.append(self._put(entry))
            effects.append(ConflictParked(entry.entry_id, rtype, rid))
            effects.extend(self._local_view(key))
        return effects

    def dismiss_rejected(self, *, entry_id: str) -> list[Effect]:
        """Remove a rejected entry after the user has seen it."""
        entry = self._entries.get(entry_id)
        if entry is None or entry.state != "rejected":
            raise ValueError(f"no rejected entry {entry_id!r}")
        self._move(entry, "dismiss")
        return [OutboxDelete(entry_id)]

    # -- push ----------------------------------------------------------------

    def next_push(self, now: float, max_batch: int = 50) -> PushRequest | None:
        """The next batch to send (marks it in flight), or None if nothing is due."""
        if now < self._not_before or self.recovery is not None:
            return None  # an epoch recovery re-pulls first: what to re-send depends on what the server has
        due = [e for e in self._sendable() if e.next_try <= now]
        due.sort(key=lambda e: (e.priority, e.seq))
        batch = due[:max_batch]
        if not batch:
            return None
        for e in batch:
            self._move(e, "send")
            e.sent = True
            e.attempts += 1
        return PushRequest(self.device_id, tuple(e.to_mutation() for e in batch), epoch=self.epoch)

    def on_push_response(self, now: float, request: PushRequest, response: PushResponse) -> list[Effect]:
        """Apply the server's verdicts. Duplicated or late responses are harmless."""
        results = {r.mutation_id: r for r in response.results}
        effects: list[Effect] = []
        missing = handled = False
        for m in request.mutations:
            entry = self._entries.get(m.mutation_id)
            if entry is None or entry.state != "in_flight":
                continue  # already handled (duplicate / reordered response)
            handled = True
            result = results.get(m.mutation_id)
            if result is None:
                missing = True
                self._move(entry, "fail")
                entry.last_error = "no result from server"
                entry.next_try = now + self.backoff.delay(entry.attempts, 0.5)
                effects.append(self._put(entry))
                continue
            effects.extend(self._on_result(entry, result))
        effects.extend(self._see_epoch(response.epoch))
        if not handled:
            return effects  # a stale copy says nothing about the current state
        self.last_success = now
        self.last_error = NO_RESULT if missing else None
        self._last_push_acked = not missing
        effects.append(MetaPut(META_LAST_SUCCESS, repr(now)))
        return effects

    def on_push_failed(
        self,
        now: float,
        request: PushRequest,
        *,
        rng_value: float,
        retry_after: float | None = None,
        error: str = "network error",
    ) -> list[Effect]:
        """The push got no usable answer (network, timeout, 5xx, 429/503).

        Entries return to pending (still marked sent: the server may have applied
        them, and a retry is idempotent) after ``Retry-After`` if given, else an
        exponential delay with jitter from ``rng_value``.
        """
        effects: list[Effect] = []
        if retry_after is not None:
            # Honour the server, plus up to 10 % jitter so devices do not return in lockstep.
            self._not_before = max(self._not_before, now + retry_after * (1 + 0.1 * rng_value))
        for m in request.mutations:
            entry = self._entries.get(m.mutation_id)
            if entry is None or entry.state != "in_flight":
                continue
            self._move(entry, "fail")
            entry.last_error = error
            entry.next_try = max(now + self.backoff.delay(entry.attempts, rng_value), self._not_before)
            effects.extend(self._rebase(entry))
            if entry.entry_id in self._entries:
                effects.append(self._put(entry))
            effects.extend(self._local_view(entry.key))
        self.last_error = error
        self._last_push_acked = False
        return effects

    # -- pull ----------------------------------------------------------------

    def next_pull(self) -> PullRequest:
        """The request for the next page after the stored cursor."""
        return PullRequest(cursor=self.cursor, limit=self.pull_limit)

    def pull_ahead(self, response: PullResponse) -> PullRequest | None:
        """The request that will follow ``response`` once it is applied (None: the feed is caught up).

        Known as soon as the page arrives, so an adapter can fetch page n+1 while page n is sealed and
        written (a pipelined pull). The adapter still asks :meth:`next_pull` after applying the page and
        uses the early answer only when the two requests are equal (a reset or a foreign cursor changes it).
        """
        return PullRequest(cursor=response.cursor, limit=self.pull_limit) if response.has_more else None

    def on_pull_failed(self, *, error: str) -> None:
        """A pull got no usable answer; only the status changes (the cursor stays)."""
        self.last_error = error
        self.caught_up = False

    def on_pull_response(self, now: float, request: PullRequest, response: PullResponse) -> list[Effect]:
        """Apply one page. A response to a request for another cursor is ignored
        (duplicated or reordered delivery), so the cursor never moves backwards."""
        if request.cursor != self.cursor or self.recovery == "collect":
            return []  # ("collect": the held records must be handed over before a reset may clear them)
        if response.epoch is not None and self.epoch is not None and response.epoch != self.epoch:
            return self._see_epoch(response.epoch)  # the page belongs to a feed we no longer follow
        effects: list[Effect] = self._see_epoch(response.epoch)
        if response.reset:
            self._acked.clear()  # the feed starts over for us: its end state is consistent by itself
            keep = frozenset(e.key for e in self._entries.values() if e.state != "rejected")
            effects.append(RecordsClear(keep))
        for change in response.changes:
            effects.extend(
                self._on_server_state(
                    (change.resource_type, change.id), change.version_id, change.resource, change.deleted
                )
            )
        for drop in response.drop:
            key = (drop.resource_type, drop.id)
            if self._chain(key):
                effects.append(DroppedWithPendingEdit(*key))
            else:
                effects.append(RecordDelete(*key))
        self.cursor = response.cursor
        self.caught_up = not response.has_more
        effects.append(MetaPut(META_CURSOR, response.cursor))
        if self.caught_up:
            self.last_success = now
            if not self._entries:
                # Nothing left to confirm (e.g. the pull showed our failed
                # delete already done): an earlier push error is history.
                self._last_push_acked, self.last_error = True, None
            effects.append(MetaPut(META_LAST_SUCCESS, repr(now)))
            if self.recovery == "pull":
                # Re-pulled from scratch: what the restored server already has was settled on the way
                # (equal copies dropped); the rest goes out as recover mutations from now on.
                self.recovery = None
                effects.append(MetaPut(META_RECOVERY, None))
        return effects

    # -- server epochs (PROTOCOL.md "Server epochs") ----------------------------

    def _see_epoch(self, epoch: str | None) -> list[Effect]:
        """Adopt the first epoch seen; a different one means the server went back in time."""
        if epoch is None or epoch == self.epoch:
            return []
        if self.epoch is None:
            self.epoch = epoch  # first contact (or a device older than epochs): nothing to recover
            return [MetaPut(META_EPOCH, epoch)]
        old, self.epoch = self.epoch, epoch
        self.cursor, self.caught_up, self.recovery = None, False, "collect"
        self._acked.clear()
        self._not_before = 0.0
        effects: list[Effect] = [
            MetaPut(META_EPOCH, epoch),
            MetaPut(META_CURSOR, None),
            MetaPut(META_RECOVERY, "collect"),
        ]
        for e in sorted(self._entries.values(), key=lambda e: e.seq):
            if e.state == "rejected":
                continue
            # Versions of the lost timeline mean nothing to the restored server: forget them, so the
            # re-pull's (possibly lower) versions are taken, and send the edit as a recovery.
            e.recover, e.server_version, e.next_try = True, None, 0.0
            effects.append(self._put(e))
        effects.append(EpochChanged(old, epoch))
        return effects

    def recover_held(self, records: Iterable[tuple[str, str, int, Mapping[str, Any]]]) -> list[Effect]:
        """Step 2 of an epoch recovery: every record the device holds, as ``(type, id, version, resource)``.

        Each one without a queued edit becomes a ``recover`` entry whose content is the held copy. The
        re-pull that follows drops every entry whose copy the restored server sends back unchanged; what
        is left (versions the restored server lacks) is pushed as recover mutations, merged on the server
        against what the restored database held — never silently overwriting newer server data.
        Idempotent (ids derive from the epoch and the resource), so a crash during it is harmless.
        """
        if self.recovery != "collect":
            return []
        effects: list[Effect] = []
        for rtype, rid, version, resource in records:
            key = (rtype, rid)
            if self._chain(key):
                continue
            mid = recovery_mutation_id(self.epoch or "", rtype, rid)
            if mid in self._entries:
                continue
            body = {**resource, "resourceType": rtype, "id": rid}
            entry = self._new_entry(mid, "put", key, body, version or None, body, now=0.0)
            entry.recover = True
            effects.append(self._put(entry))
        self.recovery = "pull"
        effects.append(MetaPut(META_RECOVERY, "pull"))
        return effects

    # -- internals -----------------------------------------------------------

    def _move(self, entry: OutboxEntry, event: EntryEvent) -> None:
        """Apply one row of :data:`TRANSITIONS`; an unlisted move raises instead of being skipped."""
        nxt = TRANSITIONS.get((entry.state, event), "invalid")
        if nxt == "invalid":
            raise InvalidTransition(f"outbox entry {entry.entry_id!r}: {event!r} from {entry.state!r}")
        if nxt is None:
            del self._entries[entry.entry_id]
        else:
            entry.state = nxt  # type: ignore[assignment]

    def _new_entry(
        self,
        entry_id: str,
        op: Literal["put", "delete"],
        key: Key,
        resource: dict[str, Any] | None,
        base_version: int | None,
        base_resource: dict[str, Any] | None,
        *,
        now: float,
        event: Literal["queue", "adopt"] = "queue",
    ) -> OutboxEntry:
        if entry_id in self._entries:
            raise ValueError(f"mutation id {entry_id!r} already used")
        state = TRANSITIONS[("new", event)]
        assert state is not None
        entry = OutboxEntry(
            entry_id=entry_id,
            seq=self._seq,
            op=op,
            resource_type=key[0],
            id=key[1],
            resource=resource,
            base_version=base_version,
            base_resource=base_resource,
            priority=priority_of(key[0]),
            state=state,
            next_try=now,
        )
        self._seq += 1
        self._entries[entry_id] = entry
        return entry

    def _chain(self, key: Key) -> list[OutboxEntry]:
        """Live (non-rejected) entries of one resource, oldest first.

        Usually one or two; longer after a restart (restored entries count as
        sent, so a new edit queues behind them instead of squashing)."""
        return sorted(
            (e for e in self._entries.values() if e.key == key and e.state != "rejected"),
            key=lambda e: e.seq,
        )

    def _sendable(self) -> list[OutboxEntry]:
        heads: dict[Key, OutboxEntry] = {}
        for e in sorted(self._entries.values(), key=lambda e: e.seq):
            if e.state != "rejected":
                heads.setdefault(e.key, e)
        return [e for e in heads.values() if e.state == "pending"]

    def _put(self, entry: OutboxEntry) -> OutboxPut:
        return OutboxPut(entry.entry_id, entry.to_json())

    def _server_view(self, key: Key, version: int | None, resource: dict[str, Any] | None) -> list[Effect]:
        if resource is None or version is None:
            return [RecordDelete(*key)]
        return [RecordPut(key[0], key[1], version, resource)]

    def _local_view(self, key: Key) -> list[Effect]:
        chain = self._chain(key)
        if not chain:
            return []
        head, last = chain[0], chain[-1]
        if last.resource is None:
            return [RecordDelete(*key)]
        return [
            RecordPut(
                key[0],
                key[1],
                head.base_version or 0,
                last.resource,
                base=head.base_resource,
                base_version=head.base_version or 0,
            )
        ]

    def _park(self, entry: OutboxEntry, conflicts: Sequence[Conflict | Mapping[str, Any]]) -> list[Effect]:
        self._move(entry, "park")
        entry.conflicts = tuple(c.to_json() if isinstance(c, Conflict) else dict(c) for c in conflicts)
        effects: list[Effect] = []
        # An unsent edit behind the conflicted one joins it: the person resolves
        # the newest local content against the server side.
        for tail in self._chain(entry.key)[1:]:
            entry.op, entry.resource = tail.op, tail.resource
            self._move(tail, "absorb")
            effects.append(OutboxDelete(tail.entry_id))
        effects.append(self._put(entry))
        effects.append(ConflictParked(entry.entry_id, entry.resource_type, entry.id))
        return effects

    def _rebase(self, entry: OutboxEntry) -> list[Effect]:
        """Bring a pending head entry onto the newest known server state.

        Only an entry that was never sent: once a mutation id may have reached the
        server, its content is fixed (the server refuses a reused id with other
        content, and may already have applied it), so only the server's answer
        settles it — it merges a stale base with the same rules.
        """
        if entry.state != "pending" or entry.server_version is None or entry.sent or entry.recover:
            return []  # (a recover entry's base belongs to the lost timeline: the server merges it)
        if entry.base_version is not None and entry.server_version <= entry.base_version:
            return []
        server = entry.server_resource
        if entry.server_deleted or server is None:
            if entry.op == "delete":
                return self._finish(entry)  # deleted on both sides
            return self._park(entry, [Conflict("", entry.base_resource, None, entry.resource)])
        if entry.op == "delete":
            # Changed on the server after we decided to delete it: ask a person.
            return self._park(entry, [Conflict("", entry.base_resource, server, None)])
        assert entry.resource is not None
        result = merge(entry.base_resource, server, entry.resource)
        if not result.clean:
            return self._park(entry, result.conflicts)
        carried = self._carry(entry, entry.resource, result.merged)
        if isinstance(carried, Conflicts):
            return self._park(entry, carried.conflicts)
        entry.resource = result.merged
        entry.base_version, entry.base_resource = entry.server_version, server
        return carried

    def _finish(self, entry: OutboxEntry) -> list[Effect]:
        """Remove a done head entry and promote the edit queued behind it, if any."""
        self._move(entry, "ack")
        effects: list[Effect] = [OutboxDelete(entry.entry_id)]
        server = None if entry.server_deleted else entry.server_resource
        tails = self._chain(entry.key)
        if not tails:
            return effects + self._server_view(entry.key, entry.server_version, server)
        tail = tails[0]
        tail.server_version, tail.server_resource = entry.server_version, server
        tail.server_deleted = entry.server_deleted
        tail.recover = False  # rebased below onto the restored server's own answer
        if server is None:
            if tail.op == "delete":
                return effects + self._finish(tail)
            if entry.op == "delete":
                # Deleted, then re-created locally: a create on top of the tombstone.
                tail.base_version, tail.base_resource = entry.server_version, None
                return effects + [self._put(tail)] + self._local_view(tail.key)
            return effects + self._park(tail, [Conflict("", entry.resource, None, tail.resource)])
        if tail.op == "delete":
            tail.base_version, tail.base_resource = entry.server_version, server
            return effects + [self._put(tail)] + self._local_view(tail.key)
        assert tail.resource is not None
        # The tail was derived from what the head sent; the server answered with
        # `server` (ours). Rebase the tail's own changes onto it.
        result = merge(entry.resource, server, tail.resource)
        if not result.clean:
            tail.base_version, tail.base_resource = entry.base_version, entry.resource
            return effects + self._park(tail, result.conflicts) + self._local_view(tail.key)
        # Entries queued behind the tail were derived from its old content: they
        # move with it (after a restart a chain can be longer than two, because
        # restored entries count as sent and are never squashed into).
        carried = self._carry(tail, tail.resource, result.merged)
        if isinstance(carried, Conflicts):
            tail.base_version, tail.base_resource = entry.base_version, entry.resource
            return effects + self._park(tail, carried.conflicts) + self._local_view(tail.key)
        tail.resource = result.merged
        tail.base_version, tail.base_resource = entry.server_version, server
        return effects + [self._put(tail)] + carried + self._local_view(tail.key)

    def _carry(
        self, entry: OutboxEntry, old: dict[str, Any] | None, new: dict[str, Any] | None
    ) -> list[Effect] | Conflicts:
        """``entry``'s content is about to change from ``old`` to ``new``: rebase
        every entry queued behind it, each onto the new content of the one before.

        Each entry behind another was derived from that entry's content (its
        ``base_resource``), so the three-way merge for entry k is
        (old k-1, new k-1, k). Nothing is changed unless every step merges
        cleanly; otherwise the conflicts are returned for the caller to park.
        """
        planned: list[tuple[OutboxEntry, dict[str, Any] | None, dict[str, Any] | None]] = []
        for tail in self._chain(entry.key):
            if tail.seq <= entry.seq:
                continue
            moved_to = tail.resource
            if tail.resource is not None and old is not None and new is not None and old != new:
                moved = merge(old, new, tail.resource)
                if not moved.clean:
                    return Conflicts(tuple(moved.conflicts))
                moved_to = moved.merged
            planned.append((tail, new, moved_to))
            old, new = tail.resource, moved_to
        effects: list[Effect] = []
        for tail, base, resource in planned:
            tail.base_resource, tail.resource = base, resource
            effects.append(self._put(tail))
        return effects

    def _on_result(self, entry: OutboxEntry, result: MutationResult) -> list[Effect]:
        newer = result.version_id is not None and result.version_id >= (entry.server_version or 0)
        if result.status in ("applied", "merged"):
            if result.version_id is not None:
                self._acked[entry.key] = max(self._acked.get(entry.key, 0), result.version_id)
            if newer:
                entry.server_version = result.version_id
                entry.server_deleted = entry.op == "delete"
                entry.server_resource = None if entry.op == "delete" else (result.resource or entry.resource)
            # else: a pull already brought a newer version; keep it.
            return self._finish(entry)
        if result.status == "conflict":
            if newer:
                entry.server_version = result.version_id
                entry.server_resource = result.resource
                entry.server_deleted = result.resource is None
            entry.conflict_id = result.conflict_id
            return self._park(entry, result.conflicts) + self._local_view(entry.key)
        # rejected: keep it visible; whatever was queued behind it goes ahead on
        # the last server state (absorbing the rejected change: never lost).
        self._move(entry, "reject")
        entry.last_error = outcome_text(result.outcome)
        effects: list[Effect] = [
            self._put(entry),
            MutationRejected(entry.entry_id, entry.resource_type, entry.id, entry.last_error),
        ]
        tails = self._chain(entry.key)
        if tails:
            tail = tails[0]
            tail.base_version, tail.base_resource = entry.base_version, entry.base_resource
            tail.server_version, tail.server_resource = entry.server_version, entry.server_resource
            tail.server_deleted = entry.server_deleted
            if tail.op == "delete" and tail.base_version is None and (
                entry.server_version is not None and not entry.server_deleted
            ):
                # A refused create the server nevertheless holds (it applied an earlier copy under that
                # id: a tablet restored from a backup): deleting it is a person's decision, never a
                # silent local drop that leaves the device without a record the server has.
                effects.extend(self._park(tail, [Conflict("", None, entry.server_resource, None)]))
                effects.extend(self._local_view(entry.key))
            elif tail.op == "delete" and tail.base_version is None:
                self._move(tail, "absorb")
                effects.append(OutboxDelete(tail.entry_id))
                effects.extend(self._server_view(entry.key, None, None))
            else:
                effects.extend(self._rebase(tail))
                if tail.entry_id in self._entries:
                    effects.append(self._put(tail))
                effects.extend(self._local_view(entry.key))
        else:
            server = None if entry.server_deleted else entry.server_resource
            effects.extend(self._server_view(entry.key, entry.server_version, server))
        return effects

    def _on_server_state(
        self, key: Key, version: int, resource: dict[str, Any] | None, deleted: bool
    ) -> list[Effect]:
        chain = self._chain(key)
        if not chain:
            acked = self._acked.get(key)
            if acked is not None:
                if version < acked:
                    return []  # older than what our own acknowledged push stored
                del self._acked[key]
            return self._server_view(key, version, None if deleted else resource)
        head = chain[0]
        if head.server_version is not None and version <= head.server_version:
            return []  # already known (e.g. our own acknowledged write)
        head.server_version, head.server_deleted = version, deleted
        head.server_resource = None if deleted else resource
        if head.recover and head.state == "pending":
            # Epoch recovery: a copy the restored server has unchanged needs no re-send.
            if (head.op == "delete" and deleted) or (
                head.resource is not None and not deleted and same_content(head.resource, resource)
            ):
                return self._finish(head)
            return [self._put(head), *self._local_view(key)]
        effects: list[Effect] = []
        if head.state == "pending":
            effects.extend(self._rebase(head))
        if head.entry_id in self._entries:
            effects.append(self._put(head))
        effects.extend(self._local_view(key))
        if not self._chain(key):
            effects.extend(self._server_view(key, version, None if deleted else resource))
        return effects




def recovery_mutation_id(epoch: str, resource_type: str, id: str) -> str:
    """The mutation id of a held record re-sent after an epoch change (deterministic: a retried recovery
    reuses it, so the server's idempotency log makes it exactly-once)."""
    digest = hashlib.sha256(f"{epoch}\n{resource_type}\n{id}".encode()).hexdigest()
    return f"recover-{digest[:40]}"


def same_content(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """Equal apart from ``meta`` (version and timestamps differ between timelines for the same content)."""
    if a is None or b is None:
        return a is b
    return {k: v for k, v in a.items() if k != "meta"} == {k: v for k, v in b.items() if k != "meta"}


# --- effects -> store ops -----------------------------------------------------
#
# ONE path from a machine's effects to store ops, used by the browser adapter (``BrowserApp._commit``, which
# seals with one batched WebCrypto crossing), the CPython stores and the tests (``to_store_ops``): the adapter
# only supplies the sealing primitive and its row codec (search tokens, row MACs). Two steps because sealing is
# async in the browser and sync on CPython: ``seal_items`` says what to seal, ``store_ops`` builds the ops from
# the sealed blobs, in the same order.

#: What an outbox entry is sealed as (with version 0): the envelope binds it to its entry id.
OUTBOX_SEAL_TYPE: Final = "OutboxEntry"

#: (resource type, id, version the envelope is bound to, plaintext) for one envelope.
SealItem = tuple[str, str, int, Mapping[str, Any]]

_STORAGE = (RecordPut, RecordDelete, RecordsClear, OutboxPut, OutboxDelete, MetaPut)


class RowCodec(Protocol):
    """What an adapter adds around the sealed bytes of a row: search tokens and integrity MACs."""

    def tokens(self, resource_type: str, resource: dict[str, Any]) -> tuple[str, ...] | None:
        """Blind-index tokens of a record (None = keep the stored ones)."""
        ...

    def record_mac(self, record: store.StoredRecord, tokens: tuple[str, ...] | None) -> str | None:
        """Row MAC of a record row (:func:`pyclient.integrity.record_mac`); None = not MACed."""
        ...

    def outbox_mac(self, entry_id: str, blob: bytes) -> str | None:
        """Row MAC of an outbox row (:func:`pyclient.integrity.outbox_mac`); None = not MACed."""
        ...


class RecordCodec(RowCodec, Protocol):
    """A row codec whose sealing runs synchronously (CPython: the server's tests, tools, the simulator)."""

    def seal(self, items: Sequence[SealItem]) -> list[bytes]:
        """One envelope per item, in order, bound to the item's (type, id, version)."""
        ...


class JsonCodec:
    """Unencrypted JSON codec (server-side tests, the simulator). No search tokens, no MACs."""

    def seal(self, items: Sequence[SealItem]) -> list[bytes]:
        return [json.dumps(dict(res), sort_keys=True, separators=(",", ":")).encode() for _t, _i, _v, res in items]

    def tokens(self, resource_type: str, resource: dict[str, Any]) -> tuple[str, ...] | None:
        return None

    def record_mac(self, record: store.StoredRecord, tokens: tuple[str, ...] | None) -> str | None:
        return None

    def outbox_mac(self, entry_id: str, blob: bytes) -> str | None:
        return None

    @staticmethod
    def open(blob: bytes) -> Any:
        return json.loads(blob)


def seal_items(effects: Iterable[Effect]) -> list[SealItem]:
    """What ``effects`` need sealed, in the order :func:`store_ops` takes the blobs.

    Per record put: the local copy under its version, then (while an edit is pending) the base copy under
    the version it IS, ``base_version`` (the envelope's AAD names the server version the content came from).
    Per outbox put: the entry under (``OUTBOX_SEAL_TYPE``, entry id, 0).
    """
    items: list[SealItem] = []
    for eff in effects:
        if isinstance(eff, RecordPut):
            items.append((eff.resource_type, eff.id, eff.version, eff.resource))
            if eff.base is not None:
                items.append((eff.resource_type, eff.id, eff.base_version, eff.base))
        elif isinstance(eff, OutboxPut):
            items.append((OUTBOX_SEAL_TYPE, eff.entry_id, 0, eff.entry))
    return items


def store_ops(effects: Sequence[Effect], sealed: Sequence[bytes], codec: RowCodec) -> list[store.StoreOp]:
    """The storage part of ``effects`` as store ops for ONE ``Store.apply`` call.

    ``sealed`` is the adapter's sealing of ``seal_items(effects)``, in that order. Notices (conflicts,
    rejections, kept drops) are not storage and are skipped (:func:`notices`).
    """
    wanted = len(seal_items(effects))
    if len(sealed) != wanted:  # a short or long batch would pair blobs with the wrong rows
        raise ValueError(f"{len(sealed)} sealed blobs for {wanted} items")
    blobs = iter(sealed)
    ops: list[store.StoreOp] = []
    for eff in effects:
        if isinstance(eff, RecordPut):
            blob = next(blobs)
            base = next(blobs) if eff.base is not None else None
            tokens = codec.tokens(eff.resource_type, eff.resource)
            row = store.StoredRecord(eff.resource_type, eff.id, eff.version, blob, base)
            mac = codec.record_mac(row, tokens)
            if mac is not None:  # a fresh row, not dataclasses.replace: ~70 us a record under Pyodide
                row = store.StoredRecord(eff.resource_type, eff.id, eff.version, blob, base, mac)
            ops.append(store.PutRecord(row, tokens))
        elif isinstance(eff, OutboxPut):
            blob = next(blobs)
            ops.append(store.PutOutbox(eff.entry_id, blob, codec.outbox_mac(eff.entry_id, blob)))
        elif isinstance(eff, store.DeleteRecord | store.ClearRecords | store.DeleteOutbox | store.PutMeta):
            ops.append(eff)  # already a store op
    return ops


def notices(effects: Iterable[Effect]) -> list[Effect]:
    """The effects that are not storage: what the UI is told (conflicts parked, rejections, epoch changes)."""
    return [e for e in effects if not isinstance(e, _STORAGE)]


def to_store_ops(effects: Iterable[Effect], codec: RecordCodec) -> list[store.StoreOp]:
    """:func:`seal_items` -> ``codec.seal`` -> :func:`store_ops`: the same path as the browser's commit, with a
    synchronous sealing primitive."""
    effects = list(effects)
    return store_ops(effects, codec.seal(seal_items(effects)), codec)
