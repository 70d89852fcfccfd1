"""The whole record on the tablet (issue 15): a patient imported with ``manage.py fhir_import`` (conditional
reference to the clinician, as interface engines send) syncs to the clinician's device, and the chart shows
immunizations, procedures, lab reports grouped with their results, appointments and visits — offline too."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from .conftest import Server, shot
from .helpers import open_patient, sign_in_and_sync, unlock

LOINC = "http://loinc.org"


def record(pid: str) -> list[dict[str, Any]]:
    subj = {"reference": f"Patient/{pid}"}
    lab = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}]

    def result(rid: str, code: str, name: str, value: float, unit: str, flag: str = "N") -> dict[str, Any]:
        return {"resourceType": "Observation", "id": rid, "status": "final", "category": lab,
                "code": {"coding": [{"system": LOINC, "code": code, "display": name}]}, "subject": subj,
                "effectiveDateTime": "2026-11-02T08:30:00Z", "valueQuantity": {"value": value, "unit": unit},
                "interpretation": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                                                "code": flag}]}]}

    return [
        {"resourceType": "Patient", "id": pid, "name": [{"family": "Recordson", "given": ["Rita"]}],
         "gender": "female", "birthDate": "1961-04-12",
         "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
                         "system": "urn:omnicare:mrn", "value": "MRN-REC-001"}]},
        {"resourceType": "CareTeam", "id": f"ct-{pid}", "status": "active", "subject": subj,
         "participant": [{"member": {"reference": "Practitioner?identifier=urn:omnicare:user|dr.adams"}}]},
        {"resourceType": "Immunization", "id": f"imm1-{pid}", "status": "completed", "patient": subj,
         "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140"}],
                         "text": "Influenza, seasonal"}, "occurrenceDateTime": "2026-10-05"},
        {"resourceType": "Immunization", "id": f"imm2-{pid}", "status": "completed", "patient": subj,
         "vaccineCode": {"text": "COVID-19 mRNA booster"}, "occurrenceDateTime": "2025-09-20"},
        {"resourceType": "Procedure", "id": f"proc-{pid}", "status": "completed", "subject": subj,
         "code": {"text": "Colonoscopy"}, "performedPeriod": {"start": "2026-06-14T09:00:00Z"}},
        result(f"hb-{pid}", "718-7", "Hemoglobin", 10.9, "g/dL", "L"),
        result(f"wbc-{pid}", "6690-2", "Leukocytes", 6.1, "10*3/uL"),
        {"resourceType": "DiagnosticReport", "id": f"cbc-{pid}", "status": "final", "subject": subj,
         "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "HM"}]}],
         "code": {"text": "Complete blood count"}, "effectiveDateTime": "2026-11-02T08:30:00Z",
         "conclusion": "Mild anaemia.", "result": [{"reference": f"Observation/hb-{pid}"},
                                                   {"reference": f"Observation/wbc-{pid}"}]},
        {"resourceType": "Appointment", "id": f"appt-{pid}", "status": "booked", "description": "Anaemia follow-up",
         "start": "2026-12-15T10:00:00Z", "end": "2026-12-15T10:20:00Z",
         "participant": [{"actor": subj, "status": "accepted"}]},
        {"resourceType": "Encounter", "id": f"enc-{pid}", "status": "finished", "subject": subj,
         "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
         "type": [{"text": "General check-up"}], "period": {"start": "2026-11-02T08:00:00Z"}},
    ]


def test_imported_record_syncs_and_the_chart_shows_it(new_context: Any, server: Server, tmp_path: Path) -> None:
    pid = f"rec-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "record.ndjson"
    path.write_text("".join(json.dumps(r) + "\n" for r in reversed(record(pid))))  # targets after referrers
    out = json.loads(server.manage("fhir_import", str(path)))
    assert out["status"] == "completed" and out["rejectedLines"] == 0
    ctx = new_context()
    page = sign_in_and_sync(ctx)
    open_patient(page, "MRN-REC-001")
    page.wait_for_selector("#immunizations li")
    imm = page.inner_text("#immunizations")
    assert "Influenza, seasonal" in imm and "COVID-19 mRNA booster" in imm and "2026-10-05" in imm
    assert "Colonoscopy" in page.inner_text("#procedures")
    report = page.inner_text("#reports")
    assert "Complete blood count" in report and "Hemoglobin" in report and "10.9 g/dL" in report
    assert "low" in report and "Leukocytes" in report and "Mild anaemia." in report
    assert "Anaemia follow-up" in page.inner_text("#appointments") and "booked" in page.inner_text("#appointments")
    assert "General check-up" in page.inner_text("#encounters")
    box = page.locator("#reports summary").first.bounding_box()  # the one control in these sections
    assert box is not None and box["height"] >= 44, box
    assert "{" not in page.inner_text("main")  # no JSON on screen
    page.set_viewport_size({"width": 1024, "height": 768})
    shot(page, "40-record-chart-1024x768")
    page.set_viewport_size({"width": 768, "height": 1024})
    shot(page, "41-record-chart-768x1024")
    # The same chart offline: it was synced to the device, not fetched for the screen.
    page.goto("/#/patients")
    page.wait_for_selector("#patients li")
    ctx.set_offline(True)
    page.reload()
    unlock(page)
    page.wait_for_selector("#patients li")
    open_patient(page, "MRN-REC-001")
    page.wait_for_selector("#reports summary")
    assert "Hemoglobin" in page.inner_text("#reports")
    ctx.set_offline(False)
