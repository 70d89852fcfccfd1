"""Offline sync API (/api/sync/): pull, push, conflicts, devices, snapshots, push jobs, verify, device sets, recovery key.

Routers only translate HTTP to the sync services (``omnicare.sync.pull``, ``.push``, ...). Devices, conflicts,
snapshots, jobs, verify, device sets and the recovery key return their rows (or the services' dicts) and ninja
serialises them through the ``response=`` schemas below (so /api/docs shows exactly what is sent;
``omnicare.api.CompactJSONRenderer`` keeps the bytes compact). Pull and push bodies are parsed and written with
``pyclient.protocol`` so server and browser agree byte for byte (a pull page is written straight from the
database's JSON); their schemas document those shapes, and the bodies themselves are validated by pyclient
(one set of rules).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from django.db import transaction
from django.http import HttpRequest, HttpResponse
from ninja import Field, Router, Schema
from pydantic import PlainSerializer, WithJsonSchema

from omnicare.access.auth import api_auth
from omnicare.access.device_ids import DeviceId
from omnicare.access.services import device_bind, device_check, device_id_ever_revoked
from omnicare.audit.services import checkpoint_json, latest_checkpoint
from omnicare.core.broker import enqueue
from omnicare.core.errors import BadRequest, Forbidden, ServiceUnavailable
from omnicare.core.errors import Conflict as ConflictError
from omnicare.core.jsonbody import json_body_loads
from omnicare.fhir.trail import audited
from pyclient.protocol import ProtocolError, PullRequest, PushResponse, dumps

from . import conflicts as conflict_svc
from . import device_sets
from . import devices as device_svc
from . import jobs as job_svc
from . import pull as pull_svc
from . import push as push_svc
from . import snapshots as snapshot_svc
from . import verify as verifying
from .epoch import current_epoch, with_epoch
from .recovery import recovery_key_info
from .tasks import build_snapshot

router = Router(tags=["sync"], auth=api_auth)

JSON = "application/json"


# --- schemas (the wire contract: PROTOCOL.md) ------------------------------------------------------------

#: A stored timestamp as PROTOCOL.md sends it: ``datetime.isoformat()`` (microseconds kept; ninja's default
#: encoder would cut them to milliseconds).
Instant = Annotated[datetime, PlainSerializer(datetime.isoformat, return_type=str),
                    WithJsonSchema({"type": "string", "format": "date-time"})]
#: A row's UUID primary key, sent as its canonical text.
RowId = Annotated[UUID, PlainSerializer(str, return_type=str), WithJsonSchema({"type": "string", "format": "uuid"})]


class ChangeOut(Schema):
    seq: int
    resourceType: str
    id: str
    versionId: int
    deleted: bool
    resource: dict[str, Any] | None


class DropOut(Schema):
    resourceType: str
    id: str


class PullOut(Schema):
    changes: list[ChangeOut]
    cursor: str = Field(
        description="Opaque; send it back unchanged. A cursor this server never issued is a 400."
    )
    hasMore: bool
    drop: list[DropOut] = Field(description="Records that left your scope: delete the local copies.")
    reset: bool = Field(False, description="True on a first sync (no cursor): the page starts a full fill.")
    epoch: str | None = Field(None, description="The server database's epoch (PROTOCOL.md \"Server epochs\").")


class PullIn(Schema):
    cursor: str | None = None
    limit: int = Field(200, ge=1, le=1000)


class MutationIn(Schema):
    mutationId: str = Field(description="Client-generated (UUID); replays return the first result")
    op: Literal["put", "delete"]
    resourceType: str
    id: str
    baseVersion: int | None = Field(description="Version the edit started from; null = create")
    resource: dict[str, Any] | None = None
    supersedes: str | None = Field(None, description="mutationId of an earlier conflicted edit this replaces")
    recover: bool = Field(False, description="Re-sent after a server restore: merged against the restored copy")


class PushIn(Schema):
    deviceId: DeviceId
    mutations: list[MutationIn] = Field(description=f"At most {push_svc.MAX_PUSH_MUTATIONS} (413 above)")
    epoch: str | None = Field(None, description="The epoch the device last saw: another one applies nothing.")


class MutationResultOut(Schema):
    mutationId: str
    status: Literal["applied", "merged", "conflict", "rejected"]
    versionId: int | None = None
    resource: dict[str, Any] | None = None
    conflictId: str | None = None
    conflicts: list[dict[str, Any]] | None = None
    outcome: dict[str, Any] | None = None


class PushOut(Schema):
    results: list[MutationResultOut]
    epoch: str | None = None


class JobOut(Schema):
    """A ``PushJob`` row. Served with ``exclude_unset``: each stored result keeps only the keys its
    ``MutationResult.to_json`` wrote (no null ``conflictId``/``outcome`` added)."""

    id: RowId
    status: str  # queued, running, done, failed
    progress: int = Field(0, description="Mutations applied and committed so far")
    total: int = 0
    result: PushOut | None = None
    error: str | None = None

    @staticmethod
    def resolve_error(job: Any) -> str | None:
        return job.error or None


class ConflictOut(Schema):
    """A stored ``Conflict`` row as PROTOCOL.md §5 shows it (user names, not ids)."""

    id: RowId
    resourceType: str = Field(validation_alias="resource_type")
    resourceId: str = Field(validation_alias="resource_id")
    status: str
    baseVersion: int | None = Field(validation_alias="base_version")
    oursVersion: int | None = Field(validation_alias="ours_version")
    base: dict[str, Any] | None
    ours: dict[str, Any] | None
    theirs: dict[str, Any] | None
    paths: list[str]
    conflicts: list[dict[str, Any]] = Field(validation_alias="details")
    author: str
    deviceId: str = Field(validation_alias="device_id")
    mutationId: str = Field(validation_alias="mutation_id")
    created: Instant
    resolution: str | None
    resolvedBy: str | None
    resolvedAt: Instant | None = Field(validation_alias="resolved_at")
    resolvedVersion: int | None = Field(validation_alias="resolved_version")

    @staticmethod
    def resolve_author(c: Any) -> str:
        return str(c.author.get_username())

    @staticmethod
    def resolve_resolution(c: Any) -> str | None:
        return c.resolution or None  # "" on an open conflict's row

    @staticmethod
    def resolve_resolvedBy(c: Any) -> str | None:  # noqa: N802 (ninja resolvers are named after the field)
        return c.resolved_by.get_username() if c.resolved_by else None


class ResolveIn(Schema):
    resolution: Literal["keep-mine", "keep-server", "edited"]
    resource: dict[str, Any] | None = Field(None, description="The hand-merged resource (resolution=edited)")
    baseVersion: int | None = Field(
        None, description="Server version you resolved against (default: the conflict's)"
    )


class ResolveOut(Schema):
    conflict: ConflictOut
    result: MutationResultOut


class DeviceIn(Schema):
    deviceId: DeviceId
    name: str = Field("", max_length=100)


class DeviceOut(Schema):
    """A registered ``Device`` row."""

    deviceId: str = Field(validation_alias="device_id")
    name: str
    created: Instant
    lastSeen: Instant | None = Field(validation_alias="last_seen")
    lastMutationId: str = Field(validation_alias="last_mutation_id")
    lastPullSeq: int = Field(validation_alias="last_pull_seq")


class SnapshotIn(Schema):
    deviceId: DeviceId


class SnapshotOut(Schema):
    """A ``Snapshot`` row (its data is downloaded separately)."""

    id: RowId
    status: str
    seq: int | None
    count: int
    size: int
    cursor: str | None = Field(description="Pull from here after loading the data (null until ready)")

    @staticmethod
    def resolve_cursor(s: Any) -> str | None:
        return s.cursor or None


def _json(data: Any, status: int = 200) -> HttpResponse:
    body = data if isinstance(data, bytes) else json.dumps(data, separators=(",", ":")).encode()
    return HttpResponse(body, status=status, content_type=JSON)


def _body(request: HttpRequest) -> Any:
    return json_body_loads(request.body, empty=None)


def _inline_defs(node: Any, defs: dict[str, Any]) -> Any:
    """Replace pydantic's local ``#/$defs/X`` references (which OpenAPI cannot resolve) by their bodies."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline_defs(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline_defs(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline_defs(v, defs) for v in node]
    return node


