"""Refused changes in words, with fix-and-resend or discard; the role's allowed actions (issue 18, item 3)."""

from __future__ import annotations

from typing import Any

from pyclient.protocol import MutationResult, PushResponse
from pyclient.sync import Backoff, SyncMachine
from pyclient.views import permissions as cp
from pyclient.views import rejected as rj

NURSE = cp.parse_permissions({"MedicationRequest": ["read", "search"], "Observation": ["read", "create", "update"],
                              "AllergyIntolerance": ["read", "create", "update"], "Patient": ["read", "update"],
                              "DocumentReference": ["read", "create"]})
ORDER = {"resourceType": "MedicationRequest", "id": "mr1", "status": "active", "intent": "order",
         "medicationCodeableConcept": {"text": "Metformin 500 mg tablet"},
         "subject": {"reference": "Patient/p1"}, "dosageInstruction": [{"text": "500 mg twice daily"}]}


def item(reason: str, resource: dict[str, Any] | None = None, *, created: bool = True,
         rtype: str = "MedicationRequest") -> rj.Rejected:
    return rj.Rejected(entry_id="m1", op="put", resource_type=rtype, id="mr1", resource=resource or ORDER,
                       created=created, reason=reason)


def test_a_nurses_refused_order_says_why_in_words_and_offers_only_discard() -> None:
    [card] = rj.rejected_view([item("Your role does not allow create on MedicationRequest")], NURSE, {"m1": "p1"})
    assert card["title"] == "Medication order (new)"
    assert card["what"] == "Metformin 500 mg tablet — 500 mg twice daily"
    assert card["reason"].startswith("Your role may not enter medication orders.")
    assert "MedicationRequest" not in card["reason"] and "create" not in card["reason"]
    assert card["canRetry"] is False and card["fields"] == [] and card["patientId"] == "p1"
    assert "discard" in card["advice"]


def test_a_physicians_refused_order_can_be_fixed_and_sent_again() -> None:
    [card] = rj.rejected_view([item("Dosage is not valid")], None)
    assert card["canRetry"] and card["retryLabel"] == "Fix and send again"
    [fix] = card["fields"]
    assert (fix["name"], fix["label"], fix["value"], fix["kind"]) == ("dosage", "Dosage", "500 mg twice daily", "dosage")
    assert fix["spec"]["values"]["current"] == "500 mg twice daily"  # a free-text order: shown, then re-entered
    assert card["reason"] == "The server could not accept this change: dosage is not valid."


def test_technical_server_text_never_reaches_the_screen() -> None:
    for raw in ("month out of range: '2002-18-04' null", "KeyError: ['x']", "{\"issue\": []}", "", "rejected by the server"):
        text = rj.plain_reason(raw, resource_type="Patient", action="update")
        assert "null" not in text and "{" not in text and "[" not in text and "Error" not in text, text
        assert text.endswith(".")
    assert "care team" in rj.plain_reason("Patient is outside your care team (break-the-glass can grant "
                                          "emergency access)", resource_type="Observation", action="create")


def test_fix_is_validated_before_anything_is_queued() -> None:
    patient = {"resourceType": "Patient", "id": "p1", "birthDate": "2002-18-04", "telecom": []}
    r = item("Invalid birthDate", patient, created=False, rtype="Patient")
    fixed, errors = rj.apply_fix(r, {"birth_date": "not-a-date", "phone": ""}, today="2026-12-01")
    assert fixed is None and errors == {"birth_date": "Enter the birth date as year-month-day, e.g. 2002-04-18."}
    assert rj.apply_fix(r, {"birth_date": "2002-02-30"}, today="2026-12-01")[1]
    assert rj.apply_fix(r, {"birth_date": "2030-01-01"}, today="2026-12-01")[1] == {
        "birth_date": "Birth date cannot be in the future."}
    fixed, errors = rj.apply_fix(r, {"birth_date": "2002-04-18", "phone": "+1 555 0100"}, today="2026-12-01")
    assert errors == {} and fixed is not None
    assert fixed["birthDate"] == "2002-04-18" and fixed["telecom"] == [{"system": "phone", "value": "+1 555 0100"}]
    assert patient["birthDate"] == "2002-18-04"  # the stored copy is untouched
    assert rj.apply_fix(item("x"), {"dosage": "  "}, today="2026-12-01")[1] == {
        "dosage": "Enter the dose and frequency, e.g. 500 mg twice daily."}


def test_chart_controls_follow_the_matrix_and_unknown_permissions_offer_everything() -> None:
    nurse = cp.chart_actions(NURSE)
    assert nurse["startMedication"] is False and nurse["changeMedication"] is False
    assert nurse["recordVitals"] and nurse["addAllergy"] and nurse["writeNote"] and nurse["editDetails"]
    assert all(cp.chart_actions(None).values())
    assert cp.parse_permissions("nonsense") is None and cp.parse_permissions({"X": "read"}) is None
    assert cp.parse_permissions({"Patient": ["read", "fly"]}) == {"Patient": frozenset({"read"})}


