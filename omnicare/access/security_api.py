"""Break-the-glass and lost-device revocation (/api/access/...)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.http import HttpRequest
from ninja import Field, Router, Schema, Status

from omnicare.access.device_ids import DeviceId, OptionalDeviceId
from omnicare.core.errors import NotFound

from . import services
from .auth import api_auth
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
    from omnicare.audit.services import audit_record

    services.device_check(user=request.user, device_id=body.deviceId)
    audit_record(user=request.user, action="device-pin-failures", category="security", outcome="failure",
                 purpose="HOPERAT", device_id=body.deviceId, detail={"failures": body.failures})
    return Status(204, None)