def _spec(schema: type[Schema]) -> dict[str, Any]:
    raw = schema.model_json_schema()
    body = _inline_defs(raw, raw.get("$defs", {}))
    return {"requestBody": {"required": True, "content": {JSON: {"schema": body}}}}


# --- pull ---------------------------------------------------------------------------------------------


@router.get("/pull", response={200: PullOut}, summary="Pull changes after a cursor")
def pull_get(
    request: HttpRequest, cursor: str | None = None, limit: int = 200, deviceId: str | None = None
) -> HttpResponse:
    """The changes you may see after ``cursor`` (omit it on first sync), tombstones included, at most
    ``limit`` (1..1000). Pages until ``hasMore`` is false. ``drop`` lists records that left your scope."""
    try:
        req = PullRequest(cursor=cursor or None, limit=limit)
    except ProtocolError as exc:
        raise BadRequest(str(exc), expression=["limit"]) from None
    return _pull(request, req, deviceId)


def _pull(request: HttpRequest, req: PullRequest, device_id: str | None) -> HttpResponse:
    """One pull page: device check, then the page and its ONE audit event (every patient on the page).

    The one hand-built answer left (with push, which pyclient's ``dumps`` writes): a page splices each stored
    body's JSON text in as it comes from the database (``pull.pull_json_page``) instead of parsing it and
    letting ninja validate and re-serialise ``PullOut``. Measured on one 1,000-change page of Observations
    (2026-12-01, this machine under load): 9.7 ms hand-built vs 167 ms through the schema, i.e. the schema
    path alone would cap a pull at ~6,000 changes/s where bench/results.json's ``pull_resources_per_s`` is
    28,999 end to end. ``PullOut`` still documents the page in /api/docs.

    No patient data without a registered, non-revoked device of the caller (issue 10, item 14), and the
    session or token is bound to that device."""
    if not device_id:
        raise BadRequest("deviceId is required: register the device (POST /api/sync/devices), then pull with "
                         "?deviceId=", expression=["deviceId"])
    device_check(user=request.user, device_id=device_id)
    if not device_svc.device_registered(user=request.user, device_id=device_id):
        raise Forbidden("This device is not registered: POST /api/sync/devices first")
    device_bind(request=request, device_id=device_id)
    with audited(user=request.user, action="sync-pull", device_id=device_id) as note:
        body, info = pull_svc.pull_json_page(
            user=request.user, cursor=req.cursor, limit=req.limit, device_id=device_id
        )
        note.patients.update(info.patients)
        note.detail.update({"changes": info.changes, "drops": info.drops, "reset": info.reset})
    return _json(with_epoch(_with_audit_checkpoint(body)))


