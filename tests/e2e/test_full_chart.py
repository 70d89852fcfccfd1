"""The full chart (issue 18 item 5) in Chromium at 1024x768 and 768x1024: the allergy banner and age on every
patient screen ("no known allergies" told apart from "not yet assessed"), abnormal vitals flagged in words,
a blood-pressure trend with both lines at a readable size, a Synthea-shaped lab report with its results, notes
with author and time, vitals taken earlier, and a problem added and another resolved offline, then synced."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import date, timedelta
from typing import Any

import pytest

from .conftest import Server, shot
from .helpers import open_patient, poll, sign_in_and_sync, wait_status

LOINC = "http://loinc.org"
VS = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}]
LAB = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}]
TODAY = date.today()
VIEWPORTS = ({"width": 1024, "height": 768}, {"width": 768, "height": 1024})


def _day(n: int) -> str:
    return (TODAY - timedelta(days=n)).isoformat()


def _age(birth: date) -> str:
    return f"{TODAY.year - birth.year - ((TODAY.month, TODAY.day) < (birth.month, birth.day))} y"


def _care_team(pid: str) -> dict[str, Any]:
    return {"resourceType": "CareTeam", "id": f"ct-{pid}", "status": "active", "subject": {"reference": f"Patient/{pid}"},
            "participant": [{"member": {"reference": "Practitioner?identifier=urn:omnicare:user|dr.adams"}},
                            {"member": {"reference": "Practitioner?identifier=urn:omnicare:user|nurse.baker"}}]}


def _patient(pid: str, family: str, mrn: str, birth: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "name": [{"family": family, "given": ["Fay"]}], "gender": "female",
            "birthDate": birth, "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                                                    "code": "MR"}]}, "system": "urn:omnicare:mrn", "value": mrn}]}


def full_record(pid: str) -> list[dict[str, Any]]:
    subj = {"reference": f"Patient/{pid}"}

    def vital(n: str, loinc: str, value: float, unit: str, day: int) -> dict[str, Any]:
        return {"resourceType": "Observation", "id": f"{n}-{pid}", "status": "final", "category": VS, "subject": subj,
                "code": {"coding": [{"system": LOINC, "code": loinc}]}, "effectiveDateTime": f"{_day(day)}T08:00:00Z",
                "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}}

    def bp(n: str, s: int, d: int, day: int) -> dict[str, Any]:
        return {"resourceType": "Observation", "id": f"{n}-{pid}", "status": "final", "category": VS, "subject": subj,
                "code": {"coding": [{"system": LOINC, "code": "85354-9", "display": "Blood pressure panel"}]},
                "effectiveDateTime": f"{_day(day)}T08:00:00Z", "component": [
                    {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]}, "valueQuantity": {"value": s, "unit": "mm[Hg]"}},
                    {"code": {"coding": [{"system": LOINC, "code": "8462-4"}]}, "valueQuantity": {"value": d, "unit": "mm[Hg]"}}]}

    def lab(n: str, loinc: str, name: str, v: float, unit: str, rng: tuple[float, float] | None = None) -> dict[str, Any]:
        o: dict[str, Any] = {"resourceType": "Observation", "id": f"{n}-{pid}", "status": "final", "category": LAB,
                             "subject": subj, "code": {"coding": [{"system": LOINC, "code": loinc, "display": name}], "text": name},
                             "effectiveDateTime": f"{_day(3)}T10:04:06-05:00", "issued": f"{_day(3)}T10:04:06.427-05:00",
                             "valueQuantity": {"value": v, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}}
        if rng:
            o["referenceRange"] = [{"low": {"value": rng[0], "unit": unit}, "high": {"value": rng[1], "unit": unit}}]
        return o

    note = "Seen for fever and cough.\nPlan: fluids, review in 2 days."
    return [
        _patient(pid, "Fullchart", "MRN-FULL-001", "1961-04-12"), _care_team(pid),
        {"resourceType": "Practitioner", "id": f"pr-{pid}", "name": [{"family": "Rempel", "given": ["Malcolm"], "prefix": ["Dr."]}]},
        {"resourceType": "AllergyIntolerance", "id": f"al-{pid}", "patient": subj, "criticality": "high",
         "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}]},
         "code": {"coding": [{"system": "http://snomed.info/sct", "code": "764146007", "display": "Penicillin"}], "text": "Penicillin"},
         "reaction": [{"manifestation": [{"text": "Anaphylaxis"}]}]},
        vital("t", "8310-5", 38.4, "Cel", 0), vital("hr", "8867-4", 104, "/min", 0), vital("sp", "59408-5", 93, "%", 0),
        vital("rr", "9279-1", 16, "/min", 0), vital("hr2", "8867-4", 88, "/min", 20),
        bp("bp1", 152, 96, 60), bp("bp2", 141, 90, 30), bp("bp3", 128, 82, 0),
        lab("glu", "2339-0", "Glucose [Mass/volume] in Blood", 84.1, "mg/dL", (70, 99)),
        lab("k", "6298-4", "Potassium [Moles/volume] in Blood", 5.9, "mmol/L", (3.5, 5.1)),
        lab("na", "2947-0", "Sodium [Moles/volume] in Blood", 139.4, "mmol/L", (136, 145)),
        {"resourceType": "DiagnosticReport", "id": f"bmp-{pid}", "status": "final", "subject": subj,
         "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "LAB", "display": "Laboratory"}]}],
         "code": {"coding": [{"system": LOINC, "code": "51990-0", "display": "Basic metabolic panel - Blood"}],
                  "text": "Basic metabolic panel - Blood"},
         "effectiveDateTime": f"{_day(3)}T10:04:06-05:00", "issued": f"{_day(3)}T10:04:06.427-05:00",
         "performer": [{"reference": f"Practitioner/pr-{pid}", "display": "Dr. Malcolm Rempel"}],
         "result": [{"reference": f"Observation/glu-{pid}", "display": "Glucose"},
                    {"reference": f"Observation/k-{pid}", "display": "Potassium"},
                    {"reference": f"Observation/na-{pid}", "display": "Sodium"}]},
        {"resourceType": "Condition", "id": f"cond-{pid}", "subject": subj, "onsetDateTime": _day(5),
         "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
         "code": {"coding": [{"system": "http://snomed.info/sct", "code": "10509002", "display": "Acute bronchitis"}],
                  "text": "Acute bronchitis"}},
        {"resourceType": "DocumentReference", "id": f"doc-{pid}", "status": "current", "subject": subj,
         "date": f"{_day(1)}T09:45:00Z", "description": f"Progress note {_day(1)}",
         "author": [{"reference": f"Practitioner/pr-{pid}", "display": "Dr. Malcolm Rempel"}],
         "content": [{"attachment": {"contentType": "text/plain", "data": base64.b64encode(note.encode()).decode()}}]},
        *({"resourceType": "Immunization", "id": f"imm{k}-{pid}", "status": "completed", "patient": subj,
           "vaccineCode": {"text": f"Influenza, seasonal ({2026 - k})"}, "occurrenceDateTime": f"{2026 - k}-10-05"}
          for k in range(8)),
        {"resourceType": "Goal", "id": f"goal-{pid}", "lifecycleStatus": "active", "subject": subj,
         "description": {"text": "Blood pressure below 130/80"}, "startDate": _day(60)},
        {"resourceType": "Encounter", "id": f"enc-{pid}", "status": "finished", "subject": subj,
         "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
         "type": [{"text": "Encounter for symptom"}], "period": {"start": f"{_day(0)}T07:50:00Z"}},
    ]


@pytest.fixture(scope="module")
def imported(server: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    ids = {k: f"{k}-{uuid.uuid4().hex[:6]}" for k in ("full", "nka", "unasked")}
    rows = full_record(ids["full"])
    nka, un = ids["nka"], ids["unasked"]
    rows += [_patient(nka, "Nkason", "MRN-FULL-002", "1990-07-01"), _care_team(nka),
             {"resourceType": "AllergyIntolerance", "id": f"al-{nka}", "patient": {"reference": f"Patient/{nka}"},
              "clinicalStatus": {"coding": [{"code": "active"}]}, "verificationStatus": {"coding": [{"code": "confirmed"}]},
              "code": {"coding": [{"system": "http://snomed.info/sct", "code": "716186003", "display": "No known allergy"}],
                       "text": "No known allergy"}},
             _patient(un, "Unasked", "MRN-FULL-003", "2019-02-10"), _care_team(un)]
    path = tmp_path_factory.mktemp("full-chart") / "record.ndjson"
    path.write_text("".join(json.dumps(r) + "\n" for r in reversed(rows)))  # targets after referrers
    out = json.loads(server.manage("fhir_import", str(path)))
    assert out["status"] == "completed" and out["rejectedLines"] == 0, out
    return ids


def _banner(page: Any) -> dict[str, str]:
    page.wait_for_selector("#allergy-banner")
    assert page.locator("#allergy-banner").is_visible() and page.locator("#patient-age").is_visible()
    box = page.locator("#patient-banner").bounding_box()
    assert box is not None and box["y"] < 400, box  # at the top, not below the fold
    return {"state": page.get_attribute("#allergy-banner", "data-state") or "",
            "text": page.inner_text("#allergy-banner"), "age": page.inner_text("#patient-age")}


def _no_raw(page: Any) -> None:
    text = page.inner_text("main")
    for bad in ("null", "undefined", "{", "Traceback", "[object"):
        assert bad not in text, bad


def test_full_chart_banner_flags_trends_reports_and_problems_offline(new_context: Any, server: Server,
                                                                     imported: dict[str, str]) -> None:
    pid = imported["full"]
    ctx = new_context()
    page = sign_in_and_sync(ctx)
    open_patient(page, "MRN-FULL-001")
    page.wait_for_selector("#trend-bp")

    b = _banner(page)
    assert b["state"] == "allergies" and "Penicillin (high risk)" in b["text"] and b["age"] == _age(date(1961, 4, 12))

    # Abnormal vitals: flagged in words (and coloured rows), from pyclient's one range table.
    rows = {r["name"]: r for r in page.evaluate("""() => [...document.querySelectorAll('#vitals tbody tr')].map(tr => ({
        name: tr.querySelector('th').innerText, text: tr.innerText, cls: tr.className}))""")}
    assert "38.4 °C" in rows["Temperature"]["text"] and "high" in rows["Temperature"]["text"]
    assert "104 /min" in rows["Heart rate"]["text"] and "high" in rows["Heart rate"]["text"]
    assert "93 %" in rows["SpO2"]["text"] and "low" in rows["SpO2"]["text"]
    assert "abnormal" in rows["SpO2"]["cls"] and "abnormal" not in rows["Respiratory rate"]["cls"]
    assert "128/82 mmHg" in rows["Blood pressure"]["text"]

    # Blood-pressure trend: both lines, axes with units, text at least 12 px, drawn 1:1.
    trend = page.evaluate("""() => { const s = document.getElementById('trend-bp'); const r = s.getBoundingClientRect();
        return { lines: s.querySelectorAll('path.line').length, w: r.width,
                 texts: [...s.querySelectorAll('text')].map(t => [t.textContent, parseFloat(getComputedStyle(t).fontSize)]) }; }""")
    assert trend["lines"] == 2 and trend["w"] >= 340
    labels = [t for t, _ in trend["texts"]]
    assert "mmHg" in labels and "Systolic" in labels and "Diastolic" in labels and _day(60) in labels
    assert min(size for _, size in trend["texts"]) >= 12, trend["texts"]
    page.locator("#trend-bp").screenshot(path=str(shot(page, "50-bp-trend", full_page=False)))

    # The lab report with its results (grouped through DiagnosticReport.result), its ranges and flags.
    report = page.inner_text("#reports")
    assert "Basic metabolic panel - Blood" in report and "1 abnormal" in report
    assert "Potassium" in report and "5.9 mmol/L" in report and "3.5–5.1" in report and "high" in report
    assert "Glucose" in report and "84.1 mg/dL" in report and "Reported by Dr. Malcolm Rempel" in report

    # Notes: author and time once (the title's own date is not printed a second time).
    note = page.inner_text("#notes li")
    assert "Dr. Malcolm Rempel" in note and f"{_day(1)} 09:45" in note and note.count(_day(1)) == 1

    # Long lists collapse with a count: 8 immunizations, 5 shown, the rest behind one tap.
    assert "(8)" in page.inner_text("#immunizations-section h2")
    assert page.locator("#immunizations > li").count() == 5
    assert "Show 3 older" in page.inner_text("#immunizations-section summary")
    # Whatever else the record holds has a place too (here a Goal: no section of its own).
    assert "Blood pressure below 130/80" in page.inner_text("#other-goals-section")
    _no_raw(page)
    for size in VIEWPORTS:
        page.set_viewport_size(size)
        page.wait_for_timeout(200)
        shot(page, f"50-full-chart-{size['width']}x{size['height']}")
        shot(page, f"50-full-chart-top-{size['width']}x{size['height']}", full_page=False)
    page.set_viewport_size(VIEWPORTS[0])

    # Vitals taken earlier: the banner is on the form too; a future time is refused in words.
    page.click("text=Record vitals")
    page.wait_for_selector("#form-vitals")
    assert _banner(page)["state"] == "allergies"
    page.fill("#form-vitals input[name=hr]", "77")
    page.fill("#form-vitals input[name=taken_at]", f"{(TODAY + timedelta(days=1)).isoformat()}T09:00")
    page.click("#form-vitals button[type=submit]")
    page.wait_for_selector("#form-vitals [data-field=taken_at] .field-error:not(:empty)")
    assert "future" in page.inner_text("#form-vitals [data-field=taken_at] .field-error")
    shot(page, "51-vitals-taken-at-future")
    earlier = f"{_day(1)}T07:15"
    page.fill("#form-vitals input[name=taken_at]", earlier)
    page.click("#form-vitals button[type=submit]")
    page.wait_for_selector("#patient-name")

    # Offline: add a problem (coded from the pick list) and resolve another; both queue, then sync.
    ctx.set_offline(True)
    page.click("text=Add problem")
    page.wait_for_selector("#form-problem")
    assert _banner(page)["state"] == "allergies"
    page.fill("#form-problem input[name=text]", "Hypertension")
    page.fill("#form-problem input[name=onset]", _day(400))
    shot(page, "52-add-problem")
    page.click("#form-problem button[type=submit]")
    page.wait_for_selector("#problems li:has-text('Hypertension') .badge.pending")
    page.locator("#problems li:has-text('Acute bronchitis') >> text=Resolve").click()
    page.wait_for_selector("#form-problem-resolve")
    assert _banner(page)["state"] == "allergies"
    page.fill("#form-problem-resolve input[name=abatement]", _day(10))  # before onset: refused in words
    page.click("#form-problem-resolve button[type=submit]")
    page.wait_for_selector("#form-problem-resolve [data-field=abatement] .field-error:not(:empty)")
    assert "before it started" in page.inner_text("#form-problem-resolve [data-field=abatement] .field-error")
    page.fill("#form-problem-resolve input[name=abatement]", _day(1))
    page.click("#form-problem-resolve button[type=submit]")
    page.wait_for_selector("#past-problems li:has-text('Acute bronchitis')", state="attached")
    assert "Resolved and inactive (1)" in page.inner_text("#past-problems summary")
    wait_status(page, "d.pending === '3' && d.state === 'offline'")
    shot(page, "53-problems-offline", full_page=False)

    ctx.set_offline(False)
    wait_status(page, "d.pending === '0' && d.synced === 'true'", timeout=90_000)
    poll(page, "() => !document.querySelector('#problems .badge.pending')")
    conds = {e["resource"]["id"]: e["resource"] for e in server.fhir(f"Condition?patient={pid}").get("entry", [])}
    resolved = conds[f"cond-{pid}"]
    assert resolved["clinicalStatus"]["coding"][0]["code"] == "resolved" and resolved["abatementDateTime"] == _day(1)
    new = next(c for c in conds.values() if c["code"].get("text") == "Hypertension")
    assert new["code"]["coding"][0]["code"] == "38341003" and new["onsetDateTime"] == _day(400)
    assert new["clinicalStatus"]["coding"][0]["code"] == "active"
    obs = server.fhir(f"Observation?patient={pid}&code=8867-4")
    taken = [e["resource"]["effectiveDateTime"] for e in obs.get("entry", [])
             if e["resource"].get("valueQuantity", {}).get("value") == 77]
    assert len(taken) == 1 and taken[0][:10] == _day(1), taken
    page.wait_for_timeout(300)
    shot(page, "54-problems-synced")


def test_no_known_allergies_is_not_not_assessed_and_the_nurse_cannot_add_problems(
        new_context: Any, server: Server, imported: dict[str, str]) -> None:
    ctx = new_context()
    page = sign_in_and_sync(ctx, "nurse.baker")
    open_patient(page, "MRN-FULL-002")
    b = _banner(page)
    assert b["state"] == "nka" and "No known allergy" in b["text"] and b["age"] == _age(date(1990, 7, 1))
    assert "No known allergy (recorded)." in page.inner_text("main")
    assert page.locator("text=Add problem").count() == 0  # the role matrix: nurses read problems only
    assert page.locator("#problems-section >> text=Resolve").count() == 0
    shot(page, "55-nka-nurse", full_page=False)
    open_patient(page, "MRN-FULL-003")
    b = _banner(page)
    assert b["state"] == "unassessed" and "not yet assessed" in b["text"]
    page.click("text=Write note")
    page.wait_for_selector("#form-note")
    assert _banner(page)["state"] == "unassessed"
    for size in VIEWPORTS:
        page.set_viewport_size(size)
        page.wait_for_timeout(150)
        shot(page, f"56-unassessed-note-form-{size['width']}x{size['height']}", full_page=False)
    _no_raw(page)

    # Asked and none: the nurse records "no known allergies"; the banner changes and the server has it.
    page.click("#form-note >> text=Cancel")
    page.wait_for_selector("#record-nka")
    page.click("#record-nka")
    page.click("dialog.dialog button[value=ok]")
    poll(page, "() => document.getElementById('allergy-banner')?.dataset.state === 'nka'")
    assert page.locator("#record-nka").count() == 0
    wait_status(page, "d.pending === '0' && d.synced === 'true'", timeout=90_000)
    found = server.fhir(f"AllergyIntolerance?patient={imported['unasked']}").get("entry", [])
    assert [e["resource"]["code"]["coding"][0]["code"] for e in found] == ["716186003"]
    shot(page, "57-nka-recorded", full_page=False)
