"""Issue 18 item 4: a dosage stays structured (FHIR R4 Dosage) and is said in one way everywhere."""

from __future__ import annotations

from typing import Any

import pytest

from pyclient import dosage as dz
from pyclient import forms
from pyclient.errors import ValidationFailed

ORDERED = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/dose-rate-type", "code": "ordered",
                       "display": "Ordered"}]}
# The shapes Synthea writes (MedicationRequest.dosageInstruction in /work/shared/data/synthea-10/).
SYNTHEA_DAILY = {"sequence": 1, "timing": {"repeat": {"frequency": 1, "period": 1.0, "periodUnit": "d"}},
                 "asNeededBoolean": False, "doseAndRate": [{"type": ORDERED, "doseQuantity": {"value": 1.0}}]}
SYNTHEA_PRN = {"sequence": 1, "text": "Take as needed.", "asNeededBoolean": True}
SYNTHEA_Q4_6H = {
    "sequence": 1, "text": "Every four to six hours (qualifier value)",
    "additionalInstruction": [{"coding": [{"system": "http://snomed.info/sct", "code": "225757006",
                                           "display": "Every four to six hours (qualifier value)"}],
                               "text": "Every four to six hours (qualifier value)"}],
    "timing": {"repeat": {"frequency": 4, "period": 1.0, "periodUnit": "d"}}, "asNeededBoolean": False,
    "doseAndRate": [{"type": ORDERED, "doseQuantity": {"value": 1.0}}]}
SYNTHEA_Q4H = {**SYNTHEA_DAILY, "timing": {"repeat": {"frequency": 1, "period": 4.0, "periodUnit": "h"}}}
# FHIR R4 spec example shapes (medicationrequest0301; the Dosage page's "as needed for pain").
SPEC_0301 = {"sequence": 1, "text": "6 mg PO daily for remission induction; adjust dosage to white blood cell (WBC) "
                                    "count.  With food",
             "additionalInstruction": [{"text": "With food"}],
             "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
             "route": {"coding": [{"system": "http://snomed.info/sct", "code": "26643006", "display": "Oral Route"}]},
             "doseAndRate": [{"type": ORDERED, "doseQuantity": {"value": 6, "unit": "mg",
                                                               "system": "http://unitsofmeasure.org", "code": "mg"}}]}
SPEC_PRN_PAIN = {"timing": {"repeat": {"frequency": 2, "period": 1, "periodUnit": "d"}},
                 "asNeededCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "22253000",
                                                         "display": "Pain"}]},
                 "route": {"coding": [{"system": "http://snomed.info/sct", "code": "26643006"}]},
                 "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "TAB", "code": "TAB",
                                                   "system": dz.DRUG_FORM}}]}
PATCH_WEEKLY = {"text": "apply one patch three times per week",
                "timing": {"repeat": {"frequency": 3, "period": 1, "periodUnit": "wk"}},
                "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "patch", "code": "PATCH",
                                                  "system": dz.DRUG_FORM}}]}
FORM = {"dose_value": "1", "dose_unit": "tablet", "route": "oral", "frequency": "morning", "duration_value": "",
        "duration_unit": "d", "as_needed": False}


@pytest.mark.parametrize(("dosage", "words"), [
    (SYNTHEA_DAILY, "1 dose once a day"),
    (SYNTHEA_PRN, "Take as needed."),
    (SYNTHEA_Q4_6H, "1 dose four times a day — Every four to six hours"),
    (SYNTHEA_Q4H, "1 dose every 4 hours"),
    (SPEC_0301, "6 mg by mouth once a day — With food"),
    (SPEC_PRN_PAIN, "1 tablet by mouth twice a day as needed for pain"),
    (PATCH_WEEKLY, "1 patch three times a week"),
    ({"text": "1 tablet by mouth every morning", "timing": {"code": {"text": "QAM"}}}, "1 tablet by mouth every morning"),
    ({"doseAndRate": [{"doseQuantity": {"value": 2, "unit": "tablet"}}], "timing": {"code": {"text": "BID"}}},
     "2 tablets twice a day"),
])
def test_dosages_from_synthea_and_the_spec_are_said_in_words(dosage: dict[str, Any], words: str) -> None:
    assert dz.dosage_text(dosage) == words