def _with_audit_checkpoint(body: bytes) -> bytes:
    """Add ``auditCheckpoint`` (the newest signed audit checkpoint) to a pull page: every device is a witness."""
    cp = latest_checkpoint()
    if cp is None or not body.endswith(b"}"):
        return body
    return body[:-1] + b',"auditCheckpoint":' + json.dumps(checkpoint_json(cp), separators=(",", ":")).encode() + b"}"


@router.post(
    "/pull",
    response={200: PullOut},
    summary="Pull changes after a cursor (JSON body)",
    openapi_extra=_spec(PullIn),
)
def pull_post(request: HttpRequest, deviceId: str | None = None) -> HttpResponse:
    """Same as GET, with ``{"cursor", "limit"}`` in the body (keeps cursors out of URLs and logs)."""
    try:
        req = PullRequest.from_json(_body(request))
    except ProtocolError as exc:
        raise BadRequest(f"Malformed pull: {exc}"[:500], code="structure") from None
    return _pull(request, req, deviceId)


# --- push ---------------------------------------------------------------------------------------------


@router.post(
    "/push", response={200: PushOut}, summary="Push a batch of mutations", openapi_extra=_spec(PushIn)
)
def push(request: HttpRequest) -> HttpResponse:
    """One result per mutation, in order: ``applied`` / ``merged`` (new version), ``conflict`` (stored,
    with its id and both sides) or ``rejected`` (OperationOutcome). A malformed batch is a 400, more than
    100 mutations a 413 — nothing applied. Larger batches: ``POST /api/sync/push/jobs``."""
    req = push_svc.parse_push(_body(request))
    # One query answers both revocation rules for the common device nobody ever revoked; otherwise the caller's
    # own revocation is told as before (device_check) and the push refuses a burnt id (device_register's rule).
    revoked = device_id_ever_revoked(device_id=req.device_id)
    if revoked:
        device_check(user=request.user, device_id=req.device_id)
    device_bind(request=request, device_id=req.device_id)
    if req.epoch is not None and req.epoch != current_epoch():
        # The server went back in time since this device last synced: apply nothing; the device sees the new
        # epoch, re-pulls and re-sends as a recovery (PROTOCOL.md "Server epochs").
        return _json(with_epoch(b'{"results":[]}'))
    recovered = sum(m.recover for m in req.mutations)

    def run(optimistic: bool) -> PushResponse:  # one transaction per attempt: see push_svc.push_attempts
        with audited(user=request.user, action="sync-push", device_id=req.device_id) as note:
            response = push_svc.push(
                user=request.user, request=req, optimistic=optimistic, revocation_checked=not revoked
            )
            push_svc.push_audit(note=note, request=req, response=response)
            if recovered:
                note.detail.update({"recovery": "server-epoch", "recovered": recovered})
        return response

    return _json(with_epoch(dumps(push_svc.push_attempts(run))))


