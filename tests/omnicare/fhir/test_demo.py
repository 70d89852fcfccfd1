"""Demo data: valid R4, deterministic, clinically coherent; the seeder and demo-user commands are idempotent."""

from __future__ import annotations

import base64
from collections import Counter
from datetime import date
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from fhir.resources.R4B import get_fhir_model_class

from omnicare.fhir.demo import (
    DEMO_USERS,
    MRN_SYSTEM,
    USER_SYSTEM,
    demo_resources,
    user_practitioner_id,
)

TODAY = date(2026, 11, 1)


@pytest.fixture(scope="module")
def sample() -> list[dict[str, Any]]:
    return list(demo_resources(patients=40, seed=7, today=TODAY))


def by_type(resources: list[dict[str, Any]], rtype: str) -> list[dict[str, Any]]:
    return [r for r in resources if r["resourceType"] == rtype]


def codes(concept: dict[str, Any]) -> set[str]:
    return {c["code"] for c in concept.get("coding", [])}


def test_every_resource_validates_as_fhir_r4(sample: list[dict[str, Any]]) -> None:
    for resource in sample:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def test_same_seed_same_data_and_fewer_patients_is_a_prefix(sample: list[dict[str, Any]]) -> None:
    assert list(demo_resources(patients=40, seed=7, today=TODAY)) == sample
    fewer = list(demo_resources(patients=5, seed=7, today=TODAY))
    assert sample[: len(fewer)] == fewer
    other = list(demo_resources(patients=5, seed=8, today=TODAY))
    assert {r["id"] for r in other if r["resourceType"] == "Patient"}.isdisjoint(
        {r["id"] for r in fewer if r["resourceType"] == "Patient"}
    )


def test_ids_are_unique_uuids_and_volume_is_about_fifty_per_patient(sample: list[dict[str, Any]]) -> None:
    ids = [r["id"] for r in sample]
    assert len(ids) == len(set(ids))
    assert 35 * 40 <= len(sample) <= 65 * 40
    assert set(Counter(r["resourceType"] for r in sample)) >= {
        "Patient", "Practitioner", "CareTeam", "Encounter", "Observation", "Condition",
        "AllergyIntolerance", "MedicationRequest", "DocumentReference",
    }  # fmt: skip


def test_patients_have_mrn_and_some_names_have_diacritics(sample: list[dict[str, Any]]) -> None:
    patients = by_type(sample, "Patient")
    assert len(patients) == 40
    mrns = [i["value"] for p in patients for i in p["identifier"] if i["system"] == MRN_SYSTEM]
    assert len(set(mrns)) == 40 and all(m.startswith("MRN-") and len(m) == 10 for m in mrns)
    names = [" ".join(p["name"][0]["given"] + [p["name"][0]["family"]]) for p in patients]
    assert any(not n.isascii() for n in names)
    assert all(p["birthDate"] < TODAY.isoformat() and p["telecom"] and p["address"] for p in patients)


def test_nothing_happens_after_the_reference_date(sample: list[dict[str, Any]]) -> None:
    for obs in by_type(sample, "Observation"):
        assert obs["effectiveDateTime"][:10] <= TODAY.isoformat()


def test_diabetics_get_metformin_and_hba1c_that_improves(sample: list[dict[str, Any]]) -> None:
    diabetics = {
        c["subject"]["reference"] for c in by_type(sample, "Condition") if "44054006" in codes(c["code"])
    }
    assert diabetics, "the sample should contain diabetics"
    for ref in diabetics:
        meds = [m for m in by_type(sample, "MedicationRequest") if m["subject"]["reference"] == ref]
        assert any(
            "861007" in codes(m["medicationCodeableConcept"]) and m["status"] == "active" for m in meds
        )
        a1c = sorted(
            (o["effectiveDateTime"], o["valueQuantity"]["value"])
            for o in by_type(sample, "Observation")
            if o["subject"]["reference"] == ref and "4548-4" in codes(o["code"])
        )
        assert len(a1c) >= 2 and a1c[-1][1] < a1c[0][1]


