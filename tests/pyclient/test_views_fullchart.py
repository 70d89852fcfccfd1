"""The full chart (issue 18 item 5): flags, age, allergy banner, lab reports with their results, trends, notes'
authors, problem add/resolve and the vitals' time — all decided in pyclient, drawn by the JS."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyclient.errors import ValidationFailed
from pyclient.views import caldate
from pyclient.views import chart_forms as cf
from pyclient.views import fullchart as fc
from pyclient.views import permissions as cp

LOINC = "http://loinc.org"
VS = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}]


def never(_r: Mapping[str, Any]) -> bool:
    return False


def vital(rid: str, loinc: str, value: float, unit: str, at: str = "2026-11-30T08:00:00Z", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": rid, "status": "final", "category": VS,
            "code": {"coding": [{"system": LOINC, "code": loinc}]}, "effectiveDateTime": at,
            "valueQuantity": {"value": value, "unit": unit}, **extra}


def bp(rid: str, sbp: float, dbp: float, at: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": rid, "status": "final", "category": VS, "effectiveDateTime": at,
            "code": {"coding": [{"system": LOINC, "code": "85354-9"}]},
            "component": [{"code": {"coding": [{"code": "8480-6"}]}, "valueQuantity": {"value": sbp, "unit": "mm[Hg]"}},
                          {"code": {"coding": [{"code": "8462-4"}]}, "valueQuantity": {"value": dbp, "unit": "mm[Hg]"}}]}


# -- abnormal-vital flags -----------------------------------------------------------------------------------------


def test_the_three_unflagged_values_of_the_issue_are_flagged_in_words() -> None:
    rows = {r["name"]: r for r in fc.vitals_rows([
        vital("t", "8310-5", 38.4, "Cel"), vital("hr", "8867-4", 104, "/min"),
        vital("s", "59408-5", 93, "%"), vital("rr", "9279-1", 16, "/min")], never)}
    assert (rows["Temperature"]["value"], rows["Temperature"]["words"]) == ("38.4 °C", "high")
    assert rows["Heart rate"]["words"] == "high" and rows["Heart rate"]["abnormal"]
    assert rows["SpO2"]["words"] == "low" and not rows["SpO2"]["critical"]
    assert rows["Respiratory rate"]["flag"] == "N" and rows["Respiratory rate"]["words"] == ""
    crit = fc.vitals_rows([vital("s", "59408-5", 86, "%")], never)[0]
    assert crit["critical"] and crit["words"] == "critical low"


def test_blood_pressure_flags_each_part_and_the_latest_wins() -> None:
    rows = fc.vitals_rows([bp("old", 120, 80, "2026-11-01T08:00:00Z"), bp("new", 162, 95, "2026-11-30T08:00:00Z")],
                          never)
    assert rows[0]["id"] == "new" and rows[0]["value"] == "162/95 mmHg"
    assert rows[0]["words"] == "systolic high · diastolic high" and rows[0]["abnormal"]


def test_the_observations_own_interpretation_and_range_come_first() -> None:
    own = vital("t", "8310-5", 38.4, "Cel", interpretation=[{"coding": [{"code": "N"}]}])
    assert not fc.vital_flag(own, "8310-5")["abnormal"]  # the lab/device said normal: trusted
    ranged = vital("h", "8867-4", 95, "/min", referenceRange=[{"low": {"value": 60}, "high": {"value": 90}}])
    assert fc.vital_flag(ranged, "8867-4")["words"] == "high"
    # A child: the adult table does not apply (a 4-year-old's heart rate of 104 is normal).
    assert fc.vital_flag(vital("hr", "8867-4", 104, "/min"), "8867-4", adult=False)["flag"] == ""


def test_reference_ranges_live_in_one_place() -> None:
    r = fc.VITAL_RANGES["8310-5"]
    assert r.high is not None and r.high < 38.4 and fc.VITAL_RANGES["8867-4"].high == 100
    assert fc.VITAL_RANGES["59408-5"].low == 95


# -- age and allergy banner ---------------------------------------------------------------------------------------


def test_age_in_years_months_or_days() -> None:
    assert fc.age_text("1961-04-12", "2026-12-01") == "65 y"
    assert fc.age_text("1961-12-02", "2026-12-01") == "64 y"  # birthday tomorrow
    assert fc.age_text("2026-03-15", "2026-12-01") == "8 mo"
    assert fc.age_text("2026-11-19", "2026-12-01") == "12 d"
    assert fc.age_text("", "2026-12-01") == "" and fc.age_text("2030-01-01", "2026-12-01") == ""
    assert fc.age_text("1940-01-01", "2026-12-01", "2020-06-01") == "80 y (deceased)"


def allergy(rid: str, text: str, sct: str = "", **extra: Any) -> dict[str, Any]:
    cc: dict[str, Any] = {"text": text}
    if sct:
        cc["coding"] = [{"system": "http://snomed.info/sct", "code": sct}]
    return {"resourceType": "AllergyIntolerance", "id": rid, "code": cc, **extra}


def test_allergy_banner_tells_no_known_allergies_from_not_assessed() -> None:
    assert fc.allergy_banner([])["state"] == "unassessed"
    assert "not yet assessed" in fc.allergy_banner([])["text"]
    nka = fc.allergy_banner([allergy("n", "No known allergy", "716186003")])
    assert nka["state"] == "nka" and nka["text"] == "No known allergy" and nka["assertionIds"] == ["n"]
    listed = fc.allergy_banner([{"resourceType": "List", "code": {"coding": [{"code": "48765-2"}]},
                                 "emptyReason": {"coding": [{"code": "nilknown"}]}}])
    assert listed["state"] == "nka"
    not_asked = fc.allergy_banner([{"resourceType": "List", "code": {"coding": [{"code": "48765-2"}]},
                                    "emptyReason": {"coding": [{"code": "notasked"}]}}])
    assert not_asked["state"] == "unassessed"
    both = fc.allergy_banner([allergy("n", "No known allergy", "716186003"),
                              allergy("p", "Penicillin", criticality="high"), allergy("l", "Latex"),
                              allergy("x", "Aspirin", verificationStatus={"coding": [{"code": "entered-in-error"}]}),
                              allergy("r", "Codeine", clinicalStatus={"coding": [{"code": "resolved"}]})])
    assert both["state"] == "allergies"
    assert both["text"] == "Allergies (2): Penicillin (high risk), Latex"


# -- lab reports grouped with their results (Synthea's shape) ---------------------------------------------------


def synthea_panel() -> list[dict[str, Any]]:
    """A Basic metabolic panel as Synthea's bulk export writes it (the shared sample leaves DiagnosticReport
    and Observation out for size, so the shape is reproduced here: LAB category, results by reference with
    display, no interpretation, -05:00 offsets), plus Synthea's per-visit note report (no results)."""
    subj = {"reference": "Patient/8c95253e-8ee8-9ae8-6d40-021d702dc78e"}
    lab = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory",
                        "display": "Laboratory"}]}]

    def obs(rid: str, loinc: str, name: str, v: float, unit: str) -> dict[str, Any]:
        return {"resourceType": "Observation", "id": rid, "status": "final", "category": lab,
                "code": {"coding": [{"system": LOINC, "code": loinc, "display": name}], "text": name},
                "subject": subj, "effectiveDateTime": "2019-02-27T10:04:06-05:00",
                "issued": "2019-02-27T10:04:06.427-05:00", "valueQuantity": {
                    "value": v, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}}

    return [
        obs("a1", "2339-0", "Glucose [Mass/volume] in Blood", 84.1, "mg/dL"),
        obs("a2", "6299-2", "Urea nitrogen [Mass/volume] in Blood", 13.6, "mg/dL"),
        obs("a3", "2947-0", "Sodium [Moles/volume] in Blood", 139.4, "mmol/L"),
        {**obs("a4", "6298-4", "Potassium [Moles/volume] in Blood", 5.9, "mmol/L"),
         "referenceRange": [{"low": {"value": 3.5}, "high": {"value": 5.1}}]},
        {"resourceType": "DiagnosticReport", "id": "bmp", "status": "final",
         "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "LAB",
                                   "display": "Laboratory"}]}],
         "code": {"coding": [{"system": LOINC, "code": "51990-0", "display": "Basic metabolic panel - Blood"}],
                  "text": "Basic metabolic panel - Blood"},
         "subject": subj, "effectiveDateTime": "2019-02-27T10:04:06-05:00",
         "issued": "2019-02-27T10:04:06.427-05:00",
         "performer": [{"reference": "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9999954399",
                        "display": "Dr. Malcolm Rempel"}],
         "result": [{"reference": "Observation/a1", "display": "Glucose [Mass/volume] in Blood"},
                    {"reference": "urn:uuid:a2", "display": "Urea nitrogen [Mass/volume] in Blood"},
                    {"reference": "Observation/a3", "display": "Sodium [Moles/volume] in Blood"},
                    {"reference": "Observation/a4", "display": "Potassium [Moles/volume] in Blood"},
                    {"reference": "Observation/gone", "display": "Chloride [Moles/volume] in Blood"}]},
        {"resourceType": "DiagnosticReport", "id": "old", "status": "final",
         "category": [{"coding": [{"code": "LAB"}]}], "code": {"text": "Lipid panel"},
         "effectiveDateTime": "2017-02-22T10:04:06-05:00", "result": []},
        {"resourceType": "DiagnosticReport", "id": "hp", "status": "final",
         "category": [{"coding": [{"system": LOINC, "code": "34117-2", "display": "History and physical note"}]}],
         "code": {"coding": [{"system": LOINC, "code": "34117-2"}], "text": "History and physical note"},
         "effectiveDateTime": "2019-02-27T10:04:06-05:00",
         "presentedForm": [{"contentType": "text/plain", "data": base64.b64encode(b"Note").decode()}]},
    ]


