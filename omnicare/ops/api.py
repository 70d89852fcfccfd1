"""Device telemetry API (/api/ops/): a device reports its health (PROTOCOL.md §6). No patient data.

The body is validated twice, by the same limits: the ninja schema below (shape, types, ranges; unknown
fields refused) and ``pyclient.telemetry.TelemetryReport.from_json`` (the cross-field rules the device
itself applies before sending). Either failure is a 400 OperationOutcome naming the field, never a 500.
"""

from __future__ import annotations

from typing import Literal

from django.http import HttpRequest
from ninja import Field, Router, Schema
from pydantic import ConfigDict

from omnicare.access.auth import api_auth
from omnicare.access.device_ids import DeviceId
from omnicare.access.services import device_check
from omnicare.core.errors import BadRequest
from pyclient.protocol import DEVICE_ID_CHARS, ProtocolError
from pyclient.telemetry import MAX_BYTES, MAX_COUNT, MAX_KB_VERSIONS, MAX_SECONDS, NAME_CHARS, TelemetryReport

from . import services

router = Router(tags=["ops"], auth=api_auth)

# The protocol's rules (pyclient): pydantic's pattern is a Rust regex, where "$" is the very end.
ID = rf"^{DEVICE_ID_CHARS}$"
NAME = rf"^{NAME_CHARS}$"


class _Strict(Schema):
    model_config = ConfigDict(extra="forbid")


class OutboxIn(_Strict):
    pending: int = Field(ge=0, le=MAX_COUNT, description="changes waiting to be sent (incl. in flight)")
    conflicted: int = Field(ge=0, le=MAX_COUNT, description="changes parked for a person to resolve")
    rejected: int = Field(ge=0, le=MAX_COUNT, description="changes the server refused (kept until dismissed)")
    oldestPendingAge: float | None = Field(ge=0, le=MAX_SECONDS,
                                           description="seconds since the oldest unsynced change; null if none")


class StorageIn(_Strict):
    used: int | None = Field(None, ge=0, le=MAX_BYTES)
    quota: int | None = Field(None, ge=0, le=MAX_BYTES)
    persisted: bool | None = None
    records: int | None = Field(None, ge=0, le=MAX_COUNT)
    indexedDb: int | None = Field(None, ge=0, le=MAX_BYTES, description="bytes in IndexedDB, if the browser says")


class TelemetryIn(_Strict):
    deviceId: DeviceId
    reportId: str = Field(pattern=ID, description="client-generated; a re-sent report is stored once")
    reason: Literal["sync", "timer", "start"]
    appVersion: str = Field(pattern=NAME)
    outbox: OutboxIn
    lastSyncAge: float | None = Field(ge=0, le=MAX_SECONDS)
    storage: StorageIn = Field(default_factory=StorageIn)
    failedUnlocks: int = Field(0, ge=0, le=MAX_COUNT, description="wrong PINs since the last accepted report")
    intervalSeconds: float = Field(0.0, ge=0, le=MAX_SECONDS)
    offlineSeconds: float = Field(0.0, ge=0, le=MAX_SECONDS)
    offlineReadySeconds: float = Field(0.0, ge=0, le=MAX_SECONDS)
    kbVersions: dict[str, str] = Field(default_factory=dict, max_length=MAX_KB_VERSIONS)


class TelemetryOut(Schema):
    reportId: str
    stored: bool = Field(description="false when this reportId was already stored (a re-send)")
    received: str


@router.post("/telemetry", response={200: TelemetryOut}, summary="Report this device's health")
def telemetry(request: HttpRequest, payload: TelemetryIn) -> TelemetryOut:
    """Counts, sizes, ages and versions only — see PROTOCOL.md §6. 404 if the device is not registered to
    you, 403 with the wipe order if it was revoked."""
    try:
        report = TelemetryReport.from_json(payload.model_dump(mode="json"))
    except ProtocolError as exc:
        raise BadRequest(f"Invalid telemetry: {exc}"[:300], code="invalid") from None
    device_check(user=request.user, device_id=report.device_id)
    result = services.telemetry_ingest(user=request.user, report=report)
    return TelemetryOut(reportId=report.report_id, stored=result.created,
                        received=result.report.received.isoformat())