def test_hypertensives_get_lisinopril_and_bp_readings_that_fall(sample: list[dict[str, Any]]) -> None:
    htn = {c["subject"]["reference"] for c in by_type(sample, "Condition") if "38341003" in codes(c["code"])}
    assert htn
    first_avg, last_avg = [], []
    for ref in htn:
        meds = [m for m in by_type(sample, "MedicationRequest") if m["subject"]["reference"] == ref]
        assert any("314076" in codes(m["medicationCodeableConcept"]) for m in meds)
        bps = sorted(
            (o["effectiveDateTime"], o) for o in by_type(sample, "Observation")
            if o["subject"]["reference"] == ref and "85354-9" in codes(o["code"])
        )  # fmt: skip
        systolic = [
            next(c for c in o["component"] if "8480-6" in codes(c["code"]))["valueQuantity"] for _, o in bps
        ]
        assert all(q["code"] == "mm[Hg]" and q["system"] == "http://unitsofmeasure.org" for q in systolic)
        first_avg.append(systolic[0]["value"])
        last_avg.append(systolic[-1]["value"])
    # Treatment works on average (individual readings are noisy).
    assert sum(last_avg) / len(last_avg) < sum(first_avg) / len(first_avg) - 5


def test_vitals_and_labs_have_categories_loinc_and_ucum(sample: list[dict[str, Any]]) -> None:
    expected = {
        "8867-4": ("vital-signs", "/min"), "85354-9": ("vital-signs", None), "8310-5": ("vital-signs", "Cel"),
        "9279-1": ("vital-signs", "/min"), "59408-5": ("vital-signs", "%"), "29463-7": ("vital-signs", "kg"),
        "718-7": ("laboratory", "g/dL"), "2345-7": ("laboratory", "mg/dL"), "2160-0": ("laboratory", "mg/dL"),
        "2823-3": ("laboratory", "mmol/L"), "4548-4": ("laboratory", "%"),
    }  # fmt: skip
    seen = set()
    for obs in by_type(sample, "Observation"):
        (loinc,) = codes(obs["code"])
        category, unit = expected[loinc]
        assert codes(obs["category"][0]) == {category}
        if unit:
            assert obs["valueQuantity"]["code"] == unit
        seen.add(loinc)
    assert seen == set(expected)


def test_allergies_have_reactions_and_medications_have_dosage(sample: list[dict[str, Any]]) -> None:
    allergies = by_type(sample, "AllergyIntolerance")
    assert allergies
    for a in allergies:
        reaction = a["reaction"][0]
        assert reaction["manifestation"] and reaction["severity"] in {"mild", "moderate", "severe"}
    statuses = Counter(m["status"] for m in by_type(sample, "MedicationRequest"))
    assert statuses["active"] > 0
    for m in by_type(sample, "MedicationRequest"):
        dosage = m["dosageInstruction"][0]
        assert dosage["timing"]["repeat"] and dosage["doseAndRate"][0]["doseQuantity"]["value"] > 0
        assert codes(m["medicationCodeableConcept"]) and m["medicationCodeableConcept"]["coding"][0][
            "system"
        ].endswith("rxnorm")


def test_notes_are_readable_text(sample: list[dict[str, Any]]) -> None:
    notes = by_type(sample, "DocumentReference")
    assert notes
    text = base64.b64decode(notes[0]["content"][0]["attachment"]["data"]).decode()
    assert "Vitals: BP" in text and "Plan:" in text


def test_most_patients_have_the_demo_clinicians_on_their_care_team(sample: list[dict[str, Any]]) -> None:
    teams = by_type(sample, "CareTeam")
    assert len(teams) == 40
    practitioners = {p["id"]: p for p in by_type(sample, "Practitioner")}
    adams = user_practitioner_id("dr.adams")
    assert practitioners[adams]["identifier"] == [{"system": USER_SYSTEM, "value": "dr.adams"}]
    members = [{p["member"]["reference"] for p in t["participant"]} for t in teams]
    with_adams = sum(f"Practitioner/{adams}" in m for m in members)
    assert 0.6 * 40 <= with_adams < 40  # most, not all: some patients are outside her scope
    for m in members:  # staff members exist as resources
        assert all(ref.removeprefix("Practitioner/") in practitioners for ref in m)


