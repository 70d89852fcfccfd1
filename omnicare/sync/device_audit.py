"""Audit events a device recorded offline, uploaded on sync (``POST /api/audit/device-events``).

Above both access and audit: it checks the batch is believable for this user's registered device (access
rules, break-the-glass grants, what sync delivered) and then appends it to the trail. The audit log itself
stays a sink that imports nothing from access, fhir or sync.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from omnicare.access.models import EmergencyAccessGrant
from omnicare.access.services import access_check, device_check
from omnicare.audit.models import AuditEvent
from omnicare.audit.services import (
    DEVICE_ACTIONS,
    DEVICE_SECURITY_ACTIONS,
    OUTCOMES,
    AuditUnavailable,
    DeviceEvent,
    IngestResult,
    NewEvent,
    append_events,
    audit_record,
    device_gaps,
    ts,
)
from omnicare.core.errors import ApiError, BadRequest, Forbidden

from .models import Device

#: Device clocks drift; an event more than this ahead of the server, or before the device existed, is refused.
DEVICE_CLOCK_SKEW = timedelta(minutes=10)
#: A device numbers its events 1, 2, 3, ...; a jump further than this past the last one stored is refused.
DEVICE_SEQ_MAX_JUMP = 100_000
#: What a device may claim as the purpose of an offline access (ETREAT only with a break-the-glass grant).
DEVICE_PURPOSES = frozenset({"TREAT", "ETREAT"})


class DeviceEventsRefused(ApiError):
    """A device-event batch that is not plausible for this user's registered device (nothing stored)."""

    status, code = 403, "forbidden"


def _device_patients_delivered(*, user: Any, device_id: str) -> set[str]:
    """Every patient whose records the server delivered to this device (its audited sync pulls)."""
    out: set[str] = set()
    for ids in AuditEvent.objects.filter(user_id=user.pk, device_id=device_id, action="sync-pull",
                                         outcome="success").values_list("patient_ids", flat=True).iterator():
        out.update(str(p) for p in ids or [])
    return out


def _device_events_check(*, user: Any, device: Any, events: Sequence[DeviceEvent], last_seq: int,
                         now: datetime) -> str | None:
    """Why this batch is not believable for ``device`` (None: it is). One reason, no PHI."""
    delivered: set[str] | None = None
    earliest = device.created - DEVICE_CLOCK_SKEW
    for e in events:
        if e.seq > last_seq + DEVICE_SEQ_MAX_JUMP:
            return f"event {e.seq}: sequence number jumps more than {DEVICE_SEQ_MAX_JUMP} past {last_seq}"
        occurred = e.occurred if e.occurred.tzinfo else e.occurred.replace(tzinfo=UTC)
        if occurred > now + DEVICE_CLOCK_SKEW or occurred < earliest:
            return f"event {e.seq}: time {ts(occurred)} is outside the device's lifetime"
        if e.purpose not in DEVICE_PURPOSES:
            return f"event {e.seq}: purpose must be one of {sorted(DEVICE_PURPOSES)}"
        patients = [str(p) for p in e.patient_ids if p]
        if e.purpose == "ETREAT":
            granted = set(EmergencyAccessGrant.objects.filter(
                user=user, patient_id__in=patients, started__lte=occurred + DEVICE_CLOCK_SKEW,
                expires__gte=occurred - DEVICE_CLOCK_SKEW).values_list("patient_id", flat=True))
            if not patients or set(patients) - granted:
                return f"event {e.seq}: emergency access claimed without a break-the-glass grant"
        if not patients:
            if e.resource_type:
                try:
                    access_check(user=user, action="search", resource_type=e.resource_type)
                except Forbidden:
                    return f"event {e.seq}: this user may not {e.action} {e.resource_type}"
            continue
        if delivered is None:
            delivered = _device_patients_delivered(user=user, device_id=device.device_id)
        if set(patients) <= delivered:
            continue  # records this device really received, even if the scope changed since
        try:
            access_check(user=user, action=e.action if e.action not in ("search", "integrity") else "read",
                         resource_type=e.resource_type or "Patient", patient_ids=patients)
        except Forbidden:
            return f"event {e.seq}: names a patient this device never received and the user may not see"
    return None


