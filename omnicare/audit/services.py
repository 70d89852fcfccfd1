"""Writing, checkpointing, archiving and verifying the audit trail.

Chain: ``hash(n) = SHA-256(bytes(hash(n-1)) || canonical_json(event n))`` starting from
64 zeros. Each event's hash is also a leaf of an RFC 9162 Merkle tree; a checkpoint signs
(tree size, Merkle root, head hash) with the audit-signing key from ``omnicare.keys``.
Writers serialize on the ``ChainHead`` row (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite
runs write transactions one at a time), so the chain stays linear under concurrency.

``now`` is a parameter everywhere: tests move the clock, services never read it deep inside.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from omnicare.core.errors import ApiError
from omnicare.keys import services as keys

from . import merkle
from .models import AuditArchive, AuditEvent, ChainHead, Checkpoint

log = logging.getLogger("omnicare.audit")

GENESIS = "0" * 64
OUTCOMES = ("success", "denied", "failure")
# Fields covered by each event's hash, in the canonical JSON (the hash itself and the row id are not).
HASHED_FIELDS = (
    "seq", "category", "action", "outcome", "purpose", "user_id", "username", "roles", "resource_type",
    "resource_id", "patient_ids", "device_id", "device_seq", "device_time", "received_at", "detail",
)


class AuditUnavailable(ApiError):
    """The audit trail cannot be written. Callers that must fail closed let this propagate (503)."""

    status, code = 503, "transient"


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def ts(value: datetime | None) -> str | None:
    """UTC, microseconds, 'Z': one spelling of an instant, whatever the database hands back."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_fields(ev: AuditEvent) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in HASHED_FIELDS:
        value = getattr(ev, name)
        out[name] = ts(value) if isinstance(value, datetime) or name in ("device_time", "received_at") else value
    return out


def event_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical_json(fields)).hexdigest()


def _roles_of(user: Any) -> list[str]:
    if user is None or not getattr(user, "is_authenticated", False):
        return []
    from omnicare.access.roles import user_roles  # lazy: access imports audit for break-the-glass

    return sorted(user_roles(user))


def _lock_head() -> ChainHead:
    """Lock the chain head row (creating it for the very first event). Call inside a transaction."""
    head = ChainHead.objects.select_for_update().filter(pk=1).first()
    if head is not None:
        return head
    try:
        with transaction.atomic():
            ChainHead.objects.create(pk=1, seq=0, hash=GENESIS, frontier=[])
        created = True
    except IntegrityError:  # a concurrent first writer made it; wait for its lock below
        created = False
    head = ChainHead.objects.select_for_update().get(pk=1)
    if created and (AuditEvent.objects.exists() or AuditArchive.objects.exists()):
        # Someone removed the head of an existing log: never start a second chain beside the first.
        # (The caller's transaction rolls back the row just made.)
        raise AuditUnavailable("audit chain head is missing; run audit_verify")
    return head


def _checkpoint_every() -> int:
    return int(getattr(settings, "OMNICARE_AUDIT_CHECKPOINT_EVERY", 256))


@dataclass
class NewEvent:
    """What a caller knows about one event; the chain fields are filled in on append."""

    action: str
    user: Any = None
    resource_type: str = ""
    resource_id: str = ""
    patient_ids: Iterable[str] = ()
    outcome: str = "success"
    purpose: str = "TREAT"
    category: str = AuditEvent.CATEGORY_ACCESS
    device_id: str | None = None
    device_seq: int | None = None
    device_time: datetime | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def append_events(events: Sequence[NewEvent], *, now: datetime | None = None) -> list[AuditEvent]:
    """Append events to the chain in one transaction (one head lock for the batch)."""
    now = now if now is not None else timezone.now()
    if not events:
        return []
    try:
        with transaction.atomic():
            head = _lock_head()
            frontier = merkle.Frontier.from_json(head.frontier)
            rows: list[AuditEvent] = []
            for item in events:
                if item.outcome not in OUTCOMES:
                    raise ValueError(f"outcome must be one of {OUTCOMES}")
                user = item.user
                authenticated = user is not None and getattr(user, "is_authenticated", False)
                ev = AuditEvent(
                    seq=head.seq + 1,
                    category=item.category,
                    action=item.action,
                    outcome=item.outcome,
                    purpose=item.purpose,
                    user_id=user.pk if authenticated else None,
                    username=user.get_username() if authenticated else str(item.detail.get("username", "")),
                    roles=_roles_of(user),
                    resource_type=item.resource_type or "",
                    resource_id=str(item.resource_id or ""),
                    patient_ids=sorted({str(p) for p in item.patient_ids}),
                    device_id=item.device_id,
                    device_seq=item.device_seq,
                    device_time=item.device_time,
                    received_at=now,
                    detail=item.detail,
                    prev_hash=head.hash,
                )
                ev.hash = event_hash(head.hash, event_fields(ev))
                ev.save()
                frontier.append(bytes.fromhex(ev.hash))
                head.seq, head.hash = ev.seq, ev.hash
                rows.append(ev)
            head.frontier = frontier.to_json()
            head.updated = now
            head.save()
            if head.seq // _checkpoint_every() > (head.seq - len(rows)) // _checkpoint_every():
                _checkpoint_locked(head, now)
    except AuditUnavailable:
        raise
    except ValueError:
        raise
    except Exception as exc:  # the caller must be able to fail closed on *any* storage error
        log.exception("audit write failed")
        raise AuditUnavailable("audit trail unavailable") from exc
    return rows


