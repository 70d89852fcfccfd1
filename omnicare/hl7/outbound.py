"""Outbound HL7 v2: pharmacy orders (RDE^O11) from MedicationRequest writes, sent over MLLP with ACK wait.

Outbox pattern: the ``OutboundMessage`` row is written in the SAME transaction as the MedicationRequest
version (``signals.py``), so an order is never lost between the record and the queue; the send runs after
the commit (Celery). A send connects to ``OMNICARE_HL7_PHARMACY_ENDPOINT``, writes one MLLP frame and waits
up to ``OMNICARE_HL7_ACK_TIMEOUT_SECONDS`` for the ACK whose MSA-2 is our MSH-10. AA/CA: processed. AR/CR:
dead (the peer refuses this message; a resend would be refused again). AE, no answer, refused connection:
failed, retried with exponential backoff and jitter until ``OMNICARE_HL7_MAX_ATTEMPTS``, then dead.

No lock is held during the network wait (on SQLite a held write transaction would stop every other
writer): a retry reuses the same control id, so a peer that got it twice recognises the repeat.
python-hl7's ``MLLPClient`` is not used for sending: it has no timeouts and returns after one ``recv``
of 4 KB, which can cut an ACK in two; the loop below is the same protocol with both fixed.
"""

from __future__ import annotations

import logging
import socket
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from omnicare.fhir.models import Resource, ResourceVersion

from .message import ack_code_of, new_control_id
from .models import OutboundMessage
from .services import backoff_delay

log = logging.getLogger("omnicare.hl7.outbound")

VT, FS, CR = b"\x0b", b"\x1c", b"\x0d"


def _e(value: Any) -> str:
    """Escape a value for the default encoding characters ``|^~\\&``."""
    text = str(value or "")
    text = text.replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\").replace("&", "\\T\\")
    return text.replace("~", "\\R\\").replace("\r", " ").replace("\n", " ")


def _ts(value: str | None) -> str:
    if not value:
        return ""
    digits = "".join(ch for ch in value[:19] if ch.isdigit())
    return digits


def _cwe(cc: dict[str, Any] | None) -> str:
    if not cc:
        return ""
    coding = (cc.get("coding") or [{}])[0]
    system = str(coding.get("system") or "")
    name = {"http://www.nlm.nih.gov/research/umls/rxnorm": "RXNORM", "http://hl7.org/fhir/sid/ndc": "NDC",
            "http://snomed.info/sct": "SCT"}.get(system, "L" if coding.get("code") else "")
    return "^".join([_e(coding.get("code")), _e(coding.get("display") or cc.get("text")), name])


def _patient_segment(patient: dict[str, Any] | None) -> str:
    if patient is None:
        return "PID|1"
    ids = "~".join(f"{_e(i.get('value'))}^^^{_e(str(i.get('system', '')).rsplit(':', 1)[-1])}^MR"
                   for i in patient.get("identifier", []) if i.get("value"))
    ids = ids or f"{_e(patient['id'])}^^^OMNICARE^PI"
    name = (patient.get("name") or [{}])[0]
    xpn = f"{_e(name.get('family'))}^{_e((name.get('given') or [''])[0])}"
    sex = {"male": "M", "female": "F", "other": "O", "unknown": "U"}.get(str(patient.get("gender")), "")
    return f"PID|1||{ids}||{xpn}||{_ts(patient.get('birthDate'))}|{sex}"


def rde_o11(*, request: dict[str, Any], patient: dict[str, Any] | None, version: int, deleted: bool,
            control_id: str, now: datetime) -> str:
    """A pharmacy/treatment encoded order (RDE^O11, v2.5.1) for one MedicationRequest version."""
    status = str(request.get("status") or "")
    if deleted or status in ("cancelled", "stopped", "entered-in-error"):
        order_control = "CA" if status != "stopped" else "DC"
    else:
        order_control = "NW" if version == 1 else "XO"
    dose = (request.get("dosageInstruction") or [{}])[0]
    dq = ((dose.get("doseAndRate") or [{}])[0]).get("doseQuantity") or {}
    route = _cwe(dose.get("route"))
    requester = (request.get("requester") or {}).get("display", "")
    msh = (f"MSH|^~\\&|OMNICARE|OMNICARE|PHARMACY|PHARMACY|{now.strftime('%Y%m%d%H%M%S')}||RDE^O11^RDE_O11|"
           f"{control_id}|P|2.5.1|||AL|NE")
    orc = (f"ORC|{order_control}|{_e(request['id'])}^OMNICARE||||||||{now.strftime('%Y%m%d%H%M%S')}|||"
           f"^{_e(requester)}")
    rxe = (f"RXE|^^^{_ts(request.get('authoredOn'))}|{_cwe(request.get('medicationCodeableConcept'))}|"
           f"{_e(dq.get('value'))}||{_e(dq.get('code') or dq.get('unit'))}|||{_e(dose.get('text'))}")
    segs = [msh, _patient_segment(patient), orc, rxe]
    if route:
        segs.append(f"RXR|{route}")
    return "\r".join(segs) + "\r"


