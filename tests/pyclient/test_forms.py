"""The clinical forms (pyclient.forms): what a clinician typing into them sees refused, and what is queued."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from pyclient import forms
from pyclient.errors import ValidationFailed

NOW = "2026-03-04T05:06:07Z"
ME = {"display": "dr.kim"}


def _fields(fn: Any, *args: Any, **kwargs: Any) -> dict[str, str]:
    with pytest.raises(ValidationFailed) as err:
        fn(*args, **kwargs)
    return err.value.fields


def test_vitals_blood_pressure_is_one_panel_and_each_other_measurement_one_observation() -> None:
    obs = forms.vitals("p1", {"sbp": "120", "dbp": "80", "hr": "72", "temp": "37,25", "rr": ""}, now=NOW, author=ME)
    assert [o["code"]["text"] for o in obs] == ["Blood pressure", "Heart rate", "Body temperature"]
    bp = obs[0]
    assert [c["valueQuantity"]["value"] for c in bp["component"]] == [120, 80]
    assert obs[2]["valueQuantity"] == {"value": 37.2, "unit": "Cel", "system": "http://unitsofmeasure.org",
                                       "code": "Cel"}  # a decimal comma is read, one decimal kept
    assert all(o["subject"] == {"reference": "Patient/p1"} and o["effectiveDateTime"] == NOW for o in obs)
    assert all(o["performer"] == [ME] and "id" not in o for o in obs)


@pytest.mark.parametrize(("values", "field", "says"), [
    ({"sbp": "120"}, "dbp", "Enter both systolic and diastolic pressure."),
    ({"sbp": "80", "dbp": "90"}, "dbp", "Diastolic pressure must be lower than systolic."),
    ({"hr": "abc"}, "hr", "Heart rate must be a number."),
    ({"spo2": "101"}, "spo2", "between 50 and 100"),
    ({"temp": "nan"}, "temp", "between 30 and 43"),
    ({}, "form", "Enter at least one measurement."),
])
def test_vitals_out_of_range_or_half_entered_is_refused_field_by_field(values: dict[str, str], field: str,
                                                                       says: str) -> None:
    assert says in _fields(forms.vitals, "p1", values, now=NOW, author=ME)[field]


def test_allergy_new_and_update() -> None:
    a = forms.allergy_new("p1", id="a1", substance="  Penicillin ", criticality="high", reaction="Hives",
                          status="active", now=NOW, author=ME)
    assert a["code"] == {"text": "Penicillin"} and a["criticality"] == "high"
    assert a["reaction"] == [{"manifestation": [{"text": "Hives"}]}] and a["patient"]["reference"] == "Patient/p1"
    assert set(_fields(forms.allergy_new, "p1", id="a", substance="", criticality="mild", reaction="",
                       status="gone", now=NOW, author=ME)) == {"substance", "criticality", "status"}
    forms.allergy_update(a, criticality="low", status="resolved")
    assert a["criticality"] == "low" and a["clinicalStatus"]["coding"][0]["code"] == "resolved"
    assert "criticality" in _fields(forms.allergy_update, a, criticality="severe", status=None)


def test_medication_orders_need_a_name_and_a_dose_and_stop_once() -> None:
    m = forms.medication_new("p1", id="m1", name="Metformin", dosage="500 mg twice daily", now=NOW, author=ME)
    assert m["status"] == "active" and m["dosageInstruction"] == [{"text": "500 mg twice daily"}]
    assert set(_fields(forms.medication_new, "p1", id="m", name=" ", dosage="", now=NOW, author=ME)) == {
        "name", "dosage"}
    assert "dosage" in _fields(forms.check_new_dosage, "  ")
    forms.medication_change(m, " 1 g daily ")
    assert m["dosageInstruction"] == [{"text": "1 g daily"}]
    forms.medication_stop(m, "side effects")
    assert m["status"] == "stopped" and m["statusReason"] == {"text": "side effects"}
    with pytest.raises(ValidationFailed, match="already stopped"):
        forms.medication_stop(m, "")


def test_note_text_is_an_attachment_and_an_empty_note_is_refused() -> None:
    n = forms.note_new("p1", id="n1", title="", text="Seen today. Better.", now=NOW, author=ME)
    att = n["content"][0]["attachment"]
    assert base64.b64decode(att["data"]).decode() == "Seen today. Better." and n["description"] == "Note 2026-03-04"
    assert "text" in _fields(forms.note_new, "p1", id="n", title="t", text="  ", now=NOW, author=ME)
    assert "20,000" in _fields(forms.note_new, "p1", id="n", title="t", text="x" * 20001, now=NOW, author=ME)["text"]


def test_contact_update_checks_birth_date_gender_and_phone() -> None:
    p: dict[str, Any] = {"resourceType": "Patient", "id": "p1",
                         "telecom": [{"system": "email", "value": "a@b"}, {"system": "phone", "value": "1", "use": "home"}]}
    forms.contact_update(p, phone="+1 555 0100", birth_date="1970-01-02", gender="female", today="2026-03-04")
    assert p["telecom"][0] == {"system": "phone", "value": "+1 555 0100", "use": "home"}
    assert p["birthDate"] == "1970-01-02" and p["gender"] == "female"
    bad = _fields(forms.contact_update, p, phone="call me", birth_date="2027-01-01", gender="x", today="2026-03-04")
    assert bad == {"birth_date": "Birth date cannot be in the future.", "gender": "Choose female, male, other or unknown.",
                   "phone": "Use digits, spaces and + ( ) - only."}
    for wrong in ("1970-02-30", "1970-13-01", "01/02/1970", "1970-1-2"):
        assert _fields(forms.contact_update, p, phone=None, birth_date=wrong, gender=None,
                       today="2026-03-04") == {"birth_date": "Use the format YYYY-MM-DD."}
    forms.contact_update(p, phone="", birth_date="2000-02-29", gender=None, today="2026-03-04")  # a leap day
    assert p["telecom"] == [{"system": "email", "value": "a@b"}] and p["birthDate"] == "2000-02-29"
