"""Writing, checkpointing, archiving and verifying the audit trail.

Chain: ``hash(n) = SHA-256(bytes(hash(n-1)) || canonical_json(event n))`` starting from
64 zeros. Each event's hash is also a leaf of an RFC 9162 Merkle tree; a checkpoint signs
(tree size, Merkle root, head hash) with the audit-signing key from ``omnicare.keys``.
Requests never serialize: each inserts its event (``seq`` NULL) in its own transaction. The sequencer
alone locks ``ChainHead``; it fills ``seq``/``prev_hash``/``hash`` in batches and signs checkpoints,
which are also appended to a log outside the database. Verification trusts only a public key pinned
outside the database (``OMNICARE_AUDIT_PUBKEY``, or derived from the master key / HSM).

``now`` is a parameter everywhere: tests move the clock, services never read it deep inside.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

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


#: How a user's roles are read for the trail. The audit log is a sink: it imports nothing from access (or
#: fhir); ``omnicare.access`` installs its role table here when the app registry is ready
#: (``AccessConfig.ready``), so a process without it records no roles rather than importing upwards.
_roles_provider: Callable[[Any], Iterable[str]] | None = None


def roles_provider_set(provider: Callable[[Any], Iterable[str]] | None) -> None:
    """Install how audit events read a user's roles (access does it once, at start-up)."""
    global _roles_provider  # noqa: PLW0603 - one process-wide hook, set once at start-up
    _roles_provider = provider


def _roles_of(user: Any) -> list[str]:
    if user is None or not getattr(user, "is_authenticated", False) or _roles_provider is None:
        return []
    return sorted(_roles_provider(user))


def _lock_head() -> ChainHead:
    """Lock the chain head row (creating it for the very first event). Only the sequencer calls this."""
    head = ChainHead.objects.select_for_update().filter(pk=1).first()
    if head is not None:
        return head
    try:
        with transaction.atomic():
            ChainHead.objects.create(pk=1, seq=0, hash=GENESIS, frontier=[])
        created = True
    except IntegrityError:  # a concurrent first sequencer made it; wait for its lock below
        created = False
    head = ChainHead.objects.select_for_update().get(pk=1)
    if created and (AuditEvent.objects.filter(seq__isnull=False).exists() or AuditArchive.objects.exists()):
        # Someone removed the head of an existing log: never start a second chain beside the first.
        # (The caller's transaction rolls back the row just made.)
        raise AuditUnavailable("audit chain head is missing; run audit_verify")
    return head


def _checkpoint_every() -> int:
    return int(getattr(settings, "OMNICARE_AUDIT_CHECKPOINT_EVERY", 256))


def checkpoint_interval() -> timedelta:
    """Longest time a sequenced event waits for a signed checkpoint (default one minute)."""
    return timedelta(seconds=float(getattr(settings, "OMNICARE_AUDIT_CHECKPOINT_SECONDS", 60)))


#: What the unprotected tail may exceed the checkpoint interval by: the sequencer's own period and latency.
TAIL_GRACE = timedelta(seconds=10)


def sequence_delay_max() -> timedelta:
    """How long an event may wait for the sequencer before ``audit_verify`` calls the sequencer stalled."""
    return timedelta(seconds=float(getattr(settings, "OMNICARE_AUDIT_UNSEQUENCED_MAX_SECONDS", 60)))


@dataclass
class NewEvent:
    """What a caller knows about one event; the chain fields are filled in by the sequencer."""

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


