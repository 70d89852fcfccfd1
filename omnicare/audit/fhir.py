"""Audit events as FHIR R4 AuditEvent resources (what auditors read)."""

from __future__ import annotations

from typing import Any

from .models import AuditEvent
from .services import ts

DCM = "http://dicom.nema.org/resources/ontology/DCM"
REST_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
ACTION_CODES = {"read": "R", "vread": "R", "history": "R", "search": "E", "create": "C", "update": "U",
                "delete": "D", "transaction": "E", "batch": "E", "sync-pull": "R", "sync-push": "U",
                "conflict-resolve": "U"}
# FHIR AuditEvent.outcome: 0 success, 4 minor failure (denied), 8 serious failure.
OUTCOME_CODES = {"success": "0", "denied": "4", "failure": "8"}
SECURITY_SUBTYPES = {
    "break-glass-start": (DCM, "110127", "Emergency Override Started"),
    "break-glass-stop": (DCM, "110138", "Emergency Override Stopped"),
    "login": (DCM, "110122", "Login"),
    "device-revoke": (DCM, "110137", "User Security Attributes Changed"),
    "device-gap": (DCM, "110113", "Security Alert"),
}


def to_fhir(ev: AuditEvent) -> dict[str, Any]:
    """One stored event as an R4 AuditEvent (id = chain seq; the chain hash travels in an extension-free meta tag)."""
    if ev.category == AuditEvent.CATEGORY_SECURITY:
        event_type = {"system": DCM, "code": "110113", "display": "Security Alert"}
        sub = SECURITY_SUBTYPES.get(ev.action)
        subtype = [{"system": sub[0], "code": sub[1], "display": sub[2]}] if sub else []
    else:
        event_type = {"system": DCM, "code": "110110", "display": "Patient Record"}
        subtype = [{"system": "http://hl7.org/fhir/restful-interaction", "code": ev.action}]
    agent: dict[str, Any] = {
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
        "who": {"identifier": {"system": "urn:omnicare:user", "value": ev.username or "anonymous"}},
        "requestor": True,
        "role": [{"coding": [{"system": "urn:omnicare:role", "code": r}]} for r in ev.roles],
        "purposeOfUse": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                                       "code": ev.purpose}]}],
    }
    if ev.username:
        agent["name"] = ev.username
    entity: list[dict[str, Any]] = [
        {"what": {"reference": f"Patient/{p}"},
         "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1"},
         "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1"}}
        for p in ev.patient_ids
    ]
    if ev.resource_type and ev.resource_id and not (ev.resource_type == "Patient" and ev.resource_id in ev.patient_ids):
        entity.append({"what": {"reference": f"{ev.resource_type}/{ev.resource_id}"},
                       "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2"}})
    elif ev.resource_type and not ev.resource_id:
        entity.append({"name": ev.resource_type,
                       "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2"}})
    details = [{"type": str(k), "valueString": str(v)} for k, v in sorted(ev.detail.items())]
    if details:
        entity.append({"name": "detail", "detail": details})
    source: dict[str, Any] = {"observer": {"display": "omnicare-server"},
                              "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                                        "code": "4"}]}
    if ev.device_id:
        source = {"observer": {"identifier": {"system": "urn:omnicare:device", "value": ev.device_id}},
                  "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "1"}]}
    out: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(ev.seq),
        "meta": {"tag": [{"system": "urn:omnicare:audit-chain", "code": ev.hash}]},
        "type": event_type,
        "recorded": ts(ev.received_at),
        "outcome": OUTCOME_CODES.get(ev.outcome, "8"),
        "purposeOfEvent": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                                         "code": ev.purpose}]}],
        "agent": [agent],
        "source": source,
    }
    if subtype:
        out["subtype"] = subtype
    if ev.action in ACTION_CODES:
        out["action"] = ACTION_CODES[ev.action]
    if ev.device_time is not None:
        out["period"] = {"start": ts(ev.device_time), "end": ts(ev.device_time)}
    if ev.outcome != "success":
        out["outcomeDesc"] = ev.outcome
    if entity:
        out["entity"] = entity
    return out