def test_synthea_reports_are_grouped_with_their_observations_newest_first() -> None:
    g = fc.grouped_reports(synthea_panel(), never)
    assert [r["id"] for r in g["reports"]] == ["bmp", "old"] and [r["id"] for r in g["otherReports"]] == ["hp"]
    bmp = g["reports"][0]
    assert [(x["name"], x["value"]) for x in bmp["results"]] == [
        ("Glucose", "84.1 mg/dL"), ("Urea nitrogen", "13.6 mg/dL"), ("Sodium", "139.4 mmol/L"),
        ("Potassium", "5.9 mmol/L"), ("Chloride [Moles/volume] in Blood", "not on this device")]
    k = bmp["results"][3]
    assert k["words"] == "high" and k["range"] == "3.5–5.1" and bmp["abnormal"] == 1
    assert bmp["performer"] == "Dr. Malcolm Rempel" and bmp["when"] == "2019-02-27 10:04"
    assert g["grouped"] == ["a1", "a2", "a3", "a4"]


# -- trends ----------------------------------------------------------------------------------------------------


def test_blood_pressure_trend_has_both_lines_axes_and_units() -> None:
    obs = [bp("b1", 150, 95, "2026-09-01T08:00:00Z"), bp("b2", 138, 88, "2026-10-01T08:00:00Z"),
           bp("b3", 126, 80, "2026-11-01T08:00:00Z"), vital("h", "8867-4", 80, "/min"),
           vital("h2", "8867-4", 84, "/min", "2026-11-20T08:00:00Z"), vital("t", "8310-5", 37, "Cel")]
    trends = fc.full_chart({"birthDate": "1961-04-12"}, obs, never, today="2026-12-01")["trends"]
    t = next(x for x in trends if x["id"] == "trend-bp")
    assert [ln["label"] for ln in t["lines"]] == ["Systolic", "Diastolic"] and t["unit"] == "mmHg"
    sys_y = [p["y"] for p in t["lines"][0]["points"]]
    dia_y = [p["y"] for p in t["lines"][1]["points"]]
    assert all(s < d for s, d in zip(sys_y, dia_y, strict=True))  # systolic drawn above diastolic
    assert sys_y[0] < sys_y[-1]  # falling pressure: the line goes down the screen
    labels = [float(x["label"]) for x in t["yTicks"]]
    assert labels == sorted(labels) and labels[0] <= 80 and labels[-1] >= 150
    assert [x["label"] for x in t["xTicks"]] == ["2026-09-01", "2026-10-01", "2026-11-01"]
    left, right = t["plot"]["left"], t["plot"]["right"]
    assert all(left <= p["x"] <= right for ln in t["lines"] for p in ln["points"])
    assert "Blood pressure (mmHg)" in t["summary"] and "Systolic 126" in t["summary"]
    hr = next(x for x in trends if x["id"] == "trend-heart-rate")
    assert hr["band"]["top"] < hr["band"]["bottom"]  # the normal band is drawn for adults
    assert not any(x["id"] == "trend-temperature" for x in trends)  # one temperature: no trend