@pytest.mark.django_db
def test_seed_demo_writes_once_and_skips_on_rerun() -> None:
    from omnicare.fhir.models import Resource

    out = StringIO()
    call_command("seed_demo", "--patients", "3", "--seed", "5", "--batch", "50", stdout=out)
    expected = list(demo_resources(patients=3, seed=5))
    assert Resource.objects.count() == len(expected)
    assert "Patient" in out.getvalue() and "total written" in out.getvalue()
    versions = dict(Resource.objects.values_list("resource_id", "version_id"))

    out = StringIO()
    call_command("seed_demo", "--patients", "3", "--seed", "5", stdout=out)
    assert Resource.objects.count() == len(expected)
    assert dict(Resource.objects.values_list("resource_id", "version_id")) == versions  # untouched
    assert f"{len(expected):>7,}" in out.getvalue().split("already present")[1].splitlines()[0]

    call_command("seed_demo", "--patients", "1", "--seed", "6", "--flush", stdout=StringIO())
    assert Resource.objects.count() == len(list(demo_resources(patients=1, seed=6)))


@pytest.mark.django_db
def test_create_demo_users_logs_in_and_repairs_care_teams(client: Any) -> None:
    from omnicare.fhir.models import Resource
    from omnicare.fhir.services import resources_import

    # Data loaded without the demo clinicians on the care teams (e.g. by an older seeder).
    resources = list(demo_resources(patients=12, seed=3))
    user_refs = {f"Practitioner/{user_practitioner_id(u.username)}" for u in DEMO_USERS}
    for r in resources:
        if r["resourceType"] == "CareTeam":
            r["participant"] = [p for p in r["participant"] if p["member"]["reference"] not in user_refs]
    resources = [
        r for r in resources if not any(i.get("system") == USER_SYSTEM for i in r.get("identifier", []))
    ]
    resources_import(resources=resources)

    out = StringIO()
    call_command("create_demo_users", stdout=out)
    printed = out.getvalue()
    logins = [line.split()[:3] for line in printed.splitlines()[1 : 1 + len(DEMO_USERS)]]
    assert [u for u, _, _ in logins] == [u.username for u in DEMO_USERS]
    for username, password, role in logins:
        assert client.login(username=username, password=password), username
        from omnicare.access.roles import user_roles

        assert user_roles(get_user_model().objects.get(username=username)) == {role.strip("[]")}
    assert "admin" in printed

    admin_user = get_user_model().objects.get(username="admin")
    assert admin_user.is_staff and not admin_user.is_superuser  # issue 10: the demo admin is not a superuser

    def adams_teams() -> int:
        ref = f"Practitioner/{user_practitioner_id('dr.adams')}"
        return sum(
            any(p["member"]["reference"] == ref for p in row.body["participant"])
            for row in Resource.objects.filter(resource_type="CareTeam")
        )

    assert Resource.objects.filter(
        resource_type="Practitioner", resource_id=user_practitioner_id("dr.adams")
    ).exists()
    first = adams_teams()
    assert first >= 6  # most of them
    # The seeder would have made exactly the same choice.
    seeded = [r for r in demo_resources(patients=12, seed=3) if r["resourceType"] == "CareTeam"]
    assert first == sum(
        any(
            p["member"]["reference"] == f"Practitioner/{user_practitioner_id('dr.adams')}"
            for p in t["participant"]
        )
        for t in seeded
    )
    versions = dict(Resource.objects.values_list("resource_id", "version_id"))
    call_command("create_demo_users", stdout=StringIO())  # idempotent: nothing to add the second time
    assert dict(Resource.objects.values_list("resource_id", "version_id")) == versions
    assert get_user_model().objects.filter(username__in=[u.username for u in DEMO_USERS]).count() == len(
        DEMO_USERS
    )


@pytest.mark.django_db
def test_demo_clinicians_see_most_demo_patients_through_the_sync_scope() -> None:
    scope = pytest.importorskip("omnicare.sync.scope")
    call_command("seed_demo", "--patients", "10", "--seed", "11", stdout=StringIO())
    call_command("create_demo_users", stdout=StringIO())
    patients = {r["id"] for r in demo_resources(patients=10, seed=11) if r["resourceType"] == "Patient"}
    users = get_user_model().objects
    adams = scope.scope_patient_ids(user=users.get(username="dr.adams"))
    assert adams <= patients and len(adams) >= 6
    assert scope.scope_patient_ids(user=users.get(username="admin")) == set()