@router.post(
    "/push/jobs",
    response={202: JobOut},
    summary="Push a large batch as a background job",
    openapi_extra=_spec(PushIn),
    exclude_unset=True,
)
def push_job(request: HttpRequest, response: HttpResponse) -> Any:
    """Same body and per-mutation rules as ``push``, up to 5,000 mutations, applied by a Celery job:
    202 with the job id (``Location``); poll ``/api/sync/jobs/{id}`` for the results. Re-running a job or
    re-sending the batch changes nothing already applied (mutations are idempotent)."""
    req = push_svc.parse_push(_body(request), max_mutations=push_svc.MAX_JOB_MUTATIONS)
    device_check(user=request.user, device_id=req.device_id)
    device_bind(request=request, device_id=req.device_id)
    if req.epoch is not None and req.epoch != current_epoch():
        raise ConflictError("The server was restored since this device last synced: pull first, then re-send")
    with transaction.atomic():
        job = job_svc.push_job_create(user=request.user, request=req)
    if not job_svc.push_job_enqueue(job_id=str(job.id)):
        job.delete()  # nothing runs it: no row left behind (if this fails too, the sweeper sends it later)
        raise ServiceUnavailable("The job queue is unavailable; nothing was applied. Retry later.")
    job.refresh_from_db()
    response["Location"] = f"/api/sync/jobs/{job.id}"
    return job


@router.get("/jobs/{job_id}", response={200: JobOut}, summary="Status of a background push", exclude_unset=True)
def job_get(request: HttpRequest, job_id: str) -> Any:
    return job_svc.push_job_get(user=request.user, job_id=job_id)


# --- conflicts ----------------------------------------------------------------------------------------


@router.get("/conflicts", response={200: list[ConflictOut]},
            summary="Conflicts (yours, and those of patients in your scope)")