# -- notes --------------------------------------------------------------------------------------------------------


def test_notes_show_author_and_time_once() -> None:
    data = base64.b64encode(b"Seen.").decode()
    docs = [{"resourceType": "DocumentReference", "id": "n1", "date": "2026-11-02T09:45:00Z",
             "description": "Progress note 2026-11-02", "author": [{"reference": "Practitioner/p1",
                                                                    "display": "Dr. Alice Adams"}],
             "content": [{"attachment": {"data": data}}]},
            {"resourceType": "DocumentReference", "id": "n2", "date": "2026-11-20T10:00:00Z",
             "description": "Phone call", "author": [{"display": "dr.adams"}], "content": []},
            {"resourceType": "DocumentReference", "id": "n3", "date": "2026-10-01T10:00:00Z", "content": []}]
    rows = fc.note_rows(docs, never)
    assert [r["id"] for r in rows] == ["n2", "n1", "n3"]
    assert (rows[1]["title"], rows[1]["author"], rows[1]["when"]) == ("Progress note", "Dr. Alice Adams",
                                                                      "2026-11-02 09:45")
    assert rows[0]["author"] == "dr.adams" and rows[2]["author"] == "Author not recorded"
    assert fc.author_text("nurse.baker") == "nurse.baker"


# -- problems -------------------------------------------------------------------------------------------------------

