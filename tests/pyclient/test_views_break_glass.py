"""Break-the-glass rules the device and the server share (issue 18 item 7): reason, lookup, words, grants."""

from __future__ import annotations

import pytest

from pyclient.errors import ValidationFailed
from pyclient.views import break_glass as bg
from pyclient.views import permissions as cp


def test_the_reason_needs_ten_characters_after_trimming() -> None:
    assert bg.reason_problem("   too short  ") is not None
    assert "at least 10 characters" in (bg.reason_problem("") or "")
    assert bg.reason_problem("Unresponsive in the waiting room") is None
    assert bg.reason_problem("x" * (bg.MAX_REASON + 1)) is not None


def test_a_lookup_is_a_whole_name_and_full_birth_date_or_an_mrn() -> None:
    assert bg.lookup_query(family=" Quintero ", birth_date="1961-03-09") == {"family": "Quintero",
                                                                         "birthDate": "1961-03-09"}
    # The date is read in the device's order, as the patient search reads it.
    assert bg.lookup_query(family="Quintero", birth_date="09/03/1961", date_order="dmy")["birthDate"] == "1961-03-09"
    assert bg.lookup_query(mrn="MRN-009901", family="ignored") == {"mrn": "MRN-009901"}
    with pytest.raises(ValidationFailed) as partial:
        bg.lookup_query(family="Quintero", birth_date="1961")
    assert "full birth date" in partial.value.fields["birth_date"]
    with pytest.raises(ValidationFailed) as wrong:
        bg.lookup_query(family="Quintero", birth_date="1961-18-04")
    assert "not a date" in wrong.value.fields["birth_date"]
    with pytest.raises(ValidationFailed) as empty:
        bg.lookup_query()
    assert "medical record number" in empty.value.message
    with pytest.raises(ValidationFailed):
        bg.lookup_query(mrn="a b")
    with pytest.raises(ValidationFailed):  # a comma would be an OR of two names in a FHIR search
        bg.lookup_query(family="Quintero,Smith", birth_date="1961-03-09")


def test_the_answer_and_the_banner_in_words() -> None:
    assert bg.lookup_words(1).startswith("1 match outside your patients")
    assert "No patient" in bg.lookup_words(0)
    assert "medical record number" in bg.lookup_words(3)
    words = bg.banner_words(expires_s=10_000 + 3 * 3600 + 55 * 60 + 20, now_s=10_000, local_time="18:40")
    assert "ends at 18:40 (in 3 hours 55 minutes)" in words and "removed from this device" in words
    assert "in 1 minute)" in bg.banner_words(expires_s=100, now_s=0, local_time="09:00")
    assert "less than a minute" in bg.banner_words(expires_s=30, now_s=0, local_time="09:00")


def test_grants_end_by_the_clock_or_when_the_server_ends_them() -> None:
    grants = [{"id": 1, "patientId": "a", "expiresS": 100.0}, {"id": 2, "patientId": "b", "expiresS": 50.0},
              {"id": 3, "patientId": "c", "expiresS": 500.0, "ended": True},
              {"id": 4, "patientId": "a", "expiresS": 40.0}]
    live, ended = bg.active_grants(grants, 60.0)
    assert [g["id"] for g in live] == [1]
    assert ended == ["b", "c"]  # "a" still has a running grant, so its records stay
    assert bg.active_grants(grants, 1000.0) == ([], ["a", "b", "c"])


def test_the_control_is_shipped_as_a_permission() -> None:
    perms = cp.parse_permissions({"Patient": ["read"], bg.PERMISSION[0]: [bg.PERMISSION[1]]})
    assert perms is not None and cp.may(perms, *bg.PERMISSION)
    assert not cp.may(cp.parse_permissions({"Patient": ["read"]}), *bg.PERMISSION)