def conflicts(
    request: HttpRequest, status: str = "open", limit: int = 100, deviceId: str | None = None  # noqa: N803
) -> Any:
    """Stored conflicts: open by default (``status=resolved`` or ``all``). You see your own and, as a clinician,
    those of patients in your scope; administrators and auditors see none (the admin shows counts). Audited.
    ``deviceId`` narrows to the caller's own conflicts stored by pushes of that device: a device adopts those
    it lost (PROTOCOL.md §5, "Conflicts the device lost")."""
    if status not in ("open", "resolved", "all"):
        raise BadRequest("status must be open, resolved or all", expression=["status"])
    with audited(user=request.user, action="search", resource_type="Conflict") as note:
        rows = conflict_svc.conflicts_list(
            user=request.user, status=None if status == "all" else status, limit=limit, device_id=deviceId
        )
        for c in rows:
            note.touch(resource_type="Conflict", resource_id=str(c.id), patient_ids=c.patient_ids or [])
    return rows


@router.get("/conflicts/{conflict_id}", response={200: ConflictOut}, summary="One conflict")
def conflict(request: HttpRequest, conflict_id: str) -> Any:
    """One conflict with its three bodies, for its author or a clinician whose scope covers the patient. Audited."""
    with audited(user=request.user, action="read", resource_type="Conflict", resource_id=conflict_id[:64]) as note:
        c = conflict_svc.conflict_get(user=request.user, conflict_id=conflict_id)
        note.patients.update(c.patient_ids or [])
        note.resources.append(f"{c.resource_type}/{c.resource_id}")
    return c


@router.post("/conflicts/{conflict_id}/resolve", response={200: ResolveOut}, summary="Resolve a conflict",
             exclude_unset=True)  # the result is a MutationResult: it omits what it does not carry
def conflict_resolve(request: HttpRequest, conflict_id: str, payload: ResolveIn) -> Any:
    """``keep-mine`` writes the parked client edit, ``keep-server`` keeps the server version, ``edited`` writes
    ``resource``. 409 if the record changed since ``baseVersion``; records who resolved it and how."""
    with audited(user=request.user, action="conflict-resolve", resource_type="Conflict",
                 resource_id=conflict_id[:64], detail={"resolution": payload.resolution}) as note:
        c, result = conflict_svc.conflict_resolve(
            user=request.user,
            conflict_id=conflict_id,
            resolution=payload.resolution,
            resource=payload.resource,
            base_version=payload.baseVersion,
        )
        note.patients.update(c.patient_ids or [])
        note.resources.append(f"{c.resource_type}/{c.resource_id}")
        note.detail["status"] = result.status
    return {"conflict": c, "result": result.to_json()}


# --- devices ------------------------------------------------------------------------------------------


@router.post("/devices", response={200: DeviceOut}, summary="Register a device")
def device_register(request: HttpRequest, payload: DeviceIn) -> Any:
    """Idempotent: registering again updates the name and last-seen time. A revoked id never registers again."""
    device_check(user=request.user, device_id=payload.deviceId)
    device_bind(request=request, device_id=payload.deviceId)
    return device_svc.device_register(user=request.user, device_id=payload.deviceId, name=payload.name)


@router.get("/devices", response={200: list[DeviceOut]}, summary="Your devices")
def devices(request: HttpRequest) -> Any:
    return device_svc.devices_list(user=request.user)


# --- snapshots ----------------------------------------------------------------------------------------


@router.post("/snapshots", response={202: SnapshotOut}, summary="Prepare a first-sync snapshot")
def snapshot_create(request: HttpRequest, payload: SnapshotIn, response: HttpResponse) -> Any:
    """A background job writes your whole scope, gzip-compressed, at a known feed position. Poll
    ``/snapshots/{id}``; when ``ready``, download ``/snapshots/{id}/data`` and continue pulling from its
    ``cursor``."""
    device_check(user=request.user, device_id=payload.deviceId)
    device_bind(request=request, device_id=payload.deviceId)
    with audited(user=request.user, action="snapshot-create", resource_type="Snapshot",
                 device_id=payload.deviceId) as note:
        snap = snapshot_svc.snapshot_request(user=request.user, device_id=payload.deviceId)
        note.resource_id = str(snap.id)
    # Enqueued after the commit; broker down -> no orphaned row, a clear 503 (the sweeper also re-sends).
    if not enqueue(build_snapshot, str(snap.id)):
        snap.delete()
        raise ServiceUnavailable("The job queue is unavailable; no snapshot was started. Retry later.")
    snap.refresh_from_db()
    response["Location"] = f"/api/sync/snapshots/{snap.id}"
    return snap


