"""Online only on the server (issue 13 item 4): the decision table, the device policy, and the reduced screens'
view models and validation run here with the same pyclient functions, authorized and audited."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from omnicare.access.roles import role_assign
from omnicare.audit.models import AuditEvent
from omnicare.fhir import services as fhir_svc
from pyclient import storage_mode as sm

pytestmark = pytest.mark.django_db


def _client(user: Any) -> Client:
    c = Client(enforce_csrf_checks=True)
    csrf = c.get("/api/auth/csrf").json()["csrfToken"]
    r = c.post("/api/auth/login", json.dumps({"username": user.username, "password": "correct horse battery staple"}),
               content_type="application/json", HTTP_X_CSRFTOKEN=csrf)
    assert r.status_code == 200, r.content
    c.defaults["HTTP_X_CSRFTOKEN"] = c.cookies["csrftoken"].value  # rotated by the sign-in
    return c


def _patient(user: Any) -> str:
    """Patient pat-a on dr.test's care team (as in tests/omnicare/fhir/test_access_integration.py)."""
    fhir_svc.resources_import(resources=[
        {"resourceType": "Patient", "id": "pat-a", "name": [{"family": "Okafor", "given": ["Ada"]}],
         "birthDate": "1950-07-03", "identifier": [{"system": "urn:omnicare:mrn", "value": "MRN-000321"}]},
        {"resourceType": "Practitioner", "id": "dr", "identifier": [{"system": "urn:omnicare:user", "value": "dr.test"}]},
        {"resourceType": "CareTeam", "id": "team-a", "status": "active", "subject": {"reference": "Patient/pat-a"},
         "participant": [{"member": {"reference": "Practitioner/dr"}}]},
    ])
    return "pat-a"


def test_the_server_answers_the_decision_table_for_a_browser_without_its_runtime(anon: Any) -> None:
    r = anon.post("/api/device/storage-mode", json.dumps({"runtime": False, "idb": True}), content_type="application/json")
    assert r.status_code == 200
    assert r.json() == sm.decide({"runtime": False, "idb": True}).to_json()
    assert r.json()["decisions"] == "server"
    assert anon.post("/api/device/storage-mode", json.dumps({"idb": "maybe"}),
                     content_type="application/json").status_code == 400


def test_the_sign_in_answer_carries_the_shared_workstation_policy(user: Any) -> None:
    role_assign(user=user, role="physician")
    c = _client(user)
    assert c.get("/api/auth/me").json()["devicePolicy"] == {"offlineData": True, "requirePersistence": False}
    user.groups.add(Group.objects.get_or_create(name="no-offline-data")[0])
    assert c.get("/api/auth/me").json()["devicePolicy"]["offlineData"] is False


def test_chart_and_vitals_use_the_devices_rules_and_are_audited(user: Any) -> None:
    role_assign(user=user, role="physician")
    pid = _patient(user)
    c = _client(user)
    found = c.get("/api/online/patients", {"q": "okaf"}).json()
    assert [p["id"] for p in found["results"]] == [pid] and found["kind"] == "name"
    assert c.get("/api/online/patients", {"q": "31/02/1950", "date_order": "dmy"}).status_code == 400
    chart = c.get(f"/api/online/chart/{pid}").json()
    assert chart["patient"]["display"] == "Okafor, Ada" and chart["actions"]["recordVitals"] is True
    assert chart["actions"]["startMedication"] is False  # reduced screens: vitals only
    bad = c.post(f"/api/online/vitals/{pid}", json.dumps({"values": {"sbp": "90", "dbp": "120"}}),
                 content_type="application/json")
    assert bad.status_code == 400
    issues = bad.json()["issue"]
    assert {"dbp": "Diastolic pressure must be lower than systolic."} == {
        i["expression"][0]: i["diagnostics"] for i in issues if i.get("expression")}
    ok = c.post(f"/api/online/vitals/{pid}", json.dumps({"values": {"hr": "72"}}), content_type="application/json")
    assert ok.status_code == 200, ok.content
    (oid,) = ok.json()["ids"]
    obs = fhir_svc.resource_read(user=user, resource_type="Observation", resource_id=oid).body
    assert obs["valueQuantity"]["value"] == 72 and obs["subject"]["reference"] == f"Patient/{pid}"
    actions = {e.action for e in AuditEvent.objects.all() if pid in (e.patient_ids or [])}
    assert {"search", "read", "create"} <= actions


def test_someone_outside_the_care_team_reads_nothing(user: Any, other_user: Any) -> None:
    role_assign(user=user, role="physician")
    role_assign(user=other_user, role="physician")
    pid = _patient(user)
    c = _client(other_user)
    assert c.get(f"/api/online/chart/{pid}").status_code == 403
    assert c.post(f"/api/online/vitals/{pid}", json.dumps({"values": {"hr": "72"}}),
                  content_type="application/json").status_code == 403
    assert c.get("/api/online/patients", {"q": "okaf"}).json()["results"] == []