def order_queue(*, version: ResourceVersion) -> OutboundMessage | None:
    """Queue the RDE for one MedicationRequest version (inside the writing transaction). Idempotent."""
    endpoint = getattr(settings, "OMNICARE_HL7_PHARMACY_ENDPOINT", "")
    if not endpoint:
        return None
    source = f"MedicationRequest/{version.resource_id}/_history/{version.version_id}"
    body = dict(version.body or {})
    if version.deleted:
        prev = (
            ResourceVersion.objects.filter(resource_type="MedicationRequest", resource_id=version.resource_id,
                                           deleted=False).order_by("-version_id").first()
        )
        body = {**(prev.body if prev else {}), "id": version.resource_id}
    patient_ids = list(version.patient_ids or [])
    patient = None
    if patient_ids:
        row = Resource.objects.filter(resource_type="Patient", resource_id=patient_ids[0], deleted=False).first()
        patient = row.body if row is not None else None
    now = timezone.now()
    control = new_control_id()
    raw = rde_o11(request=body, patient=patient, version=version.version_id, deleted=version.deleted,
                  control_id=control, now=now)
    try:
        with transaction.atomic():
            return OutboundMessage.objects.create(
                endpoint=endpoint, control_id=control, message_type="RDE^O11", source=source, raw=raw,
                created_at=now, state=OutboundMessage.QUEUED,
            )
    except IntegrityError:  # this version was queued already
        return None


def outbound_enqueue(*, message_ids: list[int]) -> None:
    from .tasks import send_outbound  # noqa: PLC0415 - deferred: the tasks module imports this one (Celery)

    queue = getattr(settings, "OMNICARE_HL7_CELERY_QUEUE", "") or None
    for mid in message_ids:
        try:
            send_outbound.apply_async(args=[mid], queue=queue)
        except Exception:
            log.warning("hl7: could not enqueue outbound %s; the sweeper will retry", mid, exc_info=True)


def mllp_exchange(endpoint: str, payload: bytes, *, timeout: float) -> bytes:
    """Send one framed message to ``host:port`` and return the ACK frame's content (raises on failure)."""
    host, _, port = endpoint.rpartition(":")
    with socket.create_connection((host or "127.0.0.1", int(port)), timeout=min(timeout, 10.0)) as sock:
        sock.settimeout(timeout)
        sock.sendall(VT + payload + FS + CR)
        buf = b""
        while FS + CR not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("peer closed the connection before its ACK")
            buf += chunk
            if len(buf) > 1024 * 1024:
                raise ConnectionError("ACK too large")
    block = buf.split(FS + CR, 1)[0]
    return block[block.find(VT) + 1:]


def outbound_send(*, message_id: int, now: datetime | None = None) -> str:
    """Send one queued message and record the outcome; returns the new state."""
    row = OutboundMessage.objects.filter(pk=message_id).first()
    if row is None:
        return "missing"
    if row.state in (OutboundMessage.PROCESSED, OutboundMessage.DEAD):
        return row.state
    timeout = float(getattr(settings, "OMNICARE_HL7_ACK_TIMEOUT_SECONDS", 30.0))
    error = ""
    code = ""
    try:
        ack = mllp_exchange(row.endpoint, row.raw.encode("utf-8"), timeout=timeout)
        code, acked = ack_code_of(ack)
        if acked != row.control_id:
            error, code = "ACK for another message (MSA-2 does not match)", ""
    except (OSError, ValueError) as exc:
        error = f"{type(exc).__name__}: no ACK from the peer"
    now = now or timezone.now()
    row.attempts += 1
    row.ack_code = code
    if code in ("AA", "CA"):
        row.state, row.ack_received_at, row.last_error, row.next_attempt_at = OutboundMessage.PROCESSED, now, "", None
    elif code in ("AR", "CR"):
        row.state, row.ack_received_at = OutboundMessage.DEAD, now
        row.last_error, row.next_attempt_at = f"peer rejected the message ({code})", None
    else:
        row.last_error = (error or f"peer answered {code or 'nothing usable'}")[:300]
        if row.attempts >= int(getattr(settings, "OMNICARE_HL7_MAX_ATTEMPTS", 8)):
            row.state, row.next_attempt_at = OutboundMessage.DEAD, None
        else:
            row.state = OutboundMessage.FAILED
            row.next_attempt_at = now + backoff_delay(
                attempts=row.attempts, base=float(getattr(settings, "OMNICARE_HL7_RETRY_BASE_SECONDS", 5.0)),
                cap=float(getattr(settings, "OMNICARE_HL7_RETRY_CAP_SECONDS", 3600.0)),
            )
    # Only move on from the state we started from (a concurrent send may have finished first).
    OutboundMessage.objects.filter(pk=row.pk).exclude(state=OutboundMessage.PROCESSED).update(
        state=row.state, attempts=row.attempts, ack_code=row.ack_code, ack_received_at=row.ack_received_at,
        last_error=row.last_error, next_attempt_at=row.next_attempt_at,
    )
    return row.state


def outbound_retry_due(*, now: datetime | None = None, limit: int = 500) -> int:
    now = now or timezone.now()
    ids = list(
        OutboundMessage.objects.filter(state=OutboundMessage.FAILED, next_attempt_at__lte=now)
        .values_list("id", flat=True)[:limit]
    )
    stale = now - timedelta(seconds=int(getattr(settings, "OMNICARE_HL7_STALE_SECONDS", 120)))
    ids += list(
        OutboundMessage.objects.filter(state=OutboundMessage.QUEUED, created_at__lte=stale)
        .values_list("id", flat=True)[:limit]
    )
    outbound_enqueue(message_ids=ids)
    return len(ids)