def test_sign_out_warning_counts_refused_changes_and_conflicts() -> None:
    assert rj.sign_out_warning(0, 0, 0) is None
    text = rj.sign_out_warning(2, 1, 1)
    assert text is not None
    assert "2 changes waiting to be sent, 1 change the server refused and 1 conflict waiting for your decision" in text

    # Locked ("Forgot PIN"): the entries are sealed, the dialog still says how many will be lost.
    assert rj.sign_out_warning_sealed(0) is None
    assert rj.sign_out_warning_sealed(1) == ("1 change has not reached the server yet. Signing out removes it from "
                                             "this device for good. Sync first if you can.")
    assert (rj.sign_out_warning_sealed(3) or "").startswith("3 changes have not reached the server yet.")


def test_resend_after_a_refusal_is_one_new_entry_on_the_servers_version() -> None:
    """The adapter's retry: dismiss the refused entry and queue the corrected resource (browser_chart)."""
    m = SyncMachine(device_id="dev-1", backoff=Backoff(base=1.0, cap=60.0))
    m.record_local_edit(now=0.0, mutation_id="m1", resource_type="MedicationRequest", id="mr1", resource=ORDER,
                        base_version=None, base_resource=None)
    req = m.next_push(0.0)
    assert req is not None
    outcome = {"resourceType": "OperationOutcome", "issue": [{"code": "invalid", "diagnostics": "Dosage is not valid"}]}
    m.on_push_response(0.0, req, PushResponse((MutationResult("m1", "rejected", outcome=outcome),)))
    [entry] = [e for e in m.entries if e.state == "rejected"]
    r = rj.Rejected(entry.entry_id, entry.op, entry.resource_type, entry.id, entry.resource,
                    entry.base_version is None, entry.last_error or "")
    fixed, _ = rj.apply_fix(r, {"dosage": "1 tablet by mouth twice daily"}, today="2026-12-01")
    assert fixed is not None
    m.dismiss_rejected(entry_id="m1")
    m.record_local_edit(now=1.0, mutation_id="m2", resource_type="MedicationRequest", id="mr1", resource=fixed,
                        base_version=entry.server_version, base_resource=entry.server_resource)
    st = m.status()
    assert (st.rejected, st.pending) == (0, 1)
    again = m.next_push(2.0)
    assert again is not None and [x.mutation_id for x in again.mutations] == ["m2"]
    assert again.mutations[0].resource is not None
    assert again.mutations[0].resource["dosageInstruction"] == [{"text": "1 tablet by mouth twice daily"}]


def test_allergy_dropdown_changes_are_asked_in_words() -> None:
    from pyclient.views.confirm import allergy_change

    q = allergy_change("Penicillin", "criticality", "low", "unable-to-assess")
    assert q["message"] == "Change the criticality of Penicillin from low to unable to assess?"
    assert q["ok"] == "Change to unable to assess"
    assert "no longer be shown as an active allergy" in allergy_change("Penicillin", "status", "active", "resolved")["message"]


def test_a_refused_order_is_fixed_through_the_structured_dosage_form_and_stays_structured() -> None:
    """Issue 18 item 4 on the refused-change path: the fix form is the dosage form, prefilled from the refused
    order; the fixed order carries dose, route and timing as fields, its text generated from them."""
    structured = {**ORDER, "dosageInstruction": [{"sequence": 1, "text": "1 tablet by mouth every morning",
                                                   "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d",
                                                                         "when": ["MORN"]}},
                                                   "route": {"text": "by mouth"},
                                                   "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "tablet"}}]}]}
    r = item("Dosage is not valid", structured, created=False)
    [spec] = rj.fix_fields(r)
    assert spec["kind"] == "dosage" and spec["spec"]["values"]["frequency"] == "morning"
    assert spec["spec"]["values"]["dose_value"] == "1"
    fixed, errors = rj.apply_fix(r, {"dosage": {"dose_value": "2", "dose_unit": "tablet", "route": "oral",
                                                "frequency": "bid", "duration_value": "", "duration_unit": "d",
                                                "as_needed": False}}, today="2026-12-01")
    assert errors == {} and fixed is not None
    [d] = fixed["dosageInstruction"]
    assert d["timing"]["repeat"]["frequency"] == 2 and d["doseAndRate"][0]["doseQuantity"]["value"] == 2
    assert d["text"] == "2 tablets by mouth twice a day" and d["sequence"] == 1
    _, errors = rj.apply_fix(r, {"dosage": {"dose_value": "two", "dose_unit": "tablet", "route": "oral",
                                            "frequency": "bid"}}, today="2026-12-01")
    assert set(errors) == {"dose_value"}  # refused on the device, keyed by the form's field