@router.get("/snapshots/{snapshot_id}", response={200: SnapshotOut}, summary="Snapshot status")
def snapshot_status(request: HttpRequest, snapshot_id: str) -> Any:
    return snapshot_svc.snapshot_get(user=request.user, snapshot_id=snapshot_id)


@router.get("/snapshots/{snapshot_id}/data", summary="Download a ready snapshot (gzip JSON)")
def snapshot_data(request: HttpRequest, snapshot_id: str) -> HttpResponse:
    """``{"cursor", "seq", "changes": [...]}`` with ``Content-Encoding: gzip``."""
    snap = snapshot_svc.snapshot_get(user=request.user, snapshot_id=snapshot_id)
    if snap.status != snap.READY or snap.data is None:
        raise BadRequest("Snapshot not ready yet", code="incomplete")
    with audited(user=request.user, action="snapshot-download", resource_type="Snapshot",
                 resource_id=str(snap.id), device_id=snap.device_id) as note:
        patients = snapshot_svc.snapshot_patients_if_current(user=request.user, snap=snap)
        if patients is None:  # built for a scope the user no longer has (e.g. an expired emergency grant)
            raise Forbidden("This snapshot was built for access you no longer have: request a new snapshot")
        note.patients.update(patients)
        note.detail["changes"] = snap.count
    response = HttpResponse(bytes(snap.data), content_type=JSON)
    response["Content-Encoding"] = "gzip"
    response["Cache-Control"] = "private, no-store"
    return response


# --- anti-rollback (issue 17) ----------------------------------------------------------------------------


class VerifyIn(Schema):
    deviceId: DeviceId
    held: list[list[Any]] = Field(description="[[resourceType, id, versionId], ...], at most 1000; versionId 0 = "
                                              "'my copy failed verification, send yours'")


class VerifyOut(Schema):
    changes: list[ChangeOut] = Field(description="Current state of each held record the server has newer")
    gone: list[DropOut] = Field(description="Held records the caller may no longer see (or that never existed)")
    stale: int = Field(description="How many held versions were older than the server's (rolled back or not pulled)")


@router.post("/verify", response={200: VerifyOut}, summary="Versions a device holds -> what is newer",
             openapi_extra=_spec(VerifyIn))
def verify(request: HttpRequest) -> Any:
    """Anti-rollback: the device lists what it holds; the answer corrects every stale or unverifiable copy."""
    device_id, held = verifying.parse_verify(_body(request))  # its own 400s (the body is documented by VerifyIn)
    device_check(user=request.user, device_id=device_id)
    with audited(user=request.user, action="sync-verify", device_id=device_id) as note:
        result = verifying.verify_held(user=request.user, held=held)
        note.patients.update(result["patients"])
        note.detail.update({"held": len(held), "changes": len(result["changes"]), "stale": result["stale"],
                            "gone": len(result["gone"])})
    return {"changes": result["changes"], "gone": result["gone"], "stale": result["stale"]}  # not the audit's patients


# --- device sets (issue 13) ---------------------------------------------------------------------------


class DeviceSetIn(Schema):
    deviceId: DeviceId
    patients: list[str] = Field(default_factory=list, max_length=50_000)
    modelVersion: str = Field(default="", max_length=64)
    pinned: int | None = Field(default=None, ge=0)