AUTHOR = {"reference": "Practitioner/dr-adams", "display": "Dr. Alice Adams"}


def test_adding_a_problem_codes_known_ones_and_keeps_free_text() -> None:
    c = cf.problem_new("p1", id="c1", text="  hypertension ", onset="2024-03-18", today="2026-12-01",
                       now="2026-12-01T10:00:00Z", author=AUTHOR, birth_date="1961-04-12")
    assert c["code"]["coding"][0] == {"system": "http://snomed.info/sct", "code": "38341003",
                                      "display": "Hypertension"}
    assert c["clinicalStatus"]["coding"][0]["code"] == "active" and c["onsetDateTime"] == "2024-03-18"
    assert c["subject"] == {"reference": "Patient/p1"} and c["recorder"] == AUTHOR
    assert c["category"][0]["coding"][0]["code"] == "problem-list-item"
    free = cf.problem_new("p1", id="c2", text="Fear of flying", onset="", today="2026-12-01",
                          now="2026-12-01T10:00:00Z", author=AUTHOR)
    assert free["code"] == {"text": "Fear of flying"} and "onsetDateTime" not in free


@pytest.mark.parametrize(("text", "onset", "field"), [
    ("", "", "text"), ("Asthma", "2027-01-01", "onset"), ("Asthma", "18/03/2024", "onset"),
    ("Asthma", "2024-02-30", "onset"), ("Asthma", "1950-01-01", "onset")])
def test_a_wrong_problem_form_says_which_field(text: str, onset: str, field: str) -> None:
    with pytest.raises(ValidationFailed) as e:
        cf.problem_new("p1", id="c", text=text, onset=onset, today="2026-12-01", now="2026-12-01T10:00:00Z",
                       author=AUTHOR, birth_date="1961-04-12")
    assert field in e.value.fields and "{" not in e.value.fields[field]


def test_resolving_a_problem_sets_status_and_abatement() -> None:
    c = cf.problem_new("p1", id="c1", text="Pneumonia", onset="2026-11-01", today="2026-12-01",
                       now="2026-12-01T10:00:00Z", author=AUTHOR)
    done = cf.problem_resolve(dict(c), abatement="", today="2026-12-01")
    assert done["clinicalStatus"]["coding"][0] == {"system": cf.CONDITION_CLINICAL, "code": "resolved"}
    assert done["abatementDateTime"] == "2026-12-01"
    with pytest.raises(ValidationFailed, match="already resolved"):
        cf.problem_resolve(done, abatement="", today="2026-12-01")
    with pytest.raises(ValidationFailed) as e:
        cf.problem_resolve(dict(c), abatement="2026-10-01", today="2026-12-01")
    assert "before it started" in e.value.fields["abatement"]
    rows = cf.problem_rows([c, {**done, "id": "c2"}], never)
    assert rows["counts"] == {"active": 1, "past": 1} and rows["active"][0]["resolvable"]
    assert rows["past"][0]["resolved"] == "2026-12-01"


def test_problem_controls_follow_the_role_matrix() -> None:
    nurse = cp.parse_permissions({"Condition": ["read", "search"]})
    physician = cp.parse_permissions({"Condition": ["read", "search", "create", "update"]})
    assert not cp.chart_actions(nurse)["addProblem"] and not cp.chart_actions(nurse)["resolveProblem"]
    assert cp.chart_actions(physician)["addProblem"] and cp.chart_actions(physician)["resolveProblem"]


