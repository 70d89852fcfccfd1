"""The store against the REAL access policy: roles, care-team scope, result filtering."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from omnicare.access.roles import role_assign
from omnicare.fhir.services import resources_import

from .conftest import BASE, outcome_of, patient, row_counts

REAL_ACCESS = True
pytestmark = pytest.mark.django_db


def obs(pid: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"obs-{pid}",
        "status": "final",
        "code": {"text": "hr"},
        "subject": {"reference": f"Patient/{pid}"},
    }


@pytest.fixture
def ward(user: Any) -> None:
    """dr.test is a physician on pat-a's care team; pat-b is someone else's patient."""
    role_assign(user=user, role="physician")
    resources_import(
        resources=[
            patient(family="Alpha", id="pat-a"),
            patient(family="Beta", id="pat-b"),
            {
                "resourceType": "Practitioner",
                "id": "dr",
                "identifier": [{"system": "urn:omnicare:user", "value": "dr.test"}],
            },
            {
                "resourceType": "CareTeam",
                "id": "team-a",
                "status": "active",
                "subject": {"reference": "Patient/pat-a"},
                "participant": [{"member": {"reference": "Practitioner/dr"}}],
            },
            obs("pat-a"),
            obs("pat-b"),
        ]
    )


def test_care_team_scope_on_read_and_search(api: Client, ward: None) -> None:
    assert api.get(f"{BASE}/Observation/obs-pat-a").status_code == 200
    denied = api.get(f"{BASE}/Observation/obs-pat-b")
    assert denied.status_code == 403 and outcome_of(denied)["issue"][0]["code"] == "forbidden"
    assert api.get(f"{BASE}/Observation?patient=pat-b").status_code == 403
    # A search across patients only returns what the user may see.
    everything = api.get(f"{BASE}/Observation").json()
    assert [e["resource"]["id"] for e in everything["entry"]] == ["obs-pat-a"] and everything["total"] == 1
    assert {e["resource"]["id"] for e in api.get(f"{BASE}/Patient").json()["entry"]} == {"pat-a"}
    hist = api.get(f"{BASE}/Observation/_history").json()
    assert {e["resource"]["id"] for e in hist["entry"]} == {"obs-pat-a"}
    system = api.get(f"{BASE}/_history?_count=100").json()
    ids = {e["resource"]["id"] for e in system["entry"]}
    assert "obs-pat-b" not in ids and "pat-b" not in ids and {"obs-pat-a", "dr"} <= ids


def test_role_matrix_denies_and_writes_nothing(api: Client, ward: None) -> None:
    before = row_counts()
    r = api.delete(f"{BASE}/Patient/pat-a")  # physicians may not delete patients
    assert r.status_code == 403
    r = api.post(
        f"{BASE}/Observation", obs("pat-b"), content_type="application/fhir+json"
    )  # outside the team
    assert r.status_code == 403
    assert row_counts() == before
    ok = api.post(f"{BASE}/Observation", obs("pat-a"), content_type="application/fhir+json")
    assert ok.status_code == 201


def test_user_without_role_gets_403(api: Client, db: Any) -> None:
    r = api.get(f"{BASE}/Patient")
    assert r.status_code == 403


def test_two_physicians_with_the_same_shape_of_scope_each_see_only_their_own_patients(
    api: Client, ward: None, other_user: Any, token_for: Any
) -> None:
    """The scope filter's SQL is compiled once per shape (fhir/sqlcache.py) and reused with each caller's
    patients: a colleague with as many patients, other ones, must never get the first caller's."""
    from omnicare.fhir import sqlcache

    sqlcache._CACHE.clear()
    role_assign(user=other_user, role="physician")
    resources_import(resources=[
        {"resourceType": "Practitioner", "id": "nurse", "identifier": [{"system": "urn:omnicare:user", "value": "nurse.test"}]},
        {"resourceType": "CareTeam", "id": "team-b", "status": "active", "subject": {"reference": "Patient/pat-b"},
         "participant": [{"member": {"reference": "Practitioner/nurse"}}]},
    ])  # fmt: skip
    colleague = Client(HTTP_AUTHORIZATION=f"Bearer {token_for(other_user)}", HTTP_ACCEPT="application/fhir+json")
    for _ in range(2):
        mine = api.get(f"{BASE}/Observation?status=final").json()
        theirs = colleague.get(f"{BASE}/Observation?status=final").json()
        assert [e["resource"]["id"] for e in mine["entry"]] == ["obs-pat-a"] and mine["total"] == 1
        assert [e["resource"]["id"] for e in theirs["entry"]] == ["obs-pat-b"] and theirs["total"] == 1
    assert any(sqlcache._CACHE.values()), "the second round ran compiled SQL"
    assert api.get(f"{BASE}/Observation?patient=pat-b").status_code == 403