def device_events_ingest(
    *, user: Any, device_id: str, events: Sequence[DeviceEvent], now: datetime | None = None
) -> IngestResult:
    """Append a device's offline events to the trail. Idempotent per (user, device, seq).

    Only a registered, non-revoked device of ``user`` may submit, for patients it received by sync (or
    that the user may see now), with times inside the device's lifetime, purposes a device can have and
    sequence numbers that continue its own. Anything else is refused whole (403/400, nothing stored) and
    recorded as a security event. Missing sequence numbers are flagged: each newly seen gap is itself
    recorded as a security event (``device-gap``) and returned.
    """
    now = now if now is not None else timezone.now()
    for e in events:
        if e.seq < 1 or e.action not in DEVICE_ACTIONS or e.outcome not in OUTCOMES:
            raise BadRequest(f"event {e.seq}: seq must be >= 1, action one of {sorted(DEVICE_ACTIONS)}, "
                             f"outcome one of {list(OUTCOMES)}")
    try:
        device_check(user=user, device_id=device_id, now=now)
        with transaction.atomic():
            # One ingest per device at a time (duplicates and gaps see a stable view); no global lock.
            device = Device.objects.select_for_update().filter(user=user, device_id=device_id).first()
            if device is None:
                raise DeviceEventsRefused("This device is not registered for your account")
            mine = AuditEvent.objects.filter(user_id=user.pk, device_id=device_id, device_seq__isnull=False)
            last_before = mine.order_by("-device_seq").values_list("device_seq", flat=True).first() or 0
            reason = _device_events_check(user=user, device=device, events=events, last_seq=last_before, now=now)
            if reason:
                raise DeviceEventsRefused(f"Device audit events refused: {reason}")
            known = set(mine.filter(device_seq__in=[e.seq for e in events]).values_list("device_seq", flat=True))
            gaps_before = set(device_gaps(user_id=user.pk, device_id=device_id))
            fresh: dict[int, DeviceEvent] = {}
            for e in events:
                if e.seq not in known:
                    fresh.setdefault(e.seq, e)
            append_events([
                NewEvent(action=e.action, user=user, resource_type=e.resource_type, resource_id=e.resource_id,
                         **({"category": AuditEvent.CATEGORY_SECURITY} if e.action in DEVICE_SECURITY_ACTIONS else {}),
                         patient_ids=e.patient_ids, outcome=e.outcome, purpose=e.purpose, device_id=device_id,
                         device_seq=e.seq, device_time=e.occurred, detail=e.detail)
                for _, e in sorted(fresh.items())
            ], now=now)
            gaps_after = device_gaps(user_id=user.pk, device_id=device_id)
            new_gaps = [g for g in gaps_after if g not in gaps_before]
            if new_gaps:
                append_events([
                    NewEvent(action="device-gap", user=user, category=AuditEvent.CATEGORY_SECURITY,
                             outcome="failure", purpose="HOPERAT", device_id=device_id,
                             detail={"missing": ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in new_gaps)})
                ], now=now)
            last = mine.order_by("-device_seq").values_list("device_seq", flat=True).first() or 0
    except ApiError as exc:
        if isinstance(exc, AuditUnavailable):
            raise
        audit_record(user=user, action="device-events-refused", category=AuditEvent.CATEGORY_SECURITY,
                     outcome="denied", purpose="HOPERAT", device_id=device_id[:64],
                     detail={"reason": exc.diagnostics[:200], "events": str(len(events))}, now=now)
        raise
    return IngestResult(accepted=len(fresh), duplicates=len(events) - len(fresh), gaps=gaps_after, last_seq=last)