# -- when vitals were taken --------------------------------------------------------------------------------------


def test_vitals_time_defaults_to_now_and_is_never_in_the_future() -> None:
    now = "2026-12-01T16:00:00Z"
    assert cf.vitals_effective("", now=now) == now
    # 14:30 local in UTC+1 (JS getTimezoneOffset() = -60) is 13:30 UTC.
    assert cf.vitals_effective("2026-12-01T14:30", now=now, tz_offset_min=-60) == "2026-12-01T14:30:00+01:00"
    with pytest.raises(ValidationFailed) as e:
        cf.vitals_effective("2026-12-01T18:00", now=now, tz_offset_min=0)
    assert "future" in e.value.fields["taken_at"]
    with pytest.raises(ValidationFailed) as e:
        cf.vitals_effective("2026-11-01T18:00", now=now)
    assert "7 days" in e.value.fields["taken_at"]
    with pytest.raises(ValidationFailed):
        cf.vitals_effective("yesterday", now=now)


def test_a_trend_needs_two_values_and_its_axis_covers_every_point() -> None:
    assert fc.trend_view("Temperature", "°C", [("Temperature", [("2026-12-01T08:00:00Z", 38.4)])]) is None
    assert fc.trend_view("Temperature", "°C", []) is None
    t = fc.trend_view("Temperature", "°C", [("Temperature", [("2026-11-30T08:00:00Z", 36.9),
                                                             ("2026-12-01T08:00:00Z", 38.4)])], (36.0, 37.9))
    assert t is not None
    top, bottom = t["plot"]["top"], t["plot"]["bottom"]
    assert all(top <= p["y"] <= bottom for p in t["lines"][0]["points"])
    assert float(t["yTicks"][-1]["label"]) >= 38.4 and float(t["yTicks"][0]["label"]) <= 36.0


def test_snomed_semantic_tags_and_duplicates_are_not_read_aloud() -> None:
    assert fc.plain_term("Anemia (disorder)") == "Anemia" and fc.plain_term("Mold (organism)") == "Mold"
    assert fc.plain_term("Hypertension") == "Hypertension"
    b = fc.allergy_banner([allergy("a", "Mold (organism)"), allergy("b", "Mold (organism)")])
    assert b["text"] == "Allergies (1): Mold"
    rows = cf.problem_rows([{"resourceType": "Condition", "id": "c", "code": {"text": "Anemia (disorder)"}}], never)
    assert rows["active"][0]["text"] == "Anemia"


# -- calendar arithmetic without the datetime module (the core may not import it) ------------------------------


@settings(max_examples=300)
@given(st.dates(min_value=dt.date(1, 1, 1), max_value=dt.date(9999, 12, 31)))
def test_day_numbers_match_the_standard_library(d: dt.date) -> None:
    n = caldate.days((d.year, d.month, d.day))
    assert n == d.toordinal() - dt.date(1970, 1, 1).toordinal()
    assert caldate.civil(n) == (d.year, d.month, d.day)


def test_instants_with_offsets() -> None:
    z = caldate.parse_instant("2026-12-01T16:00:00Z")
    assert z == dt.datetime(2026, 12, 1, 16, tzinfo=dt.UTC).timestamp()
    assert caldate.parse_instant("2026-12-01T11:00:00.427-05:00") == z
    assert caldate.parse_instant("2026-12-01T17:00", default_offset_min=60) == z
    assert caldate.parse_instant("2026-02-30") is None and caldate.parse_instant("soon") is None


def test_no_known_allergies_is_recorded_as_an_assertion_the_banner_reads() -> None:
    nka = cf.no_known_allergies("p1", id="n1", banner_state="unassessed", now="2026-12-01T10:00:00Z", author=AUTHOR)
    assert nka["code"]["coding"][0]["code"] == "716186003" and nka["patient"] == {"reference": "Patient/p1"}
    assert fc.allergy_banner([nka])["state"] == "nka"
    with pytest.raises(ValidationFailed, match="recorded allergies"):
        cf.no_known_allergies("p1", id="n2", banner_state="allergies", now="2026-12-01T10:00:00Z", author=AUTHOR)
    with pytest.raises(ValidationFailed, match="already recorded"):
        cf.no_known_allergies("p1", id="n2", banner_state="nka", now="2026-12-01T10:00:00Z", author=AUTHOR)