def test_the_form_writes_a_structured_r4_dosage_whose_text_is_the_same_words() -> None:
    d = dz.dosage_from_values({**FORM, "duration_value": "7"})
    assert d["text"] == "1 tablet by mouth every morning for 7 days" == dz.dosage_text(d)
    assert d["timing"]["repeat"] == {"frequency": 1, "period": 1, "periodUnit": "d", "when": ["MORN"],
                                     "boundsDuration": {"value": 7, "unit": "days", "system": dz.UCUM, "code": "d"}}
    assert d["route"]["coding"] == [{"system": dz.SNOMED, "code": "26643006", "display": "Oral route"}]
    assert d["doseAndRate"][0]["doseQuantity"] == {"value": 1, "unit": "tablet", "system": dz.DRUG_FORM,
                                                   "code": "TAB"}
    assert d["asNeededBoolean"] is False
    d2 = dz.dosage_from_values({**FORM, "dose_value": "500", "dose_unit": "mg", "frequency": "q8h",
                                "as_needed": True})
    assert d2["text"] == "500 mg by mouth every 8 hours as needed"
    assert d2["timing"]["repeat"] == {"frequency": 1, "period": 8, "periodUnit": "h"}
    assert d2["doseAndRate"][0]["doseQuantity"]["code"] == "mg"


def test_the_form_prefills_from_any_dosage_and_round_trips() -> None:
    d = dz.dosage_from_values({**FORM, "frequency": "bid", "duration_value": "2", "duration_unit": "wk"})
    values = dz.form_values([d])
    assert {k: values[k] for k in FORM} == {**FORM, "frequency": "bid", "duration_value": "2", "duration_unit": "wk"}
    assert dz.form_values(SYNTHEA_DAILY)["frequency"] == "daily"
    assert dz.form_values(SYNTHEA_DAILY)["dose_value"] == "1"
    assert dz.form_values(SPEC_0301)["route"] == "oral" and dz.form_values(SPEC_0301)["dose_unit"] == "mg"
    # A timing the choices do not name is offered as "keep current", and kept as it is.
    spec = dz.form_spec([{**SYNTHEA_DAILY, "timing": {"repeat": {"frequency": 1, "period": 2, "periodUnit": "d"}}}])
    assert spec["values"]["frequency"] == dz.KEEP_TIMING
    assert spec["frequencies"][0] == [dz.KEEP_TIMING, "Keep current: every 2 days"]
    prev = [{**SPEC_0301, "timing": {"repeat": {"frequency": 1, "period": 2, "periodUnit": "d"}}}]
    kept = dz.dosage_from_values({**FORM, "frequency": dz.KEEP_TIMING, "dose_value": "4", "dose_unit": "mg"}, prev)
    assert kept["timing"] == {"repeat": {"frequency": 1, "period": 2, "periodUnit": "d"}}
    assert kept["sequence"] == 1 and kept["additionalInstruction"] == [{"text": "With food"}]
    assert kept["text"] == "4 mg by mouth every 2 days — With food"


def test_the_form_refuses_what_is_not_a_dosage_in_plain_words() -> None:
    with pytest.raises(ValidationFailed) as exc:
        dz.dosage_from_values({"dose_value": "two", "dose_unit": "", "route": "nose", "frequency": "",
                               "duration_value": "-3"})
    assert exc.value.fields == {
        "dose_value": "The dose must be a number above 0, e.g. 1 or 500.",
        "dose_unit": "Choose the unit of the dose (tablet, mg, mL, …).",
        "route": "Choose how it is given (by mouth, into a vein, …).",
        "frequency": "Choose how often (every morning, twice a day, every 8 hours, …).",
        "duration_value": "The duration must be a whole number above 0, or left empty."}
    with pytest.raises(ValidationFailed):
        dz.dosage_from_values({**FORM, "dose_value": ""})


def test_change_dosage_replaces_structure_with_structure_not_a_text_line() -> None:
    res = {"resourceType": "MedicationRequest", "id": "m1", "status": "active",
           "dosageInstruction": [dict(SYNTHEA_DAILY)]}
    forms.check_new_dosage({**FORM, "frequency": "bid"})
    forms.medication_change(res, {**FORM, "frequency": "bid"})
    [d] = res["dosageInstruction"]
    assert d["text"] == "1 tablet by mouth twice a day" and d["sequence"] == 1
    assert d["timing"]["repeat"]["frequency"] == 2 and "doseQuantity" in d["doseAndRate"][0]
    new = forms.medication_new("p1", id="m2", name="Metformin", dosage={**FORM, "dose_value": "500",
                               "dose_unit": "mg", "frequency": "bid"}, now="2026-12-01T10:00:00Z",
                               author={"display": "dr.adams"})
    assert new["dosageInstruction"][0]["text"] == "500 mg by mouth twice a day"
    with pytest.raises(ValidationFailed) as exc:
        forms.medication_order_check("Metformin", {**FORM, "route": ""})
    assert set(exc.value.fields) == {"route"}
    assert dz.dosage_list_text([SYNTHEA_DAILY, SYNTHEA_Q4H]) == "1 dose once a day; then 1 dose every 4 hours"
