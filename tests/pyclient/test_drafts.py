"""Unsaved work kept across the idle lock (issue 18 item 10): what a draft holds and where it goes back."""

from __future__ import annotations

from pyclient import drafts as dr


def test_a_half_typed_note_is_kept_with_its_form_and_patient() -> None:
    d = dr.draft_from(patient_id="p1", form="note", values={"title": "Ward round", "text": "Pt comfortable, ",
                                                            "pin": "482916"}, saved_at=5)
    assert d == {"patientId": "p1", "form": "note", "target": "", "savedAt": 5,
                 "values": {"title": "Ward round", "text": "Pt comfortable, "}}  # never a PIN or other field
    assert dr.draft_matches(d, patient_id="p1", form="note")
    assert not dr.draft_matches(d, patient_id="p2", form="note")
    assert not dr.draft_matches(d, patient_id="p1", form="vitals")
    assert not dr.draft_matches(None, patient_id="p1", form="note")


def test_an_empty_form_or_an_unknown_one_is_not_a_draft() -> None:
    assert dr.draft_from(patient_id="p1", form="note", values={"title": " ", "text": ""}, saved_at=0) is None
    assert dr.draft_from(patient_id="p1", form="signin", values={"password": "x"}, saved_at=0) is None
    assert dr.draft_from(patient_id="", form="note", values={"text": "x"}, saved_at=0) is None


def test_a_medication_change_draft_belongs_to_that_medication() -> None:
    d = dr.draft_from(patient_id="p1", form="medication-change", values={"dosage": "1 tablet"}, saved_at=0,
                      target="m1")
    assert dr.draft_matches(d, patient_id="p1", form="medication-change", target="m1")
    assert not dr.draft_matches(d, patient_id="p1", form="medication-change", target="m2")


def test_vitals_keep_every_typed_value() -> None:
    d = dr.draft_from(patient_id="p1", form="vitals", values={"sbp": "141", "dbp": "", "temp": "38.4",
                                                               "taken_at": "2026-12-01T07:30"}, saved_at=0)
    assert d is not None and d["values"] == {"sbp": "141", "dbp": "", "temp": "38.4", "taken_at": "2026-12-01T07:30"}
    assert "unsaved" in dr.draft_words()
