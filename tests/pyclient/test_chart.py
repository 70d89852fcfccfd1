"""The chart screen's view model (pyclient.chart): what a clinician reads for one patient."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from pyclient import blindindex as bi
from pyclient import chart

PATIENT = {"resourceType": "Patient", "id": "p1", "meta": {"versionId": "3"},
           "name": [{"use": "nickname", "given": ["Bo"]}, {"use": "official", "family": "Émond", "given": ["Ann", "B"]}],
           "identifier": [{"value": "X9"}, {"type": {"coding": [{"code": "MR"}]}, "value": "MRN1"}],
           "telecom": [{"system": "phone", "value": "555"}], "birthDate": "1950-03-07",
           "address": [{"line": ["1 Main St"], "city": "Town", "state": "ST"}]}


def _pending_for(*ids: str) -> Any:
    def pending(r: Mapping[str, Any]) -> bool:
        return str(r.get("id")) in ids
    return pending


def test_patient_summary_uses_the_official_name_and_the_mrn() -> None:
    s = chart.patient_summary(PATIENT)
    assert s["display"] == "Émond, Ann B" and s["mrn"] == "MRN1" and s["phone"] == "555"
    assert s["address"] == "1 Main St, Town, ST" and s["version"] == "3"
    rows = [{"family": "Emond", "given": "Zed"}, {"family": "émond", "given": "Ann"}, {"family": "Abel", "given": ""}]
    assert [r["given"] for r in sorted(rows, key=chart.sort_key)] == ["", "Ann", "Zed"]  # accents and case folded


def test_search_box_entries_are_told_apart() -> None:
    assert chart.search_kind("1950-03") == "birthdate" and chart.search_kind("3/7/1950") == "birthdate"
    assert chart.search_kind("MRN1") == "identifier" and chart.search_kind("emo") == "name"
    assert chart.normalize_query("birthdate", "3/7/1950") == "1950-03-07"


def test_chart_view_shows_latest_vitals_flags_dispenses_notes_and_reports() -> None:
    obs = [
        {"resourceType": "Observation", "id": "o1", "effectiveDateTime": "2026-01-01T08:00:00Z",
         "code": {"text": "Glucose [Mass/volume] in Serum or Plasma"}, "category": [{"coding": [{"code": "laboratory"}]}],
         "valueQuantity": {"value": 30, "unit": "mg/dL"}, "interpretation": [{"coding": [{"code": "LL"}]}]},
        {"resourceType": "Observation", "id": "o2", "effectiveDateTime": "2026-01-02T08:00:00Z",
         "code": {"text": "BP"}, "component": [
             {"code": {"coding": [{"code": "8480-6"}]}, "valueQuantity": {"value": 120}},
             {"code": {"coding": [{"code": "8462-4"}]}, "valueQuantity": {"value": 80}}]},
        {"resourceType": "Observation", "id": "o3", "effectiveDateTime": "2026-01-01T07:00:00Z",
         "code": {"text": "Body temperature"}, "valueQuantity": {"value": 37.1, "unit": "Cel"}},
    ]
    others = [
        {"resourceType": "MedicationRequest", "id": "m1", "status": "active",
         "medicationCodeableConcept": {"text": "Metformin"}, "dosageInstruction": [{"text": "500 mg"}]},
        {"resourceType": "MedicationDispense", "id": "d1", "status": "completed", "whenHandedOver": "2026-01-03T10:00",
         "authorizingPrescription": [{"reference": "MedicationRequest/m1"}]},
        {"resourceType": "DocumentReference", "id": "n1", "date": "2026-01-02T09:00:00Z", "description": "Visit",
         "content": [{"attachment": {"data": base64.b64encode(b"Better.").decode()}}]},
        {"resourceType": "DiagnosticReport", "id": "r1", "code": {"text": "Panel"}, "issued": "2026-01-01T09:00",
         "result": [{"reference": "Observation/o1"}, {"reference": "Observation/gone", "display": "Potassium"}]},
        {"resourceType": "AllergyIntolerance", "id": "a1", "code": {"text": "Penicillin"}, "criticality": "high"},
    ]
    view = chart.chart_view(PATIENT, [PATIENT, *obs, *others], _pending_for("o2", "p1"))
    assert view["patient"]["pending"] is True and view["patient"]["display"] == "Émond, Ann B"
    (lab,) = view["labs"]
    assert lab["name"] == "Glucose" and lab["critical"] and lab["abnormal"] and lab["value"] == "30 mg/dL"
    assert [(v["name"], v["value"], v["pending"]) for v in view["vitals"]] == [
        ("Blood pressure", "120/80 mmHg", True), ("Body temperature", "37.1 °C", False)]
    assert view["medications"][0]["dispensed"] == "2026-01-03"
    assert view["notes"][0]["text"] == "Better." and view["notes"][0]["title"] == "Visit"
    assert [r["value"] for r in view["reports"][0]["results"]] == ["30 mg/dL", "not on this device"]
    assert view["allergies"][0]["status"] == "active"  # no clinical status recorded: shown as active
    assert view["counts"]["Observation"] == 3


# -- issue 18 item 11: partial MRN digits and day/month/year dates -------------------------------------------------


def test_mrn_digits_alone_find_the_patient() -> None:
    keys = bi.IndexKeys(b"n" * 32, b"i" * 32, b"b" * 32)
    patient = {"resourceType": "Patient", "id": "p21",
               "identifier": [{"system": "urn:mrn", "value": "MRN-000021"},
                              {"system": "urn:uuid", "value": "3f2a-11-b9c0"}]}
    stored = set(bi.tokens_for_patient(keys, patient))
    for typed in ("000021", "21", "0021", "MRN-000021", "mrn000021"):
        kind = chart.search_kind(typed)
        query = chart.normalize_query(kind, typed)
        assert kind == "identifier" and set(bi.tokens_for_query(keys, kind, query)) <= stored, typed
        assert bi.matches(patient, kind, query), typed
    for other in ("2", "210", "000022"):  # a number is the whole number, not any digits in it
        assert not bi.matches(patient, "identifier", chart.normalize_query("identifier", other)), other
    # identifiers that are not letters-then-digits (UUIDs, mixed codes) get no number token
    assert not bi.matches({"identifier": [{"value": "3f2a-11-b9c0"}]}, "identifier", "#11")


def test_day_month_year_dates_are_read_in_the_locale_order() -> None:
    assert chart.search_kind("18/04/2002") == "birthdate" and chart.search_kind("18.04.2002") == "birthdate"
    assert chart.normalize_query("birthdate", "18/04/2002", "dmy") == "2002-04-18"
    assert chart.normalize_query("birthdate", "18/04/2002", "mdy") == "2002-04-18"  # 18 can only be the day
    assert chart.normalize_query("birthdate", "04/18/2002", "dmy") == "2002-04-18"  # ...whichever side it is on
    assert chart.normalize_query("birthdate", "3/7/1950", "dmy") == "1950-07-03"
    assert chart.normalize_query("birthdate", "3/7/1950", "mdy") == "1950-03-07"
    assert chart.normalize_query("birthdate", "18.04.2002", "dmy") == "2002-04-18"
    assert chart.normalize_query("birthdate", "2002/4/18") == "2002-04-18"
    assert chart.normalize_query("birthdate", "2002-04") == "2002-04"
    assert chart.normalize_query("birthdate", "2002") == "2002"


def test_a_date_that_cannot_be_one_is_said_in_words() -> None:
    for typed, why in (("2002-18-04", "a month is 1 to 12"), ("31/02/2002", "February 2002 has no day 31"),
                       ("18/18/2002", "a month is 1 to 12"), ("2002-04-31", "April 2002 has no day 31")):
        kind = chart.search_kind(typed)
        assert kind == "birthdate", typed
        try:
            chart.normalize_query(kind, typed, "dmy")
        except bi.InvalidQuery as exc:
            message = str(exc)
        else:
            raise AssertionError(f"{typed} was accepted")
        assert why in message and f"“{typed}” is not a date this app can read" in message, message
        assert "null" not in message and "'" not in message and "{" not in message
