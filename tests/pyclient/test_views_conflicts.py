"""The conflict screen's words and its Edit validation (issue 18, item 2)."""

from __future__ import annotations

from pyclient.views import conflicts as cv

DOSE = [{"sequence": 1, "text": "1 tablet by mouth every morning", "timing": {"code": {"text": "QAM"}}}]


def test_values_are_shown_as_the_chart_shows_them_never_as_json() -> None:
    [f] = cv.field_views([{"path": "dosageInstruction", "base": None, "ours": DOSE,
                           "theirs": [{"text": "2 tablets by mouth at night"}]}])
    assert f["label"] == "Dosage"
    assert (f["base"], f["mine"], f["theirs"]) == ("(not set)", "2 tablets by mouth at night",
                                                   "1 tablet by mouth every morning")
    views = cv.field_views([
        {"path": "criticality", "base": "low", "ours": "high", "theirs": "unable-to-assess"},
        {"path": "clinicalStatus", "base": None, "theirs": None,
         "ours": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                              "code": "resolved"}]}},
        {"path": "effectiveDateTime", "base": None, "ours": "2026-10-26T08:40:00Z", "theirs": "2026-10-26T09:15:00Z"},
        {"path": "telecom", "base": None, "ours": [{"system": "phone", "value": "+1 555 0100"}], "theirs": None},
        {"path": "", "base": None, "ours": {"resourceType": "Patient", "gender": "male"}, "theirs": None},
    ])
    texts = [v[k] for v in views for k in ("base", "mine", "theirs")]
    assert views[0]["mine"] == "Unable to assess" and views[0]["theirs"] == "High"
    assert views[1]["theirs"] == "Resolved"
    assert views[2]["theirs"] == "2026-10-26 08:40"
    assert views[3]["theirs"] == "+1 555 0100"
    assert views[4]["edit"] is None
    for t in texts:
        assert "{" not in t and "[" not in t and "null" not in t and "None" not in t, t


def test_edit_kinds_follow_the_field() -> None:
    assert cv.edit_spec("criticality", "low", "high") == {"kind": "select", "options": cv._OPTIONS["criticality"],
                                                         "value": "low"}
    assert cv.edit_spec("birthDate", "2002-04-18", "2002-04-19")["kind"] == "date"  # type: ignore[index]
    assert cv.edit_spec("valueQuantity.value", 38.4, 37.0)["kind"] == "number"  # type: ignore[index]
    # A dosage is edited with the form it was entered with, prefilled with this device's value (issue 18 item 4).
    spec = cv.edit_spec("dosageInstruction", DOSE, [{"text": "a"}])
    assert spec is not None and spec["kind"] == "dosage"
    assert spec["form"]["values"]["current"] == "1 tablet by mouth every morning"


def test_an_edit_the_server_would_refuse_is_explained_before_it_is_accepted() -> None:
    today = "2026-12-01"
    assert cv.edit_value("birthDate", "not-a-date", "2002-04-18", "2002-04-19", today=today) == (
        None, "Enter the date as year-month-day, e.g. 2002-04-18.")
    assert cv.edit_value("birthDate", "2002-18-04", "2002-04-18", "2002-04-19", today=today)[1]
    assert cv.edit_value("birthDate", "2030-01-01", "2002-04-18", "2002-04-19", today=today)[1] == (
        "Birth date cannot be in the future.")
    assert cv.edit_value("birthDate", "2002-04-20", "2002-04-18", "2002-04-19", today=today) == ("2002-04-20", None)
    assert cv.edit_value("criticality", "severe", "low", "high", today=today)[1] == "Choose one of the listed values."
    assert cv.edit_value("criticality", "low", "high", "unable-to-assess", today=today) == ("low", None)
    assert cv.edit_value("valueQuantity.value", "abc", 38, 37, today=today)[1] == "Enter a number."
    assert cv.edit_value("valueQuantity.value", "38,4", 38, 37.0, today=today) == (38.4, None)
    form = {"dose_value": "2", "dose_unit": "tablet", "route": "oral", "frequency": "bid", "duration_value": "5",
            "duration_unit": "d", "as_needed": False}
    value, err = cv.edit_value("dosageInstruction", form, DOSE, [{"text": "a"}], today=today)
    assert err is None and value[0]["text"] == "2 tablets by mouth twice a day for 5 days"
    assert value[0]["sequence"] == 1 and value[0]["timing"]["repeat"]["frequency"] == 2
    value, err = cv.edit_value("dosageInstruction", {**form, "dose_value": "two"}, DOSE, [{"text": "a"}], today=today)
    assert value is None and err == "The dose must be a number above 0, e.g. 1 or 500."
    assert cv.edit_problems("dosageInstruction", {**form, "route": ""}, DOSE) == {
        "dosageInstruction:route": "Choose how it is given (by mouth, into a vein, …)."}
    assert cv.edit_value("dosageInstruction", "1 tablet", DOSE, DOSE, today=today)[1]
    assert cv.edit_value("telecom", "call me", None, [{"system": "phone", "value": "1"}], today=today)[1]
    cc = {"coding": [{"system": "http://x", "code": "active"}]}
    assert cv.edit_value("clinicalStatus", "resolved", cc, cc, today=today) == (
        {"coding": [{"system": "http://x", "code": "resolved", "display": "Resolved"}]}, None)
    assert cv.edit_value("", "x", {}, {}, today=today)[0] is None


def test_who_made_the_other_change_and_when() -> None:
    server = {"resourceType": "AllergyIntolerance", "recorder": {"display": "dr.adams"},
              "meta": {"versionId": "3", "lastUpdated": "2026-12-01T13:05:09.123Z"}}
    shipped = [{"path": "criticality", "oursAuthor": "Nora Baker", "oursAt": "2026-12-01T13:05:09.123Z"}]
    assert cv.other_change(server, shipped) == (
        "The other change was saved by Nora Baker on 2026-12-01 at 13:05 (UTC).")
    # The recorder first wrote the record; it is not who changed it: only the server's word names a person.
    assert cv.other_change(server) == "The other change was saved by another user on 2026-12-01 at 13:05 (UTC)."
    assert cv.other_change({"meta": {}}) == "The other change was saved by another user."
    assert cv.other_change(None) == "Someone else deleted this record on the server."


def test_codes_quantities_and_dosages_use_the_charts_words() -> None:
    views = cv.field_views([
        {"path": "code", "base": None, "ours": {"coding": [{"system": "http://snomed.info/sct", "code": "91936005",
                                                            "display": "Allergy to penicillin"}]}, "theirs": None},
        {"path": "valueQuantity", "base": None, "ours": {"value": 38.4, "unit": "Cel"}, "theirs": {"value": 37}},
        {"path": "dosageInstruction", "base": None, "theirs": None, "ours": [
            {"sequence": 1, "timing": {"repeat": {"frequency": 1, "period": 1.0, "periodUnit": "d"}},
             "asNeededBoolean": False, "doseAndRate": [{"doseQuantity": {"value": 1.0}}]}]},
    ])
    assert views[0]["theirs"] == "Allergy to penicillin"
    assert views[1]["theirs"] == "38.4 °C"
    assert views[2]["theirs"] == "1 dose once a day"