def append_events(
    events: Sequence[NewEvent], *, now: datetime | None = None, sequence: bool = False, savepoint: bool = True
) -> list[AuditEvent]:
    """Durably insert events in the caller's transaction, taking no shared lock (the sequencer chains them).

    Fails closed: any storage error is :class:`AuditUnavailable`, so the caller's transaction (the write
    or the read being audited) rolls back with it. ``sequence=True`` also runs the sequencer inside the
    caller's transaction (for the rare caller that needs ``seq`` at once, e.g. break-the-glass): that
    one request then holds the chain head until it commits.
    """
    now = now if now is not None else timezone.now()
    if not events:
        return []
    rows: list[AuditEvent] = []
    for item in events:
        if item.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}")
        user = item.user
        authenticated = user is not None and getattr(user, "is_authenticated", False)
        rows.append(AuditEvent(
            seq=None,
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
        ))
    try:
        # ``savepoint=False`` saves two round trips for a caller whose whole transaction ends with this
        # insert and rolls back with it on failure (``trail.audited``); a caller that carries on after
        # AuditUnavailable (the HL7 admin hides the raw message) keeps its transaction usable with the default.
        if len(rows) == 1 and not sequence and (not savepoint or not connection.in_atomic_block):
            # One event (every FHIR REST request): one INSERT without the ORM's compiler (see _event_insert). In
            # autocommit (``trail.audited(atomic=False)``, a read) it is its own transaction, where bulk_create
            # would add BEGIN/COMMIT; with ``savepoint=False`` it is the last statement of the caller's.
            _event_insert(rows[0])
        else:
            with transaction.atomic(savepoint=savepoint):
                AuditEvent.objects.bulk_create(rows)
            if sequence:
                audit_sequence(now=now, publish=False)
                by_id = {e.pk: e for e in AuditEvent.objects.filter(pk__in=[r.pk for r in rows])}
                rows = [by_id[r.pk] for r in rows]
    except AuditUnavailable:
        raise
    except Exception as exc:  # the caller must be able to fail closed on *any* storage error
        log.exception("audit write failed")
        raise AuditUnavailable("audit trail unavailable") from exc
    global _wrote
    _wrote = True
    _sequence_soon()
    return rows


_EVENT_INSERT: dict[str, tuple[str, list[Any]]] = {}


def _event_insert(event: AuditEvent) -> None:
    """INSERT one new event and set its ``pk``: the SQL is made once per process, the values go through each
    field's ``get_db_prep_save`` as the ORM's would (JSON, datetimes). ``Model.save`` compiled the INSERT on
    every request (about a tenth of a FHIR read's CPU). No signal listens to AuditEvent saves."""
    hit = _EVENT_INSERT.get(connection.alias)
    if hit is None:
        qn = connection.ops.quote_name
        fields = [f for f in AuditEvent._meta.concrete_fields if not f.primary_key]
        sql = (f"INSERT INTO {qn(AuditEvent._meta.db_table)} ({', '.join(qn(f.column) for f in fields)}) "  # noqa: S608
               f"VALUES ({', '.join(['%s'] * len(fields))}) RETURNING {qn(AuditEvent._meta.pk.column)}")  # fmt: skip
        _EVENT_INSERT[connection.alias] = hit = (sql, fields)
    sql, fields = hit
    with connection.cursor() as cur:
        cur.execute(sql, [f.get_db_prep_save(getattr(event, f.attname), connection) for f in fields])
        row = cur.fetchone()
    assert row is not None
    event.pk = row[0]
    event._state.adding = False
    event._state.db = connection.alias


def _inline() -> bool:
    return bool(getattr(settings, "OMNICARE_AUDIT_SEQUENCE_INLINE", False))


def _sequence_soon() -> None:
    """Embedded default (no worker): sequence right after the caller commits, so ``make demo`` needs nothing."""
    if not _inline():
        return

    def run() -> None:
        try:
            audit_sequence()
        except Exception:  # the event is stored; the next run (or audit_verify) will see it
            log.exception("inline audit sequencing failed")

    transaction.on_commit(run)


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
    sequence: bool = False,
    savepoint: bool = True,
) -> AuditEvent:
    """Store one audit event and return it. Raises :class:`AuditUnavailable` if it cannot be stored.

    ``action`` is read, search, create, update, delete (or a security action such as
    ``break-glass-start``); ``outcome`` is success, denied or failure; ``purpose`` a v3
    PurposeOfUse code (TREAT, ETREAT for break-the-glass, HOPERAT, ...). ``detail`` must
    not hold PHI beyond identifiers (it is shown to auditors). The event's ``seq`` is None
    until the sequencer has placed it (``sequence=True``: at once, see :func:`append_events`).
    """
    return append_events(
        [
            NewEvent(
                action=action, user=user, resource_type=resource_type, resource_id=resource_id,
                patient_ids=patient_ids, outcome=outcome, purpose=purpose, category=category,
                device_id=device_id, device_seq=device_seq, device_time=device_time, detail=detail or {},
            )
        ],
        now=now, sequence=sequence, savepoint=savepoint,
    )[0]