class DeviceSetPatientOut(Schema):
    """A ``pyclient.device_set.Candidate`` as its ``to_json`` writes it."""

    id: str
    reasons: list[str] = Field(description="care-team, grant, ward:<name>, appointment-today, appointment-tomorrow "
                                           "(these pin); ward-recent:<name>, appointment-week")
    score: float = Field(description="The prefetch model's probability (0..1) that the chart is opened next shift")
    bytes: int = Field(description="JSON size of the patient's compartment")
    records: int = Field(description="Records in the patient's compartment")


class DeviceSetOfferOut(Schema):
    """A ``pyclient.device_set.DeviceSetOffer`` as its ``to_json`` writes it."""

    budgetBytes: int = Field(description="The device's storage budget")
    modelVersion: str = Field(description="<site>-v<n>, <site>-v<n>-heuristic or heuristic")
    patients: list[DeviceSetPatientOut] = Field(description="Every patient of your scope and no other, most likely "
                                                            "first")


class DeviceSetOut(Schema):
    patients: list[str] = Field(description="The set as stored: your choice cut to your scope, sorted")


@router.get("/device-set", response={200: DeviceSetOfferOut},
            summary="Your scope ranked for this device, with its storage budget")
def device_set_get(request: HttpRequest, deviceId: str | None = None) -> Any:
    """``pyclient.device_set.DeviceSetOffer``: every patient you may see (ids, why, size, the prefetch model's
    probability), most likely first, and the device's budget. Audited as one ``device-set-offer`` event."""
    if not deviceId:  # before binding: a session must never be bound to an empty device id
        raise BadRequest("deviceId is required", expression=["deviceId"])
    device_check(user=request.user, device_id=deviceId)
    if not device_svc.device_registered(user=request.user, device_id=deviceId):
        raise Forbidden("This device is not registered: POST /api/sync/devices first")
    device_bind(request=request, device_id=deviceId)
    with audited(user=request.user, action="device-set-offer", resource_type="Patient", device_id=deviceId) as note:
        offer = device_sets.device_set_offer(user=request.user, device_id=deviceId)
        note.patients.update(c.patient_id for c in offer.candidates)
        note.detail.update({"patients": len(offer.candidates), "modelVersion": offer.model_version})
    return offer.to_json()  # pyclient writes the offer's shape (and reads it: DeviceSetOffer.from_json)


@router.post("/device-set", response={200: DeviceSetOut}, summary="The patients this device holds (cut to your scope)")
def device_set_post(request: HttpRequest, payload: DeviceSetIn) -> Any:
    """Store the device's choice (``pyclient.device_set.plan_device_set``); the next pulls fill what was added
    and drop what left. Returns ``{"patients": [...]}`` as stored (never more than your scope)."""
    device_check(user=request.user, device_id=payload.deviceId)
    if not device_svc.device_registered(user=request.user, device_id=payload.deviceId):
        raise Forbidden("This device is not registered: POST /api/sync/devices first")
    device_bind(request=request, device_id=payload.deviceId)
    kept = device_sets.device_set_choose(user=request.user, device_id=payload.deviceId,
                                         patient_ids=payload.patients, model_version=payload.modelVersion,
                                         pinned=payload.pinned)
    return {"patients": kept}


# --- recovery files (issue 13 item 5; PROTOCOL.md "Recovery files") ----------------------------------------


class RecoveryKeyOut(Schema):
    alg: str
    keyId: str
    publicKey: str = Field(description="Uncompressed P-256 point, base64url")
    user: str
    token: str = Field(description="Put inside every sealed change; binds the file to this user and device")


@router.get("/recovery-key", response={200: RecoveryKeyOut}, summary="The server's recovery public key")
def recovery_key(request: HttpRequest, deviceId: str | None = None) -> Any:
    """What a device seals its unsynced changes to (a recovery file only this server can open), and the
    token that proves a file's changes came from a device this user signed in on."""
    if not deviceId:
        raise BadRequest("deviceId is required", expression=["deviceId"])
    device_check(user=request.user, device_id=deviceId)
    device_bind(request=request, device_id=deviceId)
    return recovery_key_info(user=request.user, device_id=deviceId)
