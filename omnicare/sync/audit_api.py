"""Audit API (mounted at /api/audit): device event ingest, AuditEvent search for auditors, proofs."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from ninja import Field, Query, Router, Schema

from omnicare.access.auth import api_auth
from omnicare.access.device_ids import DeviceId
from omnicare.access.services import access_check
from omnicare.audit import services
from omnicare.audit.fhir import to_fhir
from omnicare.audit.models import AuditEvent, Checkpoint
from omnicare.core.errors import FHIR_JSON, BadRequest

from . import device_audit

router = Router(tags=["audit"], auth=api_auth)

MAX_DEVICE_EVENTS = 1000
MAX_INT = 2**62  # keeps every integer a BIGINT on both databases (a bigger one would be a 500, not a 400)


def _bounded(*values: int) -> None:
    if any(not 0 <= v <= MAX_INT for v in values):
        raise BadRequest(f"numbers must be between 0 and {MAX_INT}")


class DeviceEventIn(Schema):
    seq: int = Field(ge=1, le=MAX_INT, description="The device's own sequence number: 1, 2, 3, ... with no gaps")
    action: str = Field(description="read, search, create, update or delete")
    occurred: datetime = Field(description="Device clock time of the access")
    resourceType: str = ""
    id: str = Field("", description="Resource id")
    patientIds: list[str] = Field(default_factory=list)
    outcome: str = "success"
    purpose: str = "TREAT"
    detail: dict[str, str] = Field(default_factory=dict)


class DeviceEventsIn(Schema):
    deviceId: DeviceId
    events: list[DeviceEventIn] = Field(description=f"At most {MAX_DEVICE_EVENTS}")


class DeviceEventsOut(Schema):
    accepted: int
    duplicates: int
    gaps: list[list[int]] = Field(description="Missing [first, last] ranges of this device's sequence")
    lastSeq: int = Field(description="Highest sequence number the server holds for this device")


@router.post("/device-events", response=DeviceEventsOut)
def device_events(request: HttpRequest, body: DeviceEventsIn) -> dict[str, Any]:
    """A device uploads the audit events it recorded offline (idempotent; gaps are flagged)."""
    if len(body.events) > MAX_DEVICE_EVENTS:
        raise BadRequest(f"At most {MAX_DEVICE_EVENTS} events per request", status=413, code="too-costly")
    result = device_audit.device_events_ingest(
        user=request.user, device_id=body.deviceId,
        events=[
            services.DeviceEvent(
                seq=e.seq, action=e.action, occurred=e.occurred, resource_type=e.resourceType[:64],
                resource_id=e.id[:128], patient_ids=[p[:128] for p in e.patientIds[:100]], outcome=e.outcome,
                purpose=e.purpose[:20], detail={k[:40]: v[:200] for k, v in list(e.detail.items())[:20]},
            )
            for e in body.events
        ],
    )
    return {"accepted": result.accepted, "duplicates": result.duplicates,
            "gaps": [list(g) for g in result.gaps], "lastSeq": result.last_seq}


class EventsQuery(Schema):
    patient: str | None = Field(None, description="Patient id")
    user: str | None = Field(None, description="Username")
    action: str | None = None
    category: str | None = Field(None, description="access or security")
    device: str | None = None
    since: datetime | None = Field(None, description="recorded at or after")
    until: datetime | None = Field(None, description="recorded before")
    after: int = Field(0, ge=0, le=MAX_INT, description="Return events with seq greater than this (paging)")
    count: int = Field(100, ge=1, le=MAX_INT, alias="_count")


#: Each search parameter given narrows one column: (parameter, ORM lookup).
_EVENT_FILTERS = (("user", "username"), ("action", "action"), ("category", "category"), ("device", "device_id"),
                  ("since", "received_at__gte"), ("until", "received_at__lt"))


@router.get("/events")
def events(request: HttpRequest, q: Query[EventsQuery]) -> HttpResponse:
    """Auditors: audit events as a FHIR searchset Bundle of AuditEvent, oldest first (page with ``after``)."""
    access_check(user=request.user, action="search", resource_type="AuditEvent",
                 patient_ids=[q.patient] if q.patient else [])
    count = min(q.count, int(getattr(settings, "OMNICARE_PAGE_MAX", 1000)))
    # Auditors see everything committed: chain what the sequencer has not reached yet (rare, short). If the
    # chain cannot move (e.g. a removed head), they still read what is sequenced; audit_verify says why.
    with contextlib.suppress(services.AuditUnavailable):
        services.audit_sequence()
    qs = AuditEvent.objects.filter(seq__gt=q.after).order_by("seq")
    for param, lookup in _EVENT_FILTERS:
        if value := getattr(q, param):
            qs = qs.filter(**{lookup: value})
    rows: list[AuditEvent] = []
    if q.patient:
        # JSON containment differs by database; filter in Python over an indexed, paged scan.
        for ev in qs.iterator(chunk_size=500):
            if q.patient in ev.patient_ids:
                rows.append(ev)
                if len(rows) > count:
                    break
    else:
        rows = list(qs[: count + 1])
    more = len(rows) > count
    rows = rows[:count]
    services.audit_record(user=request.user, action="search", resource_type="AuditEvent",
                          patient_ids=[q.patient] if q.patient else [], purpose="HOPERAT")
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"fullUrl": f"urn:omnicare:audit:{ev.seq}", "resource": to_fhir(ev), "search": {"mode": "match"}}
                  for ev in rows],
        "link": [{"relation": "self", "url": request.get_full_path()}],
    }
    if more:
        params = request.GET.copy()
        params["after"] = str(rows[-1].seq)
        bundle["link"].append({"relation": "next", "url": f"{request.path}?{params.urlencode()}"})
    return JsonResponse(bundle, content_type=FHIR_JSON)


@router.get("/checkpoints")
def checkpoints(request: HttpRequest, after: int = 0) -> dict[str, Any]:
    """Auditors: signed checkpoints (tree size, Merkle root, head hash, key, Ed25519 signature)."""
    access_check(user=request.user, action="read", resource_type="AuditEvent")
    _bounded(after)
    rows = Checkpoint.objects.filter(tree_size__gt=after).order_by("tree_size")[:1000]
    return {"checkpoints": [
        {"treeSize": c.tree_size, "root": c.merkle_root, "head": c.head_hash, "time": services.ts(c.created_at),
         "keyId": c.key_id, "signature": c.signature,
         "message": services.checkpoint_message(tree_size=c.tree_size, merkle_root=c.merkle_root,
                                                head_hash=c.head_hash, created_at=c.created_at).decode()}
        for c in rows]}


def _proof(build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A Merkle proof; one the tree cannot give (sizes out of order, past the head) is a 400 with the reason."""
    try:
        return build()
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc


