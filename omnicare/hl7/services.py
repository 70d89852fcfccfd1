"""HL7 v2 interface services: durable inbound store, mapping runs, retries, queue stats, outbound sends.

Inbound: the listener hands every framed message to :func:`inbound_accept` (decode, read MSH/PID, check) and
then :func:`inbound_store` (one statement for a batch of messages from all connections: group commit). The
ACK AA goes out only after that commit. :func:`inbound_process_batch` (the Celery task) maps messages to
FHIR in one transaction per batch with a savepoint per message holding its writes, its audit event and
the row's state change, so a message is either fully in the record or not at all, and a redelivered task
finds it ``processed`` and does nothing.

The sending system is the audit agent: events carry no user, ``username`` ``hl7:<MSH-4>`` and the message
type / control id (never content). FHIR writes go through the system store (``FhirStore.system().apply``: the
one write path: search index, change feed, sync hints; bodies validated by ``Write.valid``): the interface is
a system actor, not a clinician, and is trusted for every patient like a bulk import.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, F, Min, Q
from django.utils import timezone

from omnicare.core.errors import ApiError
from omnicare.sync.push import one_hint_after_commit

from . import mapping
from .message import MessageError, Parsed, ack_bytes, check, decode, parse, parse_for_ack
from .models import InboundMessage, OutboundMessage

log = logging.getLogger("omnicare.hl7")

AGENT_PREFIX = "hl7:"


def _setting(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


def backoff_delay(*, attempts: int, base: float, cap: float, rng: random.Random | None = None) -> timedelta:
    """Exponential backoff with jitter: uniformly in [d/2, d] where d = min(cap, base * 2**(attempts-1))."""
    d = min(cap, base * (2 ** max(0, attempts - 1)))
    r = (rng or random).uniform(0.5, 1.0)
    return timedelta(seconds=d * r)


# -------------------------------------------------------------------------------------------------------------
# Inbound: accept and store (the listener)
# -------------------------------------------------------------------------------------------------------------


@dataclass
class Accepted:
    """A message that passed the checks and may be stored."""

    parsed: Parsed
    raw_text: str


def inbound_accept(*, raw: bytes) -> Accepted | tuple[bytes, MessageError]:
    """Decode, parse and check one framed message. Returns it, or (the AR/AE ACK, the error)."""
    parsed: Parsed | None = None
    try:
        text = decode(raw)
        parsed = parse_for_ack(text)  # MSH, PID and segment names: the full parse runs in the worker
        check(parsed)
    except MessageError as err:
        return ack_bytes(parsed, err.ack, error=err), err
    return Accepted(parsed=parsed, raw_text=parsed.text)


@dataclass
class Stored:
    id: int
    duplicate: bool
    ack: bytes


def inbound_store(*, items: list[Accepted], now: datetime | None = None) -> list[Stored]:
    """Store a batch durably; duplicates (sender + control id) are recognised, never stored twice.

    ONE statement for the batch in the common case (``INSERT .. ON CONFLICT DO NOTHING RETURNING``, which
    commits on its own in autocommit mode): on a loaded machine every round trip to PostgreSQL costs
    milliseconds, and the ACK waits for this. Repeats then cost one more query. Returns, per item, the row
    id, whether it was a repeat, and the AA to send (only after this returned, i.e. after the commit).
    """
    now = now or timezone.now()
    first: dict[tuple[str, str], Accepted] = {}
    for a in items:
        first.setdefault((a.parsed.sender[:200], a.parsed.control_id), a)
    table = connection.ops.quote_name(InboundMessage._meta.db_table)
    cols = ("sender", "sending_app", "control_id", "message_type", "version", "state", "attempts",
            "last_error", "ack_code", "ack_sent_at", "repeats", "raw", "received_at", "resources", "conflicts")
    at = now if connection.vendor == "postgresql" else connection.ops.adapt_datetimefield_value(now)
    rows: list[Any] = []
    for (sender, control), a in first.items():
        rows += [sender, a.parsed.sending_app[:200], control, a.parsed.message_type[:20], a.parsed.version[:10],
                 InboundMessage.RECEIVED, 0, "", "AA", at, 0, a.raw_text, at, "[]", "[]"]
    marks = ", ".join(["(" + ", ".join(["%s"] * len(cols)) + ")"] * len(first))
    sql = (
        f"INSERT INTO {table} ({', '.join(cols)}) VALUES {marks} "  # noqa: S608 (identifiers are ours)
        "ON CONFLICT (sender, control_id) DO NOTHING RETURNING id, sender, control_id"
    )
    with connection.cursor() as cur:
        cur.execute(sql, rows)
        inserted = {(r[1], r[2]): int(r[0]) for r in cur.fetchall()}
    ids = dict(inserted)
    missing = [k for k in first if k not in ids]
    if missing:
        cond = Q()
        for sender, control in missing:
            cond |= Q(sender=sender, control_id=control)
        for pk, sender, control in InboundMessage.objects.filter(cond).values_list("id", "sender", "control_id"):
            ids[(sender, control)] = pk
    out: list[Stored] = []
    repeated: list[int] = []
    seen: set[tuple[str, str]] = set()
    for a in items:
        key = (a.parsed.sender[:200], a.parsed.control_id)
        duplicate = key not in inserted or key in seen
        seen.add(key)
        if duplicate:
            repeated.append(ids[key])
        out.append(Stored(ids[key], duplicate, ack_bytes(a.parsed, "AA")))
    if repeated:
        for rid in repeated:
            InboundMessage.objects.filter(pk=rid).update(repeats=F("repeats") + 1, ack_sent_at=now)
    return out


def inbound_enqueue(*, message_ids: list[int]) -> None:
    """Hand stored messages to Celery, a task per chunk (eager mode: run them now).

    A lost enqueue is found by the sweeper. A chunk is mapped in one transaction (see
    :func:`inbound_process_batch`), which also picks up rows stored after it was queued.
    """
    from .tasks import process_inbound_batch  # noqa: PLC0415 - deferred: the tasks module imports this one (Celery)

    queue = _setting("OMNICARE_HL7_CELERY_QUEUE", "") or None
    size = max(1, int(_setting("OMNICARE_HL7_BATCH", 64)))
    for start in range(0, len(message_ids), size):
        chunk = list(message_ids[start : start + size])
        try:
            process_inbound_batch.apply_async(args=[chunk], queue=queue)
        except Exception:  # the broker being down never loses a message: inbound_retry_due re-sends it
            log.warning("hl7: could not enqueue %d message(s); the sweeper will retry", len(chunk), exc_info=True)


# -------------------------------------------------------------------------------------------------------------
# Inbound: mapping (the Celery task)
# -------------------------------------------------------------------------------------------------------------


def _permanent(exc: BaseException) -> bool:
    """Errors that a retry cannot fix (bad data): straight to dead letter."""
    if isinstance(exc, MessageError):
        return True
    if isinstance(exc, ApiError):
        return exc.status in (400, 404, 422)
    return False


def _error_text(exc: BaseException) -> str:
    """A failure reason without message content: our own error texts, else the exception class."""
    if isinstance(exc, MessageError | ApiError):
        text = getattr(exc, "text", None) or getattr(exc, "diagnostics", None) or type(exc).__name__
        return f"{type(exc).__name__}: {str(text)[:250]}"
    return type(exc).__name__


def inbound_process(*, message_id: int, now: datetime | None = None) -> str:
    """Map one stored message (see :func:`inbound_process_batch`); returns its new state."""
    return inbound_process_batch(message_ids=[message_id], now=now, claim=0).get(message_id, "missing")


def inbound_process_batch(*, message_ids: list[int], now: datetime | None = None,
                          claim: int | None = None) -> dict[int, str]:
    """Map stored messages to FHIR: ONE transaction for the batch, one savepoint per message.

    Why a batch: per message the commit (fsync), the feed-position seal, the WebSocket hint and the task
    round trip cost more than the mapping itself, and under a backlog they starved the listener of CPU.
    Each message still stands alone: its FHIR writes, its MappedResource rows and its audit event are in
    its own savepoint, so a message that fails rolls back to nothing and is recorded failed/dead (with
    backoff) in the same transaction while the others commit; a message is in the record entirely or not
    at all, and its audit event commits with it.

    Besides ``message_ids`` (received or failed: the retry sweep and replays name failed ones) the batch
    claims up to ``claim`` more *received* rows in arrival order, so one task drains what the listener
    stored meanwhile and the tasks queued for those rows find them processed. Those extra rows are locked
    with ``FOR UPDATE SKIP LOCKED``: a row another worker holds is that worker's (its own task, queued for
    it, waits for the lock and finds it processed, or maps it if that worker rolled back).
    Idempotent: processed and dead rows are never touched. Returns ``{id: state}`` for the named ids and
    every row the batch took.
    """
    now = now or timezone.now()
    claim = _setting("OMNICARE_HL7_BATCH", 64) if claim is None else claim
    waiting = [InboundMessage.RECEIVED, InboundMessage.FAILED]
    states: dict[int, str] = {}
    failures: list[InboundMessage] = []
    with transaction.atomic(), _one_hint_after_commit():
        # The named rows: wait for their locks (a repeat's UPDATE in the listener, another worker's batch;
        # PostgreSQL re-checks the state after the wait). Skipping them would leave a row unmapped until
        # the stale sweep. Locks are taken in id order, so two batches never wait on each other in a cycle.
        named = InboundMessage.objects.select_for_update().order_by("id")
        rows = list(named.filter(pk__in=message_ids, state__in=waiting))
        if claim > 0:
            have = {r.pk for r in rows}
            extra = InboundMessage.objects.select_for_update(skip_locked=True).order_by("id")
            rows += [r for r in extra.filter(state=InboundMessage.RECEIVED)[:claim] if r.pk not in have]
            rows.sort(key=lambda r: r.pk)  # arrival order: an update never overtakes the message before it
        for row in rows:
            try:
                with transaction.atomic():  # the message's savepoint
                    result = mapping.message_apply(parsed=parse(row.raw), message=row, now=now)
            except Exception as exc:  # its writes rolled back to the savepoint; the others go on
                _record_failure(row, exc, now)
                failures.append(row)
                continue
            row.state = InboundMessage.PROCESSED
            row.processed_at = now
            row.attempts += 1
            row.last_error = ""
            row.next_attempt_at = None
            row.resources = result.resources
            row.conflicts = result.conflicts
        if rows:
            InboundMessage.objects.bulk_update(rows, ["state", "processed_at", "attempts", "last_error",
                                                      "next_attempt_at", "resources", "conflicts"])
        states.update({r.pk: r.state for r in rows})
    for row in failures:
        log.warning("hl7: message %s %s (%s)", row.pk, row.state, row.last_error)
    missing = [m for m in message_ids if m not in states]
    if missing:  # processed / dead already, or held by another worker: report what the table says
        states.update(dict(InboundMessage.objects.filter(pk__in=missing).values_list("id", "state")))
    return states


def _record_failure(row: InboundMessage, failure: BaseException, now: datetime) -> None:
    row.attempts += 1
    row.last_error = _error_text(failure)[:300]
    if _permanent(failure) or row.attempts >= _setting("OMNICARE_HL7_MAX_ATTEMPTS", 8):
        row.state = InboundMessage.DEAD
        row.next_attempt_at = None
    else:
        row.state = InboundMessage.FAILED
        row.next_attempt_at = now + backoff_delay(
            attempts=row.attempts, base=_setting("OMNICARE_HL7_RETRY_BASE_SECONDS", 5.0),
            cap=_setting("OMNICARE_HL7_RETRY_CAP_SECONDS", 3600.0),
        )


def _one_hint_after_commit() -> Any:
    """One WebSocket hint for the whole batch, after its commit (instead of one per message)."""
    return one_hint_after_commit()


def inbound_retry_due(*, now: datetime | None = None, limit: int = 500) -> int:
    """Re-enqueue failed messages whose retry time has come, and received ones whose task was lost."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=_setting("OMNICARE_HL7_STALE_SECONDS", 120))
    ids = list(
        InboundMessage.objects.filter(state=InboundMessage.FAILED, next_attempt_at__lte=now)
        .values_list("id", flat=True)[:limit]
    )
    ids += list(
        InboundMessage.objects.filter(state=InboundMessage.RECEIVED, received_at__lte=stale)
        .values_list("id", flat=True)[:limit]
    )
    inbound_enqueue(message_ids=ids)
    return len(ids)