# --- The sequencer -------------------------------------------------------------------------------


def _fill(updates: list[tuple[int, str, str, int]]) -> None:
    """The one UPDATE of audit events anywhere: set seq/prev_hash/hash of unsequenced rows (trigger-checked)."""
    with connection.cursor() as cur:
        if connection.vendor == "postgresql":
            for start in range(0, len(updates), 1000):
                chunk = updates[start : start + 1000]
                values = ",".join(["(%s::bigint,%s,%s,%s::bigint)"] * len(chunk))
                cur.execute(
                    f"UPDATE audit_auditevent e SET seq = v.seq, prev_hash = v.prev_hash, hash = v.hash "  # noqa: S608
                    f"FROM (VALUES {values}) AS v(seq, prev_hash, hash, id) WHERE e.id = v.id AND e.seq IS NULL",
                    [x for row in chunk for x in row],
                )
                if cur.rowcount != len(chunk):
                    raise AuditUnavailable("an audit event changed under the sequencer")
        else:
            cur.executemany(
                "UPDATE audit_auditevent SET seq = %s, prev_hash = %s, hash = %s WHERE id = %s AND seq IS NULL",
                updates,
            )


def audit_sequence(*, now: datetime | None = None, limit: int = 5000, publish: bool = True) -> int:
    """Give every committed, unsequenced event its place in the chain; sign a checkpoint when one is due.

    Run by one process at a time (the chain head is locked for the batch; a second sequencer waits and
    then finds nothing to do). Events are taken in insertion (id) order; an event whose transaction
    commits late simply gets a later seq. Returns how many events it sequenced.
    """
    return _sequence(now=now, limit=limit, publish=publish, force_checkpoint=False)[0]


def _sequence(*, now: datetime | None, limit: int, publish: bool,
              force_checkpoint: bool) -> tuple[int, Checkpoint | None]:
    now = now if now is not None else timezone.now()
    total, made = 0, None
    while True:
        with transaction.atomic():
            head = _lock_head()
            pending = list(AuditEvent.objects.filter(seq__isnull=True).order_by("id")[:limit])
            if pending:
                frontier = merkle.Frontier.from_json(head.frontier)
                updates: list[tuple[int, str, str, int]] = []
                for ev in pending:
                    ev.seq, ev.prev_hash = head.seq + 1, head.hash
                    ev.hash = event_hash(head.hash, event_fields(ev))
                    updates.append((ev.seq, ev.prev_hash, ev.hash, ev.pk))
                    frontier.append(bytes.fromhex(ev.hash))
                    head.seq, head.hash = ev.seq, ev.hash
                _fill(updates)
                head.frontier = frontier.to_json()
                head.updated = now
                head.save()
                total += len(pending)
            more = len(pending) >= limit
            if _checkpoint_due(head, now, force=force_checkpoint and not more):
                made = _checkpoint_locked(head, now)
        if not more:
            break
    if publish:
        checkpoints_publish()
    return total, made


def _checkpoint_due(head: ChainHead, now: datetime, *, force: bool = False) -> bool:
    last = Checkpoint.objects.order_by("-tree_size", "-id").first()
    if head.seq == 0 or (last is not None and last.tree_size >= head.seq):
        return False
    if force:
        return True
    # Inline (embedded default): no beat will come back later for the tail, so sign every batch.
    if last is None or head.seq - last.tree_size >= _checkpoint_every() or _inline():
        return True
    # The oldest event the last checkpoint does not cover: sign once it has waited the interval.
    oldest = AuditEvent.objects.filter(seq=last.tree_size + 1).values_list("received_at", flat=True).first()
    return oldest is None or now - oldest >= checkpoint_interval() or now - last.created_at >= checkpoint_interval()


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
    """Sequence what is waiting, then sign the head if it moved since the last checkpoint (None if not).

    The beat job (every minute) and the shutdown hook: afterwards no sequenced event is unprotected.
    """
    return _sequence(now=now, limit=5000, publish=True, force_checkpoint=True)[1]


