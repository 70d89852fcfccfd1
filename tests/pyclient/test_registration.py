"""Registration rules (issue 18 item 1): the local MRN, the form's checks and what counts as a possible duplicate.
Pure Python (these also run inside Pyodide)."""

from __future__ import annotations

from typing import Any

import pytest

from pyclient import registration as reg
from pyclient.errors import ValidationFailed
from pyclient.views.register import duplicate_warning

DEV_A = "3f9a2c1b-7d4e-4c55-9a53-0e0b6a3f1d10"
DEV_B = "3f9a2c1b-7d4f-4c55-9a53-0e0b6a3f1d10"  # differs from A in the 12th hex digit only
TODAY = "2026-12-01"


def form(**over: Any) -> dict[str, Any]:
    return {"given": "Wendy", "family": "Walker", "birth_date": "18/04/2002", "gender": "female", **over}


def test_local_mrns_are_well_formed_unique_per_device_and_counter() -> None:
    seen = {reg.local_mrn(d, n) for d in (DEV_A, DEV_B, "00000000-0000-4000-8000-000000000001") for n in range(1, 200)}
    assert len(seen) == 3 * 199
    mrn = reg.local_mrn(DEV_A, 1)
    assert mrn.startswith("L-") and reg.local_mrn_problem(mrn) is None
    assert reg.local_mrn_device_part(mrn) == reg.device_part_of(DEV_A)
    with pytest.raises(ValueError):
        reg.local_mrn(DEV_A, 0)


def test_a_mistyped_or_swapped_character_is_caught_by_the_check_character() -> None:
    mrn = reg.local_mrn(DEV_A, 12)
    body = mrn[2:10]
    for i in range(len(body)):
        for ch in "0123456789ABCDEFGHJKMNPQRSTVWXYZ":
            if ch != body[i]:
                changed = f"L-{body[:i]}{ch}{body[i + 1:]}{mrn[10:]}"
                assert reg.local_mrn_problem(changed) is not None, changed
    for i in range(len(body) - 1):
        if body[i] != body[i + 1]:
            swapped = body[:i] + body[i + 1] + body[i] + body[i + 2:]
            assert reg.local_mrn_problem(f"L-{swapped}{mrn[10:]}") is not None
    assert reg.local_mrn_problem("MRN-000001") == "A local MRN looks like L-7ZQ4K1MX-00001-R."


def test_the_form_builds_a_patient_with_mrn_address_phone_and_emergency_contact() -> None:
    p = reg.patient_new(form(phone="+44 20 7946 0000", address_line="1 High St", city="Leeds", postal_code="LS1",
                             contact_name="Sam Walker", contact_phone="0113 496 0000", other_id="NHS 943 476 5919"),
                        id="p1", mrn=reg.local_mrn(DEV_A, 1), today=TODAY)
    assert p["birthDate"] == "2002-04-18" and p["gender"] == "female"
    assert p["name"] == [{"use": "official", "family": "Walker", "given": ["Wendy"]}]
    assert p["identifier"][0]["system"] == reg.LOCAL_MRN_SYSTEM and p["identifier"][0]["type"]["coding"][0]["code"] == "MR"
    assert p["identifier"][1]["value"] == "NHS 943 476 5919"
    assert p["address"] == [{"use": "home", "line": ["1 High St"], "city": "Leeds", "postalCode": "LS1"}]
    assert p["contact"][0]["name"] == {"text": "Sam Walker"}
    assert p["contact"][0]["telecom"] == [{"system": "phone", "value": "0113 496 0000"}]
    assert reg.patient_problems(p, today=TODAY) == {}


@pytest.mark.parametrize(("typed", "order", "iso"), [
    ("18/04/2002", "dmy", "2002-04-18"), ("04/18/2002", "mdy", "2002-04-18"), ("2002-04-18", "mdy", "2002-04-18"),
    ("18.04.2002", "mdy", "2002-04-18"), ("03/04/2002", "dmy", "2002-04-03"), ("03/04/2002", "mdy", "2002-03-04"),
])
def test_birth_dates_are_read_like_the_search_box_reads_them(typed: str, order: Any, iso: str) -> None:
    assert reg.parse_birth_date(typed, today=TODAY, date_order=order) == iso


@pytest.mark.parametrize(("typed", "words"), [
    ("2002-18-04", "a month is 1 to 12"), ("31/02/2002", "February 2002 has no day 31"),
    ("2002", "not a whole date"), ("yesterday", "not in a form a birth date is written"),
    ("01/01/2099", "cannot be in the future"), ("01/01/1800", "more than 140 years ago"), ("", "Enter the birth date"),
])
def test_a_date_that_cannot_be_read_is_said_in_words(typed: str, words: str) -> None:
    with pytest.raises(ValidationFailed) as exc:
        reg.patient_new(form(birth_date=typed), id="p1", mrn=reg.local_mrn(DEV_A, 1), today=TODAY)
    text = exc.value.fields["birth_date"]
    assert words in text and "null" not in text and "{" not in text