def test_every_other_kind_of_record_is_listed_by_kind() -> None:
    rows = fc.other_records([
        {"resourceType": "Device", "id": "d1", "type": {"text": "Implantable defibrillator (physical object)"},
         "status": "active"},
        {"resourceType": "Goal", "id": "g1", "description": {"text": "HbA1c below 7 %"}, "startDate": "2026-01-01"},
        {"resourceType": "Goal", "id": "g2", "description": {"text": "Walk daily"}, "startDate": "2026-06-01"},
        {"resourceType": "Observation", "id": "o1"}, {"resourceType": "Patient", "id": "p1"}], never)
    assert [(g["title"], [r["text"] for r in g["rows"]]) for g in rows] == [
        ("Devices", ["Implantable defibrillator"]), ("Goals", ["Walk daily", "HbA1c below 7 %"])]


def test_a_bare_author_reference_is_named_by_its_care_team_role() -> None:
    resources = [{"resourceType": "CareTeam", "id": "ct", "participant": [
        {"role": [{"text": "Physician"}], "member": {"reference": "Practitioner/pr1"}}]}]
    docs = [{"resourceType": "DocumentReference", "id": "n1", "date": "2026-11-02T09:45:00Z",
             "author": [{"reference": "Practitioner/pr1"}]},
            {"resourceType": "DocumentReference", "id": "n2", "date": "2026-11-01T09:45:00Z",
             "author": [{"reference": "Practitioner/elsewhere"}]}]
    rows = fc.note_rows(docs, never, fc.care_team_roles(resources))
    assert [r["author"] for r in rows] == ["Physician of the care team", "Author not named on this device"]


# Two heart rates taken in the same minute (issue 18 review): whichever order the store hands them over, the
# chart's "latest" is the same one, and the clinically newer one.
SAME_MINUTE = [
    # (older, newer): taken at different seconds, one written with an offset (a string sort got this wrong)
    (vital("a", "8867-4", 70, "/min", at="2026-11-30T09:00:30+01:00"),
     vital("b", "8867-4", 90, "/min", at="2026-11-30T08:00:40Z")),
    # taken at the same instant: the set entered later (``issued``) is the correction
    (vital("a", "8867-4", 70, "/min", issued="2026-11-30T08:03:00Z"),
     vital("b", "8867-4", 90, "/min", issued="2026-11-30T08:05:00Z")),
    # no ``issued`` (seeded, HL7): stored later on the server; a set not on the server yet was written after
    (vital("a", "8867-4", 70, "/min", meta={"versionId": "1", "lastUpdated": "2026-11-30T08:09:00Z"}),
     vital("b", "8867-4", 90, "/min", meta={"versionId": "1", "lastUpdated": "2026-11-30T08:10:00Z"})),
    (vital("a", "8867-4", 70, "/min", meta={"versionId": "1", "lastUpdated": "2026-11-30T08:10:00Z"}),
     vital("b", "8867-4", 90, "/min")),
    # the same in every date: the higher version, then (only so it is never a coin toss) the id
    (vital("a", "8867-4", 70, "/min", meta={"versionId": "2"}), vital("b", "8867-4", 90, "/min", meta={"versionId": "10"})),
    (vital("a", "8867-4", 70, "/min"), vital("b", "8867-4", 90, "/min")),
]


@pytest.mark.parametrize(("older", "newer"), SAME_MINUTE)
def test_the_latest_vital_of_the_same_minute_is_the_newer_one_in_any_order(
        older: dict[str, Any], newer: dict[str, Any]) -> None:
    from pyclient import chart  # noqa: PLC0415 (the classic chart's vitals and labs take the same order)

    for given_order in ([older, newer], [newer, older]):
        rows = fc.vitals_rows(given_order, never)
        assert [(r["name"], r["value"]) for r in rows] == [("Heart rate", "90 /min")], given_order
        view = chart.chart_view({"resourceType": "Patient", "id": "p1"}, given_order, never)
        assert [r["id"] for r in view["vitals"]] == ["b"]


def test_recorded_vitals_say_when_they_were_entered() -> None:
    from pyclient import forms  # noqa: PLC0415

    obs = forms.vitals("p1", {"hr": "80"}, now="2026-11-30T08:05:00+01:00", recorded="2026-11-30T07:09:12Z",
                       author={"display": "Dr Chen"})
    assert obs[0]["effectiveDateTime"] == "2026-11-30T08:05:00+01:00" and obs[0]["issued"] == "2026-11-30T07:09:12Z"
