"""Online only (issue 13 item 4): /api/device/storage-mode and the reduced screens at /api/online/.

``storage-mode`` answers with pyclient.storage_mode for a browser whose Python runtime could not start (it
cannot ask its own); the /api/online/ calls give that browser the same view models and validation as the
device's Python, computed here over the server's records. Reads and writes are audited like FHIR REST ones.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Field, Router, Schema

from omnicare.access.auth import api_auth
from omnicare.access.roles import permissions_for, user_roles
from omnicare.fhir.trail import audited

from . import services

router = Router(tags=["online-only"])


class FactsIn(Schema):
    idb: bool | None = None
    persisted: bool | None = None
    quota: bool | None = None
    runtime: bool | None = None
    policy: dict[str, bool] = Field(default_factory=dict)


class VitalsIn(Schema):
    values: dict[str, str] = Field(default_factory=dict)


@router.post("/device/storage-mode", auth=None)
def storage_mode(request: HttpRequest, payload: FactsIn) -> dict[str, Any]:
    """Which mode these facts give (pyclient.storage_mode): no patient data, so no sign-in needed."""
    return services.storage_decision(facts=payload.dict(exclude_none=True))


@router.get("/online/patients", auth=api_auth)
def online_patients(request: HttpRequest, q: str = "", date_order: str = "mdy") -> dict[str, Any]:
    with audited(user=request.auth, action="search", resource_type="Patient",
                 detail={"view": "online-only"}) as note:
        out = services.online_patients(user=request.auth, text=q[:200], date_order=date_order)
        note.patients.update(out.pop("ids"))
    return out


@router.get("/online/chart/{patient_id}", auth=api_auth)
def online_chart(request: HttpRequest, patient_id: str) -> dict[str, Any]:
    with audited(user=request.auth, action="read", resource_type="Patient", resource_id=patient_id,
                 patient_ids=[patient_id], detail={"view": "online-only chart"}):
        return services.online_chart(user=request.auth, patient_id=patient_id,
                                     permissions=permissions_for(user_roles(request.auth)))


@router.post("/online/vitals/{patient_id}", auth=api_auth)
def online_vitals(request: HttpRequest, patient_id: str, payload: VitalsIn) -> dict[str, Any]:
    user = request.auth
    with audited(user=user, action="create", resource_type="Observation", patient_ids=[patient_id],
                 detail={"view": "online-only vitals"}):
        ids = services.online_vitals_record(user=user, patient_id=patient_id, values=payload.values,
                                            author=user.get_full_name() or user.get_username())
    return {"ids": ids}