def _auditor_proof(request: HttpRequest, build: Callable[[], dict[str, Any]], *numbers: int) -> dict[str, Any]:
    access_check(user=request.user, action="read", resource_type="AuditEvent")
    _bounded(*numbers)
    return _proof(build)


@router.get("/proof/inclusion")
def proof_inclusion(request: HttpRequest, seq: int, tree_size: int) -> dict[str, Any]:
    """Auditors: RFC 9162 inclusion proof of event ``seq`` in the tree of size ``tree_size``."""
    return _auditor_proof(request, lambda: services.inclusion_proof(seq=seq, tree_size=tree_size), seq, tree_size)


@router.get("/proof/consistency")
def proof_consistency(request: HttpRequest, first: int, second: int) -> dict[str, Any]:
    """Auditors: RFC 9162 consistency proof between tree sizes ``first`` and ``second``."""
    return _auditor_proof(request, lambda: services.consistency_proof(first=first, second=second), first, second)


# --- Gossip: every device is a witness of the log (see pyclient/auditlog.py) ----------------------------

_proof_cache: dict[tuple[int, int, str], dict[str, Any]] = {}


@router.get("/log/checkpoint")
def log_checkpoint(request: HttpRequest) -> dict[str, Any]:
    """Anyone signed in: the newest signed checkpoint (also sent with every sync pull as ``auditCheckpoint``)."""
    cp = services.latest_checkpoint()
    return {"checkpoint": services.checkpoint_json(cp) if cp else None}


@router.get("/log/consistency")
def log_consistency(request: HttpRequest, first: int, second: int) -> dict[str, Any]:
    """Anyone signed in: RFC 9162 consistency proof from tree size ``first`` to the checkpoint of size ``second``.

    ``second`` must be the size of a signed checkpoint (the ones devices are handed); proofs are cached.
    Only hashes are returned: nothing about any patient or user.
    """
    _bounded(first, second)
    cp = Checkpoint.objects.filter(tree_size=second).order_by("-id").first()
    if cp is None or first > second:
        raise BadRequest("second must be the size of a signed checkpoint, and first <= second")
    key = (first, second, cp.merkle_root)
    if key not in _proof_cache:
        proof = _proof(lambda: services.consistency_proof(first=first, second=second))
        if len(_proof_cache) > 256:
            _proof_cache.clear()
        _proof_cache[key] = proof
    return _proof_cache[key]