def checkpoint_json(cp: Checkpoint) -> dict[str, Any]:
    """A signed checkpoint as published (outside the database) and handed to devices with each sync."""
    return {"treeSize": cp.tree_size, "root": cp.merkle_root, "head": cp.head_hash, "time": ts(cp.created_at),
            "keyId": cp.key_id, "signature": cp.signature}


def latest_checkpoint() -> Checkpoint | None:
    return Checkpoint.objects.order_by("-tree_size", "-id").first()


def checkpoint_log_path() -> Path | None:
    raw = getattr(settings, "OMNICARE_AUDIT_CHECKPOINT_LOG", "")
    return Path(raw) if raw else None


def published_checkpoints(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Parse the external checkpoint log: (checkpoints, errors). Lines are JSON objects, oldest first."""
    out: list[dict[str, Any]] = []
    errors: list[str] = []
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return [], []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            int(item["treeSize"])
            out.append(item)
        except (ValueError, KeyError, TypeError):
            errors.append(f"line {n} of {path} is not a checkpoint")
    return out, errors


def checkpoints_publish() -> int:
    """Append to the external log every checkpoint newer than its last line (idempotent, O_APPEND + fsync).

    The log lives outside the database (another disk, a WORM mount, an object store synced from it): a
    database-level attacker cannot remove or re-sign what it holds. Several processes may publish at once;
    an exclusive file lock keeps lines in tree-size order without duplicates.
    """
    path = checkpoint_log_path()
    if path is None:
        return 0
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        done, _ = published_checkpoints(path)
        last = max((int(c["treeSize"]) for c in done), default=0)
        fresh = list(Checkpoint.objects.filter(tree_size__gt=last).order_by("tree_size", "id"))
        lines, seen = [], last
        for cp in fresh:
            if cp.tree_size > seen:
                lines.append(json.dumps(checkpoint_json(cp), sort_keys=True) + "\n")
                seen = cp.tree_size
        if lines:
            os.write(fd, "".join(lines).encode())
            os.fsync(fd)
        return len(lines)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


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
            _lock_head()  # no sequencing while a batch moves (keeps the prefix contiguous)
            batch: list[AuditEvent] = []
            for ev in AuditEvent.objects.filter(seq__isnull=False).order_by("seq")[:batch_size]:
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
    published: int = 0
    unsequenced: int = 0
    unsequenced_oldest_s: float | None = None
    tail: int = 0  # sequenced events no signed checkpoint covers yet
    tail_oldest_s: float | None = None
    key_source: str = ""
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _sig_ok(key_id: str, data: bytes, signature_hex: str) -> bool:
    try:
        signature = bytes.fromhex(signature_hex)
    except ValueError:
        return False
    return keys.verify_pinned(key_id=key_id, data=data, signature=signature)


def _stored_events(report: VerifyReport) -> Iterator[tuple[dict[str, Any], str, str, int | None]]:
    """(hashed fields, prev_hash, hash, row id) for archived then live sequenced events, in storage order."""
    prev: AuditArchive | None = None
    for arc in AuditArchive.objects.order_by("first_seq"):
        blob = bytes(arc.blob)
        if not _sig_ok(arc.key_id, archive_message(arc), arc.signature) or hashlib.sha256(blob).hexdigest() != arc.sha256:
            report.problems.append(Problem("signature", arc.first_seq,
                                           f"archive #{arc.first_seq}..#{arc.last_seq} is not as signed"))
            continue
        # Archives are chained: each starts where the previous one ended (seq and hash).
        expected_first, expected_prev = (prev.last_seq + 1, prev.last_hash) if prev else (1, GENESIS)
        if arc.first_seq != expected_first or arc.prev_hash != expected_prev:
            report.problems.append(Problem("reordered", arc.first_seq,
                                           f"archive #{arc.first_seq}..#{arc.last_seq} does not continue the one "
                                           f"before it (expected to start at #{expected_first})"))
        prev = arc
        lines = archive_events(arc)
        if len(lines) != arc.count or (lines and (lines[0]["seq"] != arc.first_seq or lines[-1]["seq"] != arc.last_seq)):
            report.problems.append(Problem("modified", arc.first_seq, "archive contents do not match its header"))
        report.archived += len(lines)
        for line in lines:
            yield {k: line[k] for k in HASHED_FIELDS}, line["prev_hash"], line["hash"], None
    for ev in AuditEvent.objects.filter(seq__isnull=False).order_by("seq", "id").iterator(chunk_size=2000):
        report.events += 1
        yield event_fields(ev), ev.prev_hash, ev.hash, ev.pk


def _age(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else max(0.0, (now - then).total_seconds())


def audit_verify(*, now: datetime | None = None) -> VerifyReport:
    """Recompute the chain, the Merkle roots and the signatures; say where anything differs.

    Detects modification (an event's content no longer matches its hash), deletion (a gap
    in seq), insertion and reordering (duplicate seq, or prev_hash not the previous event's
    hash), rewriting from some point on (signed checkpoint root/head no longer match), and
    truncation (a checkpoint or the head records more events than the log holds).

    Signatures are checked only against the public key pinned outside the database
    (``OMNICARE_AUDIT_PUBKEY``; without it, the key derived from the master key or HSM): a key
    swapped into ``keys_keyversion`` proves nothing. Checkpoints published outside the database
    (``OMNICARE_AUDIT_CHECKPOINT_LOG``) must all still be in the database, in order, and match
    the log. Also reported: events not sequenced yet (and their age: a stalled sequencer past
    ``OMNICARE_AUDIT_UNSEQUENCED_MAX_SECONDS`` fails) and the unprotected tail after the last
    checkpoint (fails once older than ``OMNICARE_AUDIT_CHECKPOINT_SECONDS``).
    """
    now = now if now is not None else timezone.now()
    report = VerifyReport(key_source=keys.pinned_source())
    if report.key_source.startswith("derived"):
        report.warnings.append(Problem("key", None, f"no OMNICARE_AUDIT_PUBKEY: trusting the {report.key_source}"))
    checkpoints = list(Checkpoint.objects.order_by("tree_size", "id"))
    report.checkpoints = len(checkpoints)
    for cp in checkpoints:
        message = checkpoint_message(tree_size=cp.tree_size, merkle_root=cp.merkle_root, head_hash=cp.head_hash,
                                     created_at=cp.created_at)
        if not _sig_ok(cp.key_id, message, cp.signature):
            report.problems.append(Problem("signature", cp.tree_size,
                                           f"checkpoint {cp.pk} is not signed by the pinned audit key"))
    by_id = sorted(checkpoints, key=lambda c: c.pk)
    for a, b in zip(by_id, by_id[1:], strict=False):
        if b.tree_size < a.tree_size or b.created_at < a.created_at:
            report.problems.append(Problem("out-of-order", b.tree_size,
                                           f"checkpoint {b.pk} (size {b.tree_size}) is older or smaller than "
                                           f"checkpoint {a.pk} (size {a.tree_size}) made before it"))
    # The external log: the witness the database cannot rewrite.
    external: list[dict[str, Any]] = []
    path = checkpoint_log_path()
    if path is None:
        report.warnings.append(Problem("published", None, "OMNICARE_AUDIT_CHECKPOINT_LOG is not set: checkpoints "
                                                          "are not published outside the database"))
    else:
        external, errors = published_checkpoints(path)
        report.published = len(external)
        for e in errors:
            report.problems.append(Problem("published", None, e))
        if not path.exists() and checkpoints:
            report.problems.append(Problem("published", None, f"the external checkpoint log {path} is missing"))
    db_by_size = {cp.tree_size: cp for cp in checkpoints}
    last_size = 0
    for item in external:
        size = int(item["treeSize"])
        if size <= last_size:
            report.problems.append(Problem("out-of-order", size, f"published checkpoint size {size} follows size "
                                                                 f"{last_size} in the external log"))
        last_size = max(last_size, size)
        created = parse_datetime(str(item.get("time") or ""))
        message = checkpoint_message(tree_size=size, merkle_root=str(item.get("root")), head_hash=str(item.get("head")),
                                     created_at=created) if created else b""
        if not created or not _sig_ok(str(item.get("keyId")), message, str(item.get("signature"))):
            report.problems.append(Problem("signature", size, f"published checkpoint size {size} is not signed by "
                                                              f"the pinned audit key"))
            continue
        cp = db_by_size.get(size)
        if cp is None or cp.merkle_root != item.get("root") or cp.head_hash != item.get("head"):
            report.problems.append(Problem("missing", size, f"published checkpoint size {size} is missing from (or "
                                                            f"different in) the database"))
    by_size: dict[int, list[tuple[str, str, str]]] = {}
    for cp in checkpoints:
        by_size.setdefault(cp.tree_size, []).append((f"checkpoint {cp.pk}", cp.merkle_root, cp.head_hash))
    for item in external:
        by_size.setdefault(int(item["treeSize"]), []).append(
            ("published checkpoint", str(item.get("root")), str(item.get("head"))))

    frontier = merkle.Frontier()
    expected_seq, running, leaves = 1, GENESIS, 0
    last_good_cp = 0
    device_seqs: dict[tuple[str, str], list[tuple[int, int]]] = {}
    tail_oldest: datetime | None = None
    signed_size = max([cp.tree_size for cp in checkpoints] + [int(i["treeSize"]) for i in external], default=0)
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
        received = parse_datetime(str(fields.get("received_at") or ""))
        if leaves > signed_size and received is not None and (tail_oldest is None or received < tail_oldest):
            tail_oldest = received
        if fields.get("device_id") and fields.get("device_seq") is not None:
            owner = str(fields.get("username") or fields.get("user_id"))
            device_seqs.setdefault((str(fields["device_id"]), owner), []).append((int(fields["device_seq"]), seq))
        for name, root_hex, head_hex in by_size.get(leaves, []):
            if root_hex != frontier.root().hex() or head_hex != stored_hash:
                report.problems.append(Problem(
                    "modified", seq,
                    f"signed {name} (size {leaves}) does not match the log: events after seq "
                    f"{last_good_cp} up to {leaves} were rewritten, inserted or removed"))
            else:
                last_good_cp = leaves
    if signed_size > leaves:
        report.problems.append(Problem(
            "truncated", leaves + 1,
            f"a signed checkpoint records {signed_size} events but the log holds {leaves}: "
            f"seq {leaves + 1}..{signed_size} were removed"))
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
    # What is not protected yet: unsequenced events, and sequenced ones after the last signed checkpoint.
    waiting = AuditEvent.objects.filter(seq__isnull=True)
    report.unsequenced = waiting.count()
    report.unsequenced_oldest_s = _age(now, waiting.order_by("received_at").values_list("received_at", flat=True).first())
    if report.unsequenced_oldest_s is not None and report.unsequenced_oldest_s > sequence_delay_max().total_seconds():
        report.problems.append(Problem("unsequenced", None,
                                       f"{report.unsequenced} event(s) not sequenced, the oldest for "
                                       f"{report.unsequenced_oldest_s:.0f} s: is the sequencer running?"))
    report.tail = max(0, leaves - signed_size)
    report.tail_oldest_s = _age(now, tail_oldest)
    limit = checkpoint_interval() + TAIL_GRACE
    if report.tail_oldest_s is not None and report.tail_oldest_s > limit.total_seconds():
        report.problems.append(Problem("unprotected", signed_size + 1,
                                       f"{report.tail} event(s) after the last signed checkpoint, the oldest for "
                                       f"{report.tail_oldest_s:.0f} s (more than {limit.total_seconds():.0f} s)"))
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
        out.extend(bytes.fromhex(h) for h in AuditEvent.objects.filter(seq__isnull=False).order_by("seq")
                   .values_list("hash", flat=True)[:remaining])
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

DEVICE_ACTIONS = frozenset({"read", "search", "create", "update", "delete", "integrity", "audit-witness"})
#: Device actions that are security events (issue 17: a record or pending change failed verification;
#: issue 10: ``audit-witness``, the device saw this server's audit history rewritten — CT-style gossip).
DEVICE_SECURITY_ACTIONS = frozenset({"integrity", "audit-witness"})


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


# --- Shutdown ----------------------------------------------------------------------------------------

_wrote = False  # set once this process stored an audit event


def checkpoint_on_shutdown(*, force: bool = False) -> None:
    """Process exit (atexit) and Celery worker shutdown: leave no unsequenced or unsigned tail behind."""
    if not (_wrote or force):
        return
    try:
        audit_checkpoint()
    except Exception:  # exiting anyway; the next sequencer run or audit_verify sees the tail
        log.exception("audit checkpoint on shutdown failed")