def audit_record(
    *,
    user: Any,
    action: str,
    resource_type: str = "",
    resource_id: str = "",
    patient_ids: Iterable[str] = (),
    outcome: str = "success",
    device_id: str | None = None,
    device_seq: int | None = None,
    device_time: datetime | None = None,
    purpose: str = "TREAT",
    category: str = AuditEvent.CATEGORY_ACCESS,
    detail: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> AuditEvent:
    """Append one audit event and return it. Raises :class:`AuditUnavailable` if it cannot be stored.

    ``action`` is read, search, create, update, delete (or a security action such as
    ``break-glass-start``); ``outcome`` is success, denied or failure; ``purpose`` a v3
    PurposeOfUse code (TREAT, ETREAT for break-the-glass, HOPERAT, ...). ``detail`` must
    not hold PHI beyond identifiers (it is shown to auditors).
    """
    return append_events(
        [
            NewEvent(
                action=action, user=user, resource_type=resource_type, resource_id=resource_id,
                patient_ids=patient_ids, outcome=outcome, purpose=purpose, category=category,
                device_id=device_id, device_seq=device_seq, device_time=device_time, detail=detail or {},
            )
        ],
        now=now,
    )[0]


# --- Checkpoints -----------------------------------------------------------------------------


def checkpoint_message(*, tree_size: int, merkle_root: str, head_hash: str, created_at: datetime) -> bytes:
    return canonical_json(
        {"log": "omnicare-audit", "v": 1, "tree_size": tree_size, "root": merkle_root, "head": head_hash,
         "time": ts(created_at)}
    )


def _checkpoint_locked(head: ChainHead, now: datetime) -> Checkpoint:
    root = merkle.Frontier.from_json(head.frontier).root().hex()
    message = checkpoint_message(tree_size=head.seq, merkle_root=root, head_hash=head.hash, created_at=now)
    key_id, signature = keys.sign(data=message, now=now)
    cp = Checkpoint(tree_size=head.seq, merkle_root=root, head_hash=head.hash, created_at=now, key_id=key_id,
                    signature=signature.hex())
    cp.save()
    return cp


def audit_checkpoint(*, now: datetime | None = None) -> Checkpoint | None:
    """Sign the current head if it moved since the last checkpoint (the periodic beat job)."""
    now = now if now is not None else timezone.now()
    with transaction.atomic():
        head = _lock_head()
        last = Checkpoint.objects.order_by("-tree_size", "-id").first()
        if head.seq == 0 or (last is not None and last.tree_size == head.seq):
            return None
        return _checkpoint_locked(head, now)


# --- Retention ---------------------------------------------------------------------------------


def years_before(moment: datetime, years: int) -> datetime:
    try:
        return moment.replace(year=moment.year - years)
    except ValueError:  # 29 February
        return moment.replace(year=moment.year - years, day=28)


def retention_cutoff(*, now: datetime) -> datetime:
    return years_before(now, int(getattr(settings, "OMNICARE_AUDIT_RETENTION_YEARS", 7)))


def archive_message(arc: AuditArchive) -> bytes:
    return canonical_json(
        {"archive": "omnicare-audit", "v": 1, "first_seq": arc.first_seq, "last_seq": arc.last_seq,
         "count": arc.count, "prev_hash": arc.prev_hash, "last_hash": arc.last_hash, "sha256": arc.sha256,
         "oldest": ts(arc.oldest), "newest": ts(arc.newest), "created_at": ts(arc.created_at)}
    )


def _archive_line(ev: AuditEvent) -> dict[str, Any]:
    return {**event_fields(ev), "prev_hash": ev.prev_hash, "hash": ev.hash}


def audit_archive(*, now: datetime | None = None, batch_size: int = 5000) -> list[AuditArchive]:
    """Move events older than the retention window (7 years) into signed, compressed archives.

    Only a contiguous prefix of the chain whose ``received_at`` is before the cutoff is
    archived; nothing newer is touched. Each batch commits on its own (resumable).
    """
    now = now if now is not None else timezone.now()
    cutoff = retention_cutoff(now=now)
    made: list[AuditArchive] = []
    while True:
        with transaction.atomic():
            _lock_head()  # no appends while a batch moves (keeps the prefix contiguous)
            batch: list[AuditEvent] = []
            for ev in AuditEvent.objects.order_by("seq")[:batch_size]:
                if ev.received_at >= cutoff:
                    break
                batch.append(ev)
            if not batch:
                return made
            data = zlib.compress(b"".join(canonical_json(_archive_line(ev)) + b"\n" for ev in batch), 9)
            arc = AuditArchive(
                first_seq=batch[0].seq, last_seq=batch[-1].seq, count=len(batch), prev_hash=batch[0].prev_hash,
                last_hash=batch[-1].hash, oldest=min(e.received_at for e in batch),
                newest=max(e.received_at for e in batch), created_at=now, blob=data,
                sha256=hashlib.sha256(data).hexdigest(), key_id="", signature="",
            )
            arc.key_id, sig = keys.sign(data=archive_message(arc), now=now)
            arc.signature = sig.hex()
            arc.save()
            assert all(ev.received_at < cutoff for ev in batch)  # never delete inside the window
            # The only deletion of audit rows anywhere; the PostgreSQL trigger allows it because
            # the archive row above (same transaction) covers these seqs.
            AuditEvent.objects.filter(seq__gte=arc.first_seq, seq__lte=arc.last_seq)._raw_delete(connection.alias)
            made.append(arc)
            if len(batch) < batch_size:
                return made


def archive_events(arc: AuditArchive) -> list[dict[str, Any]]:
    return [json.loads(line) for line in zlib.decompress(bytes(arc.blob)).splitlines() if line]


# --- Verification -------------------------------------------------------------------------------


@dataclass
class Problem:
    kind: str  # modified, deleted, inserted, reordered, truncated, signature, head, device-gap
    seq: int | None
    message: str

    def __str__(self) -> str:
        where = f"seq {self.seq}: " if self.seq is not None else ""
        return f"[{self.kind}] {where}{self.message}"


@dataclass
class VerifyReport:
    events: int = 0
    archived: int = 0
    checkpoints: int = 0
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _stored_events(report: VerifyReport) -> Iterator[tuple[dict[str, Any], str, str, int | None]]:
    """(hashed fields, prev_hash, hash, row id) for archived then live events, in storage order."""
    for arc in AuditArchive.objects.order_by("first_seq"):
        blob = bytes(arc.blob)
        sig_ok = keys.verify(key_id=arc.key_id, data=archive_message(arc), signature=bytes.fromhex(arc.signature))
        if not sig_ok or hashlib.sha256(blob).hexdigest() != arc.sha256:
            report.problems.append(Problem("signature", arc.first_seq,
                                           f"archive #{arc.first_seq}..#{arc.last_seq} is not as signed"))
            continue
        lines = archive_events(arc)
        report.archived += len(lines)
        for line in lines:
            yield {k: line[k] for k in HASHED_FIELDS}, line["prev_hash"], line["hash"], None
    for ev in AuditEvent.objects.order_by("seq", "id").iterator(chunk_size=2000):
        report.events += 1
        yield event_fields(ev), ev.prev_hash, ev.hash, ev.pk


def audit_verify() -> VerifyReport:
    """Recompute the chain, the Merkle roots and the signatures; say where anything differs.

    Detects modification (an event's content no longer matches its hash), deletion (a gap
    in seq), insertion and reordering (duplicate seq, or prev_hash not the previous event's
    hash), rewriting from some point on (signed checkpoint root/head no longer match), and
    truncation (a checkpoint or the head records more events than the log holds).
    """
    report = VerifyReport()
    checkpoints = list(Checkpoint.objects.order_by("tree_size", "id"))
    report.checkpoints = len(checkpoints)
    for cp in checkpoints:
        message = checkpoint_message(tree_size=cp.tree_size, merkle_root=cp.merkle_root, head_hash=cp.head_hash,
                                     created_at=cp.created_at)
        if not keys.verify(key_id=cp.key_id, data=message, signature=bytes.fromhex(cp.signature)):
            report.problems.append(Problem("signature", cp.tree_size, f"checkpoint {cp.pk} signature is invalid"))
    by_size: dict[int, list[Checkpoint]] = {}
    for cp in checkpoints:
        by_size.setdefault(cp.tree_size, []).append(cp)

    frontier = merkle.Frontier()
    expected_seq, running, leaves = 1, GENESIS, 0
    last_good_cp = 0
    device_seqs: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for fields, prev_hash, stored_hash, row_id in _stored_events(report):
        seq = int(fields["seq"])
        where = f" (row id {row_id})" if row_id is not None else " (archived)"
        if seq < expected_seq:
            report.problems.append(Problem("inserted", seq, f"seq {seq} appears again or out of order{where}"))
        elif seq > expected_seq:
            report.problems.append(
                Problem("deleted", expected_seq, f"events seq {expected_seq}..{seq - 1} are missing (before {seq}{where})")
            )
        if event_hash(prev_hash, fields) != stored_hash:
            report.problems.append(Problem("modified", seq, f"content does not match its hash{where}"))
        if prev_hash != running:
            report.problems.append(
                Problem("reordered", seq, f"prev_hash is not the hash of the event before it: inserted, reordered "
                                          f"or the previous event was rewritten{where}")
            )
        running = stored_hash
        expected_seq = max(expected_seq, seq + 1)
        frontier.append(bytes.fromhex(stored_hash))
        leaves += 1
        if fields.get("device_id") and fields.get("device_seq") is not None:
            owner = str(fields.get("username") or fields.get("user_id"))
            device_seqs.setdefault((str(fields["device_id"]), owner), []).append((int(fields["device_seq"]), seq))
        for cp in by_size.get(leaves, []):
            if cp.merkle_root != frontier.root().hex() or cp.head_hash != stored_hash:
                report.problems.append(Problem(
                    "modified", seq,
                    f"signed checkpoint {cp.pk} (size {cp.tree_size}) does not match the log: events after seq "
                    f"{last_good_cp} up to {cp.tree_size} were rewritten, inserted or removed"))
            else:
                last_good_cp = cp.tree_size
    if checkpoints and checkpoints[-1].tree_size > leaves:
        cp = checkpoints[-1]
        report.problems.append(Problem(
            "truncated", leaves + 1,
            f"signed checkpoint {cp.pk} records {cp.tree_size} events but the log holds {leaves}: "
            f"seq {leaves + 1}..{cp.tree_size} were removed"))
    head = ChainHead.objects.filter(pk=1).first()
    if head is None:
        if leaves:
            report.problems.append(Problem("head", None, "chain head row is missing"))
    elif head.seq != leaves or head.hash != running:
        kind = "truncated" if head.seq > leaves else "head"
        report.problems.append(Problem(
            kind, min(head.seq, leaves) + 1 if kind == "truncated" else head.seq,
            f"chain head says {head.seq} events ending {head.hash[:12]}, the log holds {leaves} ending {running[:12]}"))
    for (device_id, owner), pairs in sorted(device_seqs.items()):
        _device_findings(report, f"{device_id} ({owner})", pairs)
    return report


def _device_findings(report: VerifyReport, device_id: str, pairs: list[tuple[int, int]]) -> None:
    """Per-device sequences: duplicates and reordering are tampering; gaps are flagged (events never arrived)."""
    seen: set[int] = set()
    for dseq, seq in pairs:
        if dseq in seen:
            report.problems.append(Problem("inserted", seq, f"device {device_id} event {dseq} stored twice"))
        seen.add(dseq)
    ordered = sorted(seen)
    expected = 1
    for dseq in ordered:
        if dseq > expected:
            report.warnings.append(Problem(
                "device-gap", None, f"device {device_id}: events {expected}..{dseq - 1} never arrived"))
        expected = dseq + 1


def device_gaps(*, user_id: int, device_id: str) -> list[tuple[int, int]]:
    """Missing ranges in a device's synced event sequence (for one user), e.g. [(4, 6)]."""
    seqs = sorted(
        AuditEvent.objects.filter(user_id=user_id, device_id=device_id, device_seq__isnull=False)
        .values_list("device_seq", flat=True)
    )
    gaps, expected = [], 1
    for s in seqs:
        if s > expected:
            gaps.append((expected, s - 1))
        expected = max(expected, s + 1)
    return gaps


# --- Proofs ----------------------------------------------------------------------------------------


def _leaves(size: int) -> list[bytes]:
    out: list[bytes] = []
    for arc in AuditArchive.objects.order_by("first_seq"):
        if len(out) >= size:
            break
        out.extend(bytes.fromhex(line["hash"]) for line in archive_events(arc))
    remaining = size - len(out)
    if remaining > 0:
        out.extend(bytes.fromhex(h) for h in AuditEvent.objects.order_by("seq").values_list("hash", flat=True)[:remaining])
    return out[:size]


def inclusion_proof(*, seq: int, tree_size: int) -> dict[str, Any]:
    leaves = _leaves(tree_size)
    if len(leaves) != tree_size or not 1 <= seq <= tree_size:
        raise ValueError("seq or tree_size outside the log")
    return {
        "seq": seq, "leaf_index": seq - 1, "tree_size": tree_size, "leaf": leaves[seq - 1].hex(),
        "root": merkle.root(leaves).hex(),
        "path": [p.hex() for p in merkle.inclusion_proof(leaves, seq - 1)],
    }


def consistency_proof(*, first: int, second: int) -> dict[str, Any]:
    leaves = _leaves(second)
    if len(leaves) != second or not 0 <= first <= second:
        raise ValueError("sizes outside the log")
    return {
        "first": first, "second": second, "first_root": merkle.root(leaves[:first]).hex(),
        "second_root": merkle.root(leaves).hex(),
        "path": [p.hex() for p in merkle.consistency_proof(leaves, first)],
    }


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- Device events -----------------------------------------------------------------------------------

DEVICE_ACTIONS = frozenset({"read", "search", "create", "update", "delete"})


@dataclass
class DeviceEvent:
    """One event a device recorded offline, with its per-device sequence number (1, 2, 3, ...)."""

    seq: int
    action: str
    occurred: datetime
    resource_type: str = ""
    resource_id: str = ""
    patient_ids: Sequence[str] = ()
    outcome: str = "success"
    purpose: str = "TREAT"
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class IngestResult:
    accepted: int
    duplicates: int
    gaps: list[tuple[int, int]]
    last_seq: int


def device_events_ingest(
    *, user: Any, device_id: str, events: Sequence[DeviceEvent], now: datetime | None = None
) -> IngestResult:
    """Append a device's offline events to the chain. Idempotent per (user, device, seq).

    A revoked device is refused (``DeviceRevoked``). Missing sequence numbers are flagged:
    each newly seen gap is itself recorded as a security event (``device-gap``) and returned.
    """
    from omnicare.access.services import device_check  # lazy: access imports audit
    from omnicare.core.errors import BadRequest

    now = now if now is not None else timezone.now()
    device_check(user=user, device_id=device_id, now=now)
    for e in events:
        if e.seq < 1 or e.action not in DEVICE_ACTIONS or e.outcome not in OUTCOMES:
            raise BadRequest(f"event {e.seq}: seq must be >= 1, action one of {sorted(DEVICE_ACTIONS)}, "
                             f"outcome one of {list(OUTCOMES)}")
    with transaction.atomic():
        _lock_head()  # one ingest at a time: duplicate filtering and gap detection see a stable log
        mine = AuditEvent.objects.filter(user_id=user.pk, device_id=device_id, device_seq__isnull=False)
        known = set(mine.filter(device_seq__in=[e.seq for e in events]).values_list("device_seq", flat=True))
        gaps_before = set(device_gaps(user_id=user.pk, device_id=device_id))
        fresh: dict[int, DeviceEvent] = {}
        for e in events:
            if e.seq not in known:
                fresh.setdefault(e.seq, e)
        append_events([
            NewEvent(action=e.action, user=user, resource_type=e.resource_type, resource_id=e.resource_id,
                     patient_ids=e.patient_ids, outcome=e.outcome, purpose=e.purpose, device_id=device_id,
                     device_seq=e.seq, device_time=e.occurred, detail=e.detail)
            for _, e in sorted(fresh.items())
        ], now=now)
        gaps_after = device_gaps(user_id=user.pk, device_id=device_id)
        new_gaps = [g for g in gaps_after if g not in gaps_before]
        if new_gaps:
            append_events([
                NewEvent(action="device-gap", user=user, category=AuditEvent.CATEGORY_SECURITY, outcome="failure",
                         purpose="HOPERAT", device_id=device_id,
                         detail={"missing": ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in new_gaps)})
            ], now=now)
        last = mine.order_by("-device_seq").values_list("device_seq", flat=True).first() or 0
    return IngestResult(accepted=len(fresh), duplicates=len(events) - len(fresh), gaps=gaps_after, last_seq=last)
