"""The conflict screen (pyclient.conflict_choices): a person's per-field choice makes the record pushed."""

from __future__ import annotations

from typing import Any

import pytest

from pyclient.conflict_choices import conflict_list
from pyclient.conflict_choices import resolved_resource as _resolved
from pyclient.errors import ValidationFailed
from pyclient.merge import merge
from pyclient.sync import ConflictView


def resolved_resource(view: ConflictView, choices: Any) -> Any:
    return _resolved(view, choices, today="2026-12-01")  # the device's date (issue 18: an edited date is checked)


def _view(base: Any, server: Any, local: Any) -> ConflictView:
    conflicts = tuple(c.to_json() for c in merge(base, server, local).conflicts) if server and local else ()
    return ConflictView(entry_id="e1", resource_type="AllergyIntolerance", id="a1", base=base, server=server,
                        server_version=4, local=local, conflicts=conflicts, conflict_id=None)


BASE = {"resourceType": "AllergyIntolerance", "id": "a1", "criticality": "low", "code": {"text": "Penicillin"},
        "patient": {"reference": "Patient/p1"}, "note": [{"text": "x"}]}
SERVER = {**BASE, "criticality": "high", "meta": {"versionId": "4"}, "recordedDate": "2026-01-01"}
LOCAL = {**BASE, "criticality": "unable-to-assess"}


def test_the_list_says_mine_and_theirs_in_the_clinicians_words() -> None:
    (row,) = conflict_list([_view(BASE, SERVER, LOCAL)])
    assert row["title"] == "Allergy: Penicillin" and row["patientId"] == "p1" and row["serverVersion"] == 4
    (f,) = row["fields"]  # issue 18: in words, as the chart says them
    assert (f["path"], f["label"], f["base"], f["mine"], f["theirs"]) == (
        "criticality", "Criticality", "Low", "Unable to assess", "High")
    assert f["edit"]["kind"] == "select" and row["otherChange"].startswith("The other change was saved by")


@pytest.mark.parametrize(("choice", "expected"), [
    ({"pick": "mine"}, "unable-to-assess"), ({"pick": "theirs"}, "high"), ({"pick": "edit", "value": "low"}, "low"),
])
def test_each_choice_lands_on_the_servers_version(choice: dict[str, Any], expected: str) -> None:
    out = resolved_resource(_view(BASE, SERVER, LOCAL), {"criticality": choice})
    assert out["criticality"] == expected
    assert out["meta"] == {"versionId": "4"} and out["recordedDate"] == "2026-01-01"  # the rest: merged


def test_no_choice_and_a_bad_pick_are_refused() -> None:
    with pytest.raises(ValidationFailed, match="Choose"):  # issue 18: nothing is chosen for the person
        resolved_resource(_view(BASE, SERVER, LOCAL), {})
    with pytest.raises(ValidationFailed):
        resolved_resource(_view(BASE, SERVER, LOCAL), {"criticality": {"pick": "both"}})


def test_an_edited_number_stays_a_number() -> None:
    base = {"resourceType": "Observation", "id": "o", "valueInteger": 1}
    view = _view(base, {**base, "valueInteger": 2}, {**base, "valueInteger": 3})
    path = view.conflicts[0]["path"]
    assert resolved_resource(view, {path: {"pick": "edit", "value": "7"}})["valueInteger"] == 7
    with pytest.raises(ValidationFailed, match="Enter a number"):
        resolved_resource(view, {path: {"pick": "edit", "value": "seven"}})


def test_a_record_deleted_on_one_side_is_kept_or_dropped_whole() -> None:
    assert resolved_resource(_view(BASE, None, LOCAL), {"": {"pick": "mine"}}) == LOCAL
    assert resolved_resource(_view(BASE, None, LOCAL), {}) is None


def test_a_dosage_is_edited_as_structured_fields_and_a_bad_one_is_refused_per_field() -> None:
    from pyclient import dosage as dz

    def dose(**form: Any) -> list[dict[str, Any]]:
        return [dz.dosage_from_values({"dose_value": "1", "dose_unit": "tablet", "route": "oral",
                                       "frequency": "daily", **form})]

    base = {"resourceType": "MedicationRequest", "id": "m1", "status": "active", "dosageInstruction": dose()}
    view = _view(base, {**base, "dosageInstruction": dose(frequency="q8h")},
                 {**base, "dosageInstruction": dose(dose_value="2", frequency="bid")})
    [row] = conflict_list([view])
    [f] = row["fields"]
    assert (f["path"], f["mine"], f["theirs"]) == (
        "dosageInstruction", "2 tablets by mouth twice a day", "1 tablet by mouth every 8 hours")
    assert f["edit"]["kind"] == "dosage" and f["edit"]["form"]["values"]["frequency"] == "bid"
    form = {"dose_value": "1", "dose_unit": "tablet", "route": "oral", "frequency": "q12h", "duration_value": "5"}
    out = resolved_resource(view, {"dosageInstruction": {"pick": "edit", "value": form}})
    assert out["dosageInstruction"][0]["text"] == "1 tablet by mouth every 12 hours for 5 days"
    assert out["dosageInstruction"][0]["timing"]["repeat"]["period"] == 12
    with pytest.raises(ValidationFailed) as exc:
        resolved_resource(view, {"dosageInstruction": {"pick": "edit", "value": {**form, "dose_value": "two"}}})
    assert exc.value.fields == {"dosageInstruction:dose_value": "The dose must be a number above 0, e.g. 1 or 500."}
