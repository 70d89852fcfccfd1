"""Break-the-glass and lost-device revocation (/api/access/...)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.http import HttpRequest
from ninja import Field, Router, Schema, Status

from omnicare.access.device_ids import DeviceId, OptionalDeviceId
from omnicare.audit.services import audit_record
from omnicare.core.errors import NotFound

from . import services
from .auth import api_auth
from .lookup import break_glass_lookup as lookup_service
from .models import EmergencyAccessGrant

router = Router(tags=["access"], auth=api_auth)


class BreakGlassIn(Schema):
    patientId: str = Field(min_length=1, max_length=128)
    reason: str = Field(min_length=1, max_length=2000, description="Why emergency access is needed (10+ chars)")
    deviceId: OptionalDeviceId = ""


class GrantOut(Schema):
    id: int
    patientId: str
    started: datetime
    expires: datetime
    ended: datetime | None
    auditSeq: int | None = Field(description="seq of the 'emergency override started' audit event")


def _grant(g: EmergencyAccessGrant) -> dict[str, Any]:
    return {"id": g.pk, "patientId": g.patient_id, "started": g.started, "expires": g.expires, "ended": g.ended,
            "auditSeq": g.start_event_seq}


@router.post("/break-glass", response={201: GrantOut})
def break_glass(request: HttpRequest, body: BreakGlassIn) -> Status:
    """Emergency access to a patient outside your care team, for 4 hours. Refused (503) if it cannot be audited."""
    grant = services.break_glass_request(user=request.user, patient_id=body.patientId, reason=body.reason,
                                         device_id=body.deviceId)
    return Status(201, _grant(grant))


@router.get("/break-glass", response=list[GrantOut])
def break_glass_list(request: HttpRequest) -> list[dict[str, Any]]:
    """Your emergency grants that are still active."""
    active = services.patient_ids_granted(user=request.user)
    rows = EmergencyAccessGrant.objects.filter(user=request.user, patient_id__in=active, ended__isnull=True)
    return [_grant(g) for g in rows]


@router.post("/break-glass/{grant_id}/end", response=GrantOut)
def break_glass_end(request: HttpRequest, grant_id: int) -> dict[str, Any]:
    """End your emergency grant now (recorded as 'emergency override stopped')."""
    if not 0 < grant_id < 2**62:
        raise NotFound("No such emergency access grant")
    return _grant(services.break_glass_end(user=request.user, grant_id=grant_id))


class LookupIn(Schema):
    family: str = Field("", max_length=100, description="Whole family name (with birthDate)")
    birthDate: str = Field("", max_length=32, description="Full birth date YYYY-MM-DD (with family)")  # noqa: N815
    mrn: str = Field("", max_length=64, description="Or: the whole medical record number")
    deviceId: OptionalDeviceId = ""  # noqa: N815


class LookupOut(Schema):
    matches: int = Field(description="Patients OUTSIDE your care team that match (nothing else about them)")
    inCareTeam: int = Field(0, description="Matches already on your care team")  # noqa: N815
    patientId: str | None = Field(None, description="Opaque id to request access for, only when matches == 1")  # noqa: N815


@router.post("/break-glass/lookup", response=LookupOut, exclude_none=True)
def break_glass_lookup(request: HttpRequest, body: LookupIn) -> dict[str, Any]:
    """Issue 18 item 7: does one patient outside your care team match? Roles with break-the-glass only;
    audited; rate-limited (429). The answer names nobody: a count, and an id when exactly one matches."""
    return lookup_service(user=request.user, family=body.family, birth_date=body.birthDate, mrn=body.mrn,
                  device_id=body.deviceId)


class RevokeIn(Schema):
    username: str = Field(min_length=1, max_length=150)
    deviceId: DeviceId
    reason: str = Field("reported lost", max_length=200)


class RevokeOut(Schema):
    username: str
    deviceId: str
    revoked: datetime


@router.post("/devices/revoke", response=RevokeOut)
def device_revoke(request: HttpRequest, body: RevokeIn) -> dict[str, Any]:
    """Administrators (or the owner): revoke a lost device. It can no longer sync and is told to wipe."""
    owner = get_user_model().objects.filter(username=body.username).first()
    if owner is None:
        raise NotFound("No such user")
    row = services.device_revoke(owner=owner, device_id=body.deviceId, by=request.user, reason=body.reason)
    return {"username": owner.get_username(), "deviceId": row.device_id, "revoked": row.revoked}


class PinFailuresIn(Schema):
    deviceId: DeviceId
    failures: int = Field(ge=1, le=1000, description="Wrong offline PINs entered since the last report")


@router.post("/pin-failures", response={204: None})
def pin_failures(request: HttpRequest, body: PinFailuresIn) -> Status:
    """A device reports wrong offline PINs (after the next correct one): recorded as a security event."""
    services.device_check(user=request.user, device_id=body.deviceId)
    audit_record(user=request.user, action="device-pin-failures", category="security", outcome="failure",
                 purpose="HOPERAT", device_id=body.deviceId, detail={"failures": body.failures})
    return Status(204, None)
