"""Online-only services: device policy, and the pyclient views/validation run on the server (issue 13 item 4).

One rule, one place: the chart view model is ``pyclient.chart.chart_view``, the search words
``pyclient.chart.search_kind``/``normalize_query``, the vitals validation ``pyclient.forms.vitals`` — the same
functions the browser's Python runs; here they run over the server's current records, with the server's
authorization and audit.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from omnicare.access.device_policy import device_policy
from omnicare.access.services import access_check
from omnicare.core.errors import BadRequest, NotFound
from omnicare.fhir import services as fhir_svc
from omnicare.fhir.models import Resource
from omnicare.fhir.repository import FhirStore
from pyclient import chart as cv
from pyclient import forms
from pyclient import storage_mode as sm
from pyclient.blindindex import InvalidQuery
from pyclient.errors import ValidationFailed
from pyclient.views import chart_forms as cf
from pyclient.views import fullchart as fc
from pyclient.views.permissions import chart_actions, parse_permissions

__all__ = ["FieldErrors", "device_policy", "online_chart", "online_patients", "online_vitals_record",
           "storage_decision"]

SEARCH_PARAM = {"name": "name", "mrn": "identifier", "birthdate": "birthdate"}


class FieldErrors(BadRequest):
    """400 with one OperationOutcome issue per form field (the form shows each under its field)."""

    def __init__(self, message: str, fields: dict[str, str]) -> None:
        super().__init__(message, expression=sorted(fields))
        self.fields = fields

    def outcome(self) -> dict[str, Any]:
        issues = [{"severity": "error", "code": "invalid", "diagnostics": self.diagnostics}]
        issues += [{"severity": "error", "code": "invalid", "diagnostics": text, "expression": [name]}
                   for name, text in sorted(self.fields.items())]
        return {"resourceType": "OperationOutcome", "issue": issues}


def storage_decision(*, facts: dict[str, Any]) -> dict[str, Any]:
    """pyclient.storage_mode.decide for a browser that cannot run it (its Python runtime failed)."""
    try:
        return sm.decide(facts).to_json()
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def online_patients(*, user: Any, text: str, date_order: str = "mdy") -> dict[str, Any]:
    """Patients matching a name prefix, MRN or birth date (the browser's search words), from the server."""
    text = (text or "").strip()
    params: list[tuple[str, str]] = [("_count", "50")]
    kind = None
    if text:
        kind = cv.search_kind(text)
        try:
            query = cv.normalize_query(kind, text, "dmy" if date_order == "dmy" else "mdy")
        except InvalidQuery as exc:
            raise FieldErrors(str(exc), {"q": str(exc)}) from None
        params.append((SEARCH_PARAM.get(kind, "name"), query))
    bundle = fhir_svc.resource_search(user=user, resource_type="Patient", params=params, base_url="")
    found = [e["resource"] for e in bundle.get("entry", []) if e.get("resource", {}).get("resourceType") == "Patient"]
    out = sorted((dict(cv.patient_summary(p), pending=False) for p in found), key=cv.sort_key)
    return {"kind": kind, "results": out, "ms": 0.0, "ids": [str(p["id"]) for p in out]}


def online_chart(*, user: Any, patient_id: str, permissions: dict[str, list[str]]) -> dict[str, Any]:
    """The chart view model of one patient from the server's current records (reduced: vitals only)."""
    access_check(user=user, action="read", resource_type="Patient", patient_ids=[patient_id])
    rows = Resource.objects.filter(patients__patient_id=patient_id, deleted=False).distinct()
    resources = [r.body for r in rows]
    patient = next((r for r in resources if r.get("resourceType") == "Patient" and r.get("id") == patient_id), None)
    if patient is None:
        raise NotFound("This patient is not available.")
    def pending(_r: Any) -> bool:
        return False  # nothing waits on a device that keeps nothing

    conditions = [r for r in resources if r.get("resourceType") == "Condition"]
    # The same view model as BrowserApp.chart (+ browser_chart._full_chart), from the same pyclient functions.
    view = {**cv.chart_view(patient, resources, pending),
            **fc.full_chart(patient, resources, pending, today=datetime.now(UTC).date().isoformat()),
            "problemList": cf.problem_rows(conditions, pending),
            "commonProblems": [name for _c, name in cf.COMMON_PROBLEMS]}
    allowed = chart_actions(parse_permissions(permissions))
    # Reduced screens: reading and recording vitals; other writes wait for the offline engine.
    view["actions"] = {k: (v if k == "recordVitals" else False) for k, v in allowed.items()}
    return {**view, "integrity": None, "rejected": [], "conflictIds": []}


def online_vitals_record(*, user: Any, patient_id: str, values: dict[str, Any], author: str) -> list[str]:
    """pyclient.forms.vitals (the same validation as the device), then one store write of all its records."""
    access_check(user=user, action="read", resource_type="Patient", patient_ids=[patient_id])
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        try:
            offset = int(values.get("tz_offset") or 0)
        except (TypeError, ValueError):
            offset = 0
        taken = cf.vitals_effective(values.get("taken_at"), now=now, tz_offset_min=offset)  # as browser_chart
        created = forms.vitals(patient_id, values, now=taken, author={"display": author}, recorded=now)
    except ValidationFailed as exc:
        raise FieldErrors(exc.message, dict(exc.fields)) from None
    # One store write for the form's records (one feed bump; the request's audit event covers them all).
    writes = [fhir_svc.Write.valid(str(res.get("resourceType") or ""), fhir_svc.new_id(), res, expected_version=0)
              for res in created]
    fresh = frozenset((w.resource_type, w.resource_id) for w in writes)
    return [r.resource_id for r in FhirStore(user=user).apply(writes, fresh=fresh, join_care_team=True)]