def test_missing_and_malformed_fields_each_get_a_sentence() -> None:
    with pytest.raises(ValidationFailed) as exc:
        reg.patient_new({"given": " ", "gender": "f", "phone": "call me", "contact_phone": "0113 496 0000"},
                        id="p1", mrn="L-XXXXXXXX-00001-0", today=TODAY)
    f = exc.value.fields
    assert set(f) == {"given", "family", "birth_date", "gender", "phone", "contact_name", "mrn"}
    assert f["contact_name"] == "Enter the name of the person to call."


def existing(pid: str, family: str, given: str, birth: str, *ids: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "name": [{"use": "official", "family": family, "given": [given]}],
            "birthDate": birth, "gender": "female",
            "identifier": [{"system": "urn:x", "value": v, "type": {"coding": [{"code": "MR"}]}} for v in ids]}


def test_duplicates_match_on_name_and_birth_date_or_on_a_shared_identifier() -> None:
    new = reg.patient_new(form(given="Wendy Ann", family="Wálker", other_id="MRN-000042"), id="new",
                          mrn=reg.local_mrn(DEV_A, 3), today=TODAY)
    assert reg.duplicate_queries(new) == [("name", "Wálker Wendy"), ("birthdate", "2002-04-18"),
                                          ("identifier", "MRN-000042")]
    candidates = [existing("a", "Walker", "Wendy", "2002-04-18", "MRN-000001"),
                  existing("b", "Walker", "Wendy", "2002-04-19", "MRN-000002"),  # another birthday
                  existing("c", "Walker", "Victor", "2002-04-18", "MRN-000003"),  # another person
                  existing("d", "Other", "Olga", "1950-01-01", "MRN 000042"),  # the same identifier
                  new]
    found = reg.duplicate_matches(new, candidates)
    assert [(m["id"], m["why"]) for m in found] == [("d", "same identifier MRN 000042"),
                                                    ("a", "same name and birth date")]
    w = duplicate_warning(found)
    assert w is not None and w["title"] == "2 patients on this device look like this one"
    assert w["items"][1]["text"] == "Walker, Wendy · born 2002-04-18 · female · MRN-000001"
    assert w["items"][1]["why"] == "Matches on same name and birth date."
    assert duplicate_warning([]) is None


def test_the_server_refuses_what_the_form_refuses() -> None:
    p = existing("x", "Walker", "Wendy", "2030-01-01")
    p["identifier"] = [{"system": reg.LOCAL_MRN_SYSTEM, "value": "L-12345678-00001-Z"}]
    assert set(reg.patient_problems(p, today=TODAY)) == {"mrn", "birth_date"}
    assert reg.patient_problems(existing("y", "Imported", "Only", "1970"), today=TODAY) == {}


def test_the_server_takes_a_devices_mrns_only_from_that_device() -> None:
    p = reg.patient_new(form(), id="p", mrn=reg.local_mrn(DEV_A, 5), today=TODAY)
    assert reg.mrn_device_problem(p, DEV_A) is None
    assert reg.mrn_device_problem(p, DEV_B) == ("This local MRN was made on another device: each device gives MRNs "
                                                "from its own range.")
    assert reg.mrn_device_problem(p, "dev-1234") is None  # not a UUID: not judged


# Front desk (issue 18 review): the form asks who takes the patient on; that clinician's care team gets it.
CLINICIANS = reg.clinician_choices([{"id": "pr-adams", "display": "Dr Alice Adams"},
                                    {"id": "pr-chen", "display": "Dr Wei Chen"}, {"display": "no id"}, "junk"])


def test_the_front_desk_names_the_responsible_clinician_who_becomes_general_practitioner() -> None:
    assert CLINICIANS == [{"id": "pr-adams", "display": "Dr Alice Adams"}, {"id": "pr-chen", "display": "Dr Wei Chen"}]
    p = reg.patient_new(form(responsible="pr-chen"), id="p1", mrn=reg.local_mrn(DEV_A, 1), today=TODAY,
                        clinicians=CLINICIANS)
    assert p["generalPractitioner"] == [{"reference": "Practitioner/pr-chen", "display": "Dr Wei Chen"}]


@pytest.mark.parametrize("chosen", ["", "pr-somebody-else"])
def test_without_a_clinician_from_the_list_the_front_desk_is_asked_for_one(chosen: str) -> None:
    with pytest.raises(ValidationFailed) as e:
        reg.patient_new(form(responsible=chosen), id="p1", mrn=reg.local_mrn(DEV_A, 1), today=TODAY,
                        clinicians=CLINICIANS)
    assert e.value.fields == {"responsible": "Choose the clinician responsible for this patient."}


def test_a_clinician_registering_is_not_asked_and_names_nobody() -> None:
    assert reg.clinician_choices(None) is None
    p = reg.patient_new(form(responsible="pr-chen"), id="p1", mrn=reg.local_mrn(DEV_A, 1), today=TODAY)
    assert "generalPractitioner" not in p  # they join the care team themselves (the server adds it)
