"""Issue 18 items 1 and 6 on FHIR REST: a registering clinician can read the patient they created (care team,
audited); authors are the writer's own Practitioner; local MRNs follow pyclient's rule and are unique.
Real access policy throughout."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from omnicare.access.roles import role_assign
from omnicare.access.services import token_create
from omnicare.audit.models import AuditEvent
from omnicare.fhir.services import resources_import
from pyclient import registration as reg

from .conftest import BASE

REAL_ACCESS = True
pytestmark = pytest.mark.django_db
FHIR = "application/fhir+json"
DEVICE = "6f1c3c2e-6c1b-4c55-9a53-0e0b6a3f1d10"


def client_of(user: Any) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {token_create(user=user, name='t')}", HTTP_ACCEPT=FHIR)


@pytest.fixture
def world(django_user_model: Any) -> dict[str, Any]:
    """dr.a (physician, Practitioner pr-a) cares for pat-a; nurse.n (Practitioner pr-n) has no patient yet."""
    users = {}
    for name, role in (("dr.a", "physician"), ("nurse.n", "nurse")):
        users[name] = django_user_model.objects.create_user(username=name, password="correct horse battery staple",
                                                            first_name=name.split(".")[1].upper(), last_name="Test")
        role_assign(user=users[name], role=role)
    resources_import(resources=[
        {"resourceType": "Patient", "id": "pat-a", "name": [{"family": "Alpha"}]},
        {"resourceType": "Practitioner", "id": "pr-a", "identifier": [{"system": "urn:omnicare:user", "value": "dr.a"}],
         "name": [{"family": "Adams", "given": ["Alice"], "prefix": ["Dr."]}]},
        {"resourceType": "Practitioner", "id": "pr-n", "identifier": [{"system": "urn:omnicare:user", "value": "nurse.n"}],
         "name": [{"family": "Baker", "given": ["Ben"]}]},
        {"resourceType": "CareTeam", "id": "ct-a", "status": "active", "subject": {"reference": "Patient/pat-a"},
         "participant": [{"member": {"reference": "Practitioner/pr-a"}}]},
        {"resourceType": "AllergyIntolerance", "id": "al-a", "patient": {"reference": "Patient/pat-a"},
         "code": {"text": "Penicillin"}, "criticality": "low", "recorder": {"reference": "Practitioner/pr-n"}},
    ])
    return {"dr": client_of(users["dr.a"]), "nurse": client_of(users["nurse.n"]), **users}


def post(c: Client, rtype: str, body: dict[str, Any]) -> Any:
    return c.post(f"{BASE}/{rtype}", json.dumps({"resourceType": rtype, **body}), content_type=FHIR)


def walk_in(mrn: str | None = None) -> dict[str, Any]:
    return {"name": [{"family": "Walker", "given": ["Wendy"]}], "birthDate": "1990-02-03", "gender": "female",
            "identifier": [{"system": reg.LOCAL_MRN_SYSTEM, "value": mrn or reg.local_mrn(DEVICE, 1)}]}


def test_a_nurse_registering_through_rest_reads_the_new_patient_at_once_and_the_join_is_audited(
    world: dict[str, Any],
) -> None:
    nurse = world["nurse"]
    r = post(nurse, "Patient", walk_in())
    assert r.status_code == 201, r.content
    pid = r.json()["id"]
    assert nurse.get(f"{BASE}/Patient/{pid}").status_code == 200
    assert world["dr"].get(f"{BASE}/Patient/{pid}").status_code == 403  # nobody else's team
    ev = AuditEvent.objects.filter(action="create", resource_type="CareTeam", username="nurse.n").get()
    assert ev.patient_ids == [pid] and "care team" in ev.detail["reason"]


def test_me_names_the_users_practitioner(world: dict[str, Any], client: Client) -> None:
    client.force_login(world["dr.a"])
    me = client.get("/api/auth/me").json()
    assert me["practitioner"] == {"id": "pr-a", "display": "Dr. Alice Adams"}


def test_an_author_is_the_writers_own_practitioner_and_never_someone_elses(world: dict[str, Any]) -> None:
    dr = world["dr"]
    obs = {"status": "final", "code": {"text": "Weight"}, "subject": {"reference": "Patient/pat-a"}}
    r = post(dr, "Observation", {**obs, "performer": [{"reference": "Practitioner/pr-n", "display": "Ben Baker"}]})
    assert r.status_code == 403, r.content
    assert "signed by the person writing it" in r.content.decode()
    r = post(dr, "Observation", {**obs, "performer": [{"reference": "Practitioner/pr-a", "display": "Dr. Alice Adams"}]})
    assert r.status_code == 201
    # A name alone (what older app versions wrote) is completed with the writer's own reference.
    r = post(dr, "Observation", {**obs, "performer": [{"display": "dr.a"}]})
    assert r.status_code == 201
    assert r.json()["performer"] == [{"reference": "Practitioner/pr-a", "display": "Dr. Alice Adams"}]
    note = {"status": "current", "subject": {"reference": "Patient/pat-a"}, "author": [{"reference": "Practitioner/pr-n"}],
            "content": [{"attachment": {"contentType": "text/plain", "data": "aGk="}}]}
    assert post(dr, "DocumentReference", note).status_code == 403


def test_changing_a_colleagues_record_keeps_their_recorder(world: dict[str, Any]) -> None:
    dr = world["dr"]
    al = dr.get(f"{BASE}/AllergyIntolerance/al-a").json()
    al["criticality"] = "high"
    r = dr.put(f"{BASE}/AllergyIntolerance/al-a", json.dumps(al), content_type=FHIR)
    assert r.status_code == 200, r.content
    al = r.json()
    al["recorder"] = {"reference": "Practitioner/pr-x"}  # but not re-assigning it to a third person
    assert dr.put(f"{BASE}/AllergyIntolerance/al-a", json.dumps(al), content_type=FHIR).status_code == 403


def test_a_local_mrn_must_follow_the_rule_and_be_unique(world: dict[str, Any]) -> None:
    dr = world["dr"]
    good = reg.local_mrn(DEVICE, 7)
    bad = good[:-1] + ("0" if good[-1] != "0" else "1")
    r = post(dr, "Patient", walk_in(bad))
    assert r.status_code == 422 and "check character" in r.content.decode()
    assert post(dr, "Patient", walk_in(good)).status_code == 201
    r = post(dr, "Patient", walk_in(good))
    assert r.status_code == 422 and "already has the MRN" in r.content.decode()
    future = {**walk_in(reg.local_mrn(DEVICE, 8)), "birthDate": "2999-01-01"}
    assert post(dr, "Patient", future).status_code == 422


def test_only_roles_that_may_create_patients_are_offered_registration() -> None:
    from omnicare.access.roles import permissions_for
    from pyclient.views.permissions import may, parse_permissions

    offered = {role: may(parse_permissions(permissions_for({role})), "Patient", "create")
               for role in ("physician", "nurse", "front_desk", "pharmacist", "administrator", "auditor")}
    assert offered == {"physician": True, "nurse": True, "front_desk": True, "pharmacist": False,
                       "administrator": False, "auditor": False}