def inbound_replay(*, message_ids: list[int]) -> int:
    """Admin action: put failed/dead messages back in the queue (attempts reset) and enqueue them."""
    n = InboundMessage.objects.filter(
        pk__in=message_ids, state__in=[InboundMessage.FAILED, InboundMessage.DEAD]
    ).update(state=InboundMessage.RECEIVED, attempts=0, next_attempt_at=None)
    transaction.on_commit(lambda: inbound_enqueue(message_ids=list(message_ids)))
    return n


def inbound_discard(*, message_ids: list[int]) -> int:
    """Admin action: give up on messages (dead letter, kept for the record)."""
    return InboundMessage.objects.filter(pk__in=message_ids).exclude(state=InboundMessage.PROCESSED).update(
        state=InboundMessage.DEAD, next_attempt_at=None, last_error="discarded by an administrator"
    )


# -------------------------------------------------------------------------------------------------------------
# Queue health (admin, metrics): counts and ages only, never content
# -------------------------------------------------------------------------------------------------------------


def queue_stats(*, now: datetime | None = None) -> dict[str, Any]:
    now = now or timezone.now()
    out: dict[str, Any] = {}
    for name, model, stamp, waiting in (
        ("inbound", InboundMessage, "received_at", [InboundMessage.RECEIVED, InboundMessage.FAILED]),
        ("outbound", OutboundMessage, "created_at", [OutboundMessage.QUEUED, OutboundMessage.FAILED]),
    ):
        by_state = dict(model.objects.values_list("state").annotate(n=Count("id")).values_list("state", "n"))
        oldest = model.objects.filter(state__in=waiting).aggregate(m=Min(stamp))["m"]
        reasons = list(
            model.objects.filter(state__in=["failed", "dead"]).exclude(last_error="")
            .values("last_error").annotate(n=Count("id")).order_by("-n")[:10]
        )
        out[name] = {
            "by_state": by_state,
            "depth": sum(by_state.get(s, 0) for s in waiting),
            "oldest_age_seconds": (now - oldest).total_seconds() if oldest else 0.0,
            "failure_reasons": [(r["last_error"], r["n"]) for r in reasons],
        }
    return out
