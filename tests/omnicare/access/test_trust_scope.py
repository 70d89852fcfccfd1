"""One scope rule on every path (issue 10, items 9, 10, 11), replayed with real requests.

dr.a (physician) cares for p1; p2 is outside the care team. Records that name p2 — an old version of an
Observation that was moved from p2 to p1, a Communication about p1 sent to p2 — must be withheld from dr.a on
read, vread, search, history (instance, type, system) and the sync pull alike; a deleted patient's chart cannot
be claimed by creating a CareTeam for it, and a deleted Patient cannot be recreated by a clinician.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from omnicare.access.roles import PHYSICIAN, role_assign
from omnicare.access.services import token_create
from omnicare.fhir.models import Resource
from omnicare.fhir.repository import FhirStore
from omnicare.fhir.services import Write, resources_import
from tests.omnicare.sync.conftest import SyncClient, care_team, observation, patient, practitioner, put

pytestmark = pytest.mark.django_db
REAL_ACCESS = True

COMM = {"resourceType": "Communication", "id": "c-two", "status": "completed",
        "subject": {"reference": "Patient/p1"}, "recipient": [{"reference": "Patient/p2"}],
        "payload": [{"contentString": "p2's results are back"}]}


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def doctor() -> Client:
    user = get_user_model().objects.create_user(username="dr.a")
    role_assign(user=user, role=PHYSICIAN)
    resources_import(resources=[practitioner("dr.a"), patient("p1"), patient("p2"), care_team("p1", ["dr.a"])])
    resources_import(resources=[observation("o-move", "p2", 80.0)])  # v1 names p2 ...
    resources_import(resources=[observation("o-move", "p1", 81.0)])  # ... v2 was moved to p1
    resources_import(resources=[COMM, observation("o-ok", "p1")])
    return Client(HTTP_AUTHORIZATION=f"Bearer {token_create(user=user, name='t')}")


def _ids(bundle: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(e["resource"]["resourceType"], e["resource"]["id"], e["resource"]["meta"]["versionId"])
            for e in bundle.get("entry", []) if "resource" in e and e["resource"]["resourceType"] != "OperationOutcome"]


def test_history_is_filtered_per_version(doctor: Client) -> None:
    assert doctor.get("/fhir/R4/Observation/o-move/_history/1").status_code == 403
    assert doctor.get("/fhir/R4/Observation/o-move/_history/2").status_code == 200
    for path in ("/fhir/R4/Observation/o-move/_history", "/fhir/R4/Observation/_history", "/fhir/R4/_history"):
        r = doctor.get(path)
        assert r.status_code == 200, (path, r.content[:300])
        versions = _ids(r.json())
        assert ("Observation", "o-move", "2") in versions, path
        assert ("Observation", "o-move", "1") not in versions, path
        assert "80.0" not in r.content.decode() and "p2" not in json.dumps(versions), path


def test_a_record_naming_an_out_of_scope_patient_is_withheld_everywhere(doctor: Client) -> None:
    assert doctor.get("/fhir/R4/Communication/c-two").status_code == 403
    for path in ("/fhir/R4/Communication", "/fhir/R4/Communication?subject=Patient/p1",
                 "/fhir/R4/Communication/_history", "/fhir/R4/_history?_count=100"):
        r = doctor.get(path)
        assert r.status_code == 200, (path, r.content[:300])
        assert "p2's results" not in r.content.decode(), path
        assert not any(rid == "c-two" for _, rid, _ in _ids(r.json())), path
    sync = SyncClient(doctor, "tab-1")
    changes, _, _ = sync.pull_all()
    bodies = [c for c in changes if c["resource"] is not None]
    assert ("Observation", "o-ok") in {(c["resourceType"], c["id"]) for c in bodies}
    assert not any(c["id"] == "c-two" for c in bodies)
    assert "p2's results" not in json.dumps(changes)


def test_a_device_holding_a_record_drops_it_when_it_starts_naming_an_outsider(doctor: Client) -> None:
    sync = SyncClient(doctor, "tab-2")
    note = {"resourceType": "Communication", "id": "c-later", "status": "completed",
            "subject": {"reference": "Patient/p1"}, "payload": [{"contentString": "first"}]}
    resources_import(resources=[note])
    changes, _, cursor = sync.pull_all()
    assert any(c["id"] == "c-later" and c["resource"] for c in changes)
    resources_import(resources=[{**note, "recipient": [{"reference": "Patient/p2"}],
                                 "payload": [{"contentString": "now for p2"}]}])
    changes, _, _ = sync.pull_all(cursor)
    later = [c for c in changes if c["id"] == "c-later"]
    assert later and later[-1]["deleted"] and later[-1]["resource"] is None
    assert "now for p2" not in json.dumps(changes)


def test_a_deleted_patients_chart_cannot_be_claimed_with_a_care_team(doctor: Client) -> None:
    resources_import(resources=[patient("p3"), observation("o3", "p3", 99.0)])
    FhirStore.system().apply([Write("Patient", "p3", None)])
    team = care_team("p3", ["dr.a"], team_id="ct-claim")
    r = doctor.post("/fhir/R4/CareTeam", json.dumps(team), content_type="application/fhir+json")
    assert r.status_code == 403, r.content
    sync = SyncClient(doctor, "tab-3")
    [res] = sync.push(put(team, None))
    assert res["status"] == "rejected"
    assert not Resource.objects.filter(resource_type="CareTeam", resource_id="ct-claim").exists()
    assert doctor.get("/fhir/R4/Observation/o3").status_code == 403
    # A brand-new patient registered offline (patient + CareTeam + first note in one push) still works.
    new = f"p-{uuid.uuid4().hex[:8]}"
    results = sync.push(put(patient(new), None), put(care_team(new, ["dr.a"]), None),
                        put(observation(f"o-{new}", new), None))
    assert [x["status"] for x in results] == ["applied", "applied", "applied"], results


def test_a_deleted_patient_cannot_be_recreated_by_a_clinician(doctor: Client) -> None:
    resources_import(resources=[patient("p4"), observation("o4", "p4")])
    FhirStore.system().apply([Write("Patient", "p4", None)])
    r = doctor.put("/fhir/R4/Patient/p4", json.dumps(patient("p4")), content_type="application/fhir+json")
    assert r.status_code == 403, r.content
    sync = SyncClient(doctor, "tab-4")
    [res] = sync.push(put(patient("p4"), None))
    assert res["status"] in ("rejected", "conflict"), res  # a create onto a tombstone is parked or refused
    if res["status"] == "conflict":  # ... and resolving it with "keep mine" is refused too
        r = sync.post(f"/conflicts/{res['conflictId']}/resolve", {"resolution": "keep-mine"})
        assert r.status_code == 403, r.content
    assert Resource.objects.get(resource_type="Patient", resource_id="p4").deleted
