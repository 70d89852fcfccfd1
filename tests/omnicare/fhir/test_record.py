"""The whole clinical record (issue 15): every US Core type stored, versioned and searchable with the
official R4 search parameters; _include/_revinclude; required bindings refused on every write path; the
integration role; a registering clinician joins the patient's care team. Real access policy throughout."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from django.test import Client

from omnicare.access.roles import role_assign
from omnicare.access.services import token_create
from omnicare.fhir.search import COMPARTMENT, SEARCH_PARAMS, SUPPORTED_TYPES
from omnicare.fhir.services import resources_import

from .conftest import BASE, outcome_of, row_counts

REAL_ACCESS = True
pytestmark = pytest.mark.django_db
FHIR = "application/fhir+json"
LOINC = "http://loinc.org"
US_CORE_TYPES = (
    "Organization", "Location", "PractitionerRole", "Immunization", "Procedure", "DiagnosticReport",
    "ServiceRequest", "MedicationStatement", "MedicationAdministration", "MedicationDispense", "Medication",
    "Appointment", "Device", "Goal", "CarePlan", "Coverage", "Provenance", "DetectedIssue", "Flag",
)


def client_of(user: Any) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {token_create(user=user, name='t')}", HTTP_ACCEPT=FHIR)


def make_user(django_user_model: Any, name: str, role: str) -> Any:
    u = django_user_model.objects.create_user(username=name, password="correct horse battery staple")
    role_assign(user=u, role=role)
    return u


@pytest.fixture
def world(django_user_model: Any) -> dict[str, Any]:
    """dr.a (physician) is on pat-a's care team; pat-b belongs to someone else; an integration account."""
    dr = make_user(django_user_model, "dr.a", "physician")
    integ = make_user(django_user_model, "interface.engine", "integration")
    resources_import(resources=[
        {"resourceType": "Patient", "id": "pat-a", "name": [{"family": "Alpha"}]},
        {"resourceType": "Patient", "id": "pat-b", "name": [{"family": "Beta"}]},
        {"resourceType": "Practitioner", "id": "pr-a",
         "identifier": [{"system": "urn:omnicare:user", "value": "dr.a"}]},
        {"resourceType": "CareTeam", "id": "ct-a", "status": "active", "subject": {"reference": "Patient/pat-a"},
         "participant": [{"member": {"reference": "Practitioner/pr-a"}}]},
    ])
    return {"dr": client_of(dr), "integ": client_of(integ), "dr_user": dr, "integ_user": integ}


def minimal(rt: str, pid: str) -> dict[str, Any]:
    from tests.omnicare.test_matrix import body

    b = body(rt, "x", pid)
    del b["id"]
    return b


def test_every_us_core_type_is_stored_versioned_and_searchable_by_patient(world: dict[str, Any]) -> None:
    integ = world["integ"]
    for rt in US_CORE_TYPES:
        assert rt in SUPPORTED_TYPES
        r = integ.post(f"{BASE}/{rt}", json.dumps(minimal(rt, "pat-a")), content_type=FHIR)
        assert r.status_code == 201, (rt, r.content)
        res = r.json()
        res["meta"] = {}
        res.setdefault("text", {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">v2</div>'})
        r = integ.put(f"{BASE}/{rt}/{res['id']}", json.dumps(res), content_type=FHIR)
        assert r.status_code == 200 and r.json()["meta"]["versionId"] == "2", (rt, r.content)
        assert integ.get(f"{BASE}/{rt}/{res['id']}/_history/1").status_code == 200
        if COMPARTMENT.get(rt):  # patient data: found through the patient and visible to its care team
            name = next(n for n in ("patient", "subject", "beneficiary", "target") if n in SEARCH_PARAMS[rt])
            got = integ.get(f"{BASE}/{rt}", {name: "Patient/pat-a"}).json()
            assert [e["resource"]["id"] for e in got["entry"]] == [res["id"]], rt
            assert world["dr"].get(f"{BASE}/{rt}/{res['id']}").status_code == 200, rt
        else:  # reference data: not patient data, every clinical role reads it
            assert world["dr"].get(f"{BASE}/{rt}/{res['id']}").status_code == 200, rt


def test_any_other_r4_type_is_accepted_without_code_changes(world: dict[str, Any]) -> None:
    integ = world["integ"]
    for rt, res in (
        ("NutritionOrder", {"status": "active", "intent": "order", "patient": {"reference": "Patient/pat-a"},
                            "dateTime": "2024-05-01"}),
        ("AdverseEvent", {"actuality": "actual", "subject": {"reference": "Patient/pat-a"}}),
        ("Basic", {"code": {"text": "note"}, "subject": {"reference": "Patient/pat-a"}}),
    ):
        r = integ.post(f"{BASE}/{rt}", json.dumps({"resourceType": rt, **res}), content_type=FHIR)
        assert r.status_code == 201, (rt, r.content)
        found = integ.get(f"{BASE}/{rt}", {"patient": "pat-a"}).json()
        assert found["total"] == 1, rt
    assert integ.post(f"{BASE}/Unicorn", json.dumps({"resourceType": "Unicorn"}), content_type=FHIR).status_code == 404


def test_us_core_mandatory_searches(world: dict[str, Any]) -> None:
    integ = world["integ"]

    def obs(code: str, cat: str, when: str, pid: str = "pat-a") -> dict[str, Any]:
        return {
            "resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": cat}]}],
            "code": {"coding": [{"system": LOINC, "code": code}]},
            "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": when,
            "identifier": [{"system": "urn:lab", "value": f"{code}-{when}-{pid}"}],
        }

    for o in (obs("718-7", "laboratory", "2024-01-05"), obs("2339-0", "laboratory", "2024-03-01"),
              obs("8867-4", "vital-signs", "2024-03-02"), obs("718-7", "laboratory", "2024-01-05", "pat-b")):
        assert integ.post(f"{BASE}/Observation", json.dumps(o), content_type=FHIR).status_code == 201

    def ids(**params: str) -> int:
        body = integ.get(f"{BASE}/Observation", params).json()
        return int(body["total"])

    assert ids(patient="pat-a", category="laboratory") == 2
    assert ids(patient="pat-a", code=f"{LOINC}|718-7") == 1
    assert ids(patient="pat-a", category="laboratory", date="ge2024-02-01") == 1
    assert ids(patient="pat-a", code="718-7,8867-4") == 2
    assert ids(identifier="urn:lab|718-7-2024-01-05-pat-b") == 1
    # The physician's search of the same never crosses into pat-b's chart.
    body = world["dr"].get(f"{BASE}/Observation", {"code": "718-7"}).json()
    assert [e["resource"]["subject"]["reference"] for e in body["entry"]] == ["Patient/pat-a"]


def test_include_and_revinclude_for_chart_queries(world: dict[str, Any]) -> None:
    integ = world["integ"]
    med = {"resourceType": "Medication", "id": "med-1", "code": {"text": "amoxicillin 500 mg"}}
    rx = {"resourceType": "MedicationRequest", "id": "rx-1", "status": "active", "intent": "order",
          "subject": {"reference": "Patient/pat-a"}, "medicationReference": {"reference": "Medication/med-1"}}
    result = {"resourceType": "Observation", "id": "hb-1", "status": "final", "code": {"text": "Hemoglobin"},
              "subject": {"reference": "Patient/pat-a"}, "valueQuantity": {"value": 13.2, "unit": "g/dL"}}
    report = {"resourceType": "DiagnosticReport", "id": "cbc-1", "status": "final", "code": {"text": "CBC"},
              "subject": {"reference": "Patient/pat-a"}, "result": [{"reference": "Observation/hb-1"}]}
    other = {"resourceType": "DiagnosticReport", "id": "cbc-b", "status": "final", "code": {"text": "CBC"},
             "subject": {"reference": "Patient/pat-b"}, "result": [{"reference": "Observation/hb-1"}]}
    for res in (med, rx, result, report, other):
        assert integ.put(f"{BASE}/{res['resourceType']}/{res['id']}", json.dumps(res), content_type=FHIR).status_code == 201
    dr = world["dr"]
    b = dr.get(f"{BASE}/MedicationRequest", {"patient": "pat-a", "_include": "MedicationRequest:medication"}).json()
    assert [(e["resource"]["id"], e["search"]["mode"]) for e in b["entry"]] == [("rx-1", "match"), ("med-1", "include")]
    b = dr.get(f"{BASE}/DiagnosticReport", {"patient": "pat-a", "_include": "DiagnosticReport:result"}).json()
    assert [e["resource"]["id"] for e in b["entry"]] == ["cbc-1", "hb-1"]
    # revinclude: the reports that cite this result, filtered by scope (pat-b's report is not shown).
    b = dr.get(f"{BASE}/Observation", {"_id": "hb-1", "_revinclude": "DiagnosticReport:result"}).json()
    assert [e["resource"]["id"] for e in b["entry"]] == ["hb-1", "cbc-1"]
    assert integ.get(f"{BASE}/Observation", {"_id": "hb-1", "_revinclude": "DiagnosticReport:result"}).json()["entry"][2:]
    bad = dr.get(f"{BASE}/MedicationRequest", {"_include": "MedicationRequest:status"})
    assert bad.status_code == 400 and "_include" in outcome_of(bad)["issue"][0]["expression"]


BAD_OBS = {"resourceType": "Observation", "id": "bad-1", "status": "not-a-status", "code": {"text": "hr"},
           "subject": {"reference": "Patient/pat-a"}}


def _bad_binding(response: Any) -> None:
    assert response.status_code == 400, response.content
    issue = outcome_of(response)["issue"][0]
    assert issue["code"] == "code-invalid" and "Observation.status" in issue["expression"]


def test_required_binding_is_refused_on_rest_and_transaction_and_nothing_is_written(world: dict[str, Any]) -> None:
    integ = world["integ"]
    before = row_counts()
    _bad_binding(integ.put(f"{BASE}/Observation/bad-1", json.dumps(BAD_OBS), content_type=FHIR))
    _bad_binding(integ.post(f"{BASE}/Observation", json.dumps({k: v for k, v in BAD_OBS.items() if k != "id"}),
                            content_type=FHIR))
    good = {**BAD_OBS, "id": "good-1", "status": "final"}
    tx = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": good, "request": {"method": "PUT", "url": "Observation/good-1"}},
        {"resource": BAD_OBS, "request": {"method": "PUT", "url": "Observation/bad-1"}},
    ]}
    _bad_binding(integ.post(f"{BASE}/", json.dumps(tx), content_type=FHIR))
    nested = {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"},
              "subject": {"reference": "Patient/pat-a"}, "participant": [], "statusHistory": [
                  {"status": "bogus", "period": {"start": "2024-01-01"}}]}
    r = integ.post(f"{BASE}/Encounter", json.dumps(nested), content_type=FHIR)
    assert r.status_code == 400 and outcome_of(r)["issue"][0]["expression"] == ["Encounter.statusHistory.status"]
    assert row_counts() == before


def test_required_binding_is_refused_on_sync_push(world: dict[str, Any]) -> None:
    dr = world["dr"]
    before = row_counts()
    r = dr.post("/api/sync/push", json.dumps({"deviceId": "d1", "mutations": [
        {"mutationId": str(uuid.uuid4()), "op": "put", "resourceType": "Observation", "id": "bad-1",
         "baseVersion": None, "resource": BAD_OBS}]}), content_type="application/json")
    assert r.status_code == 200, r.content
    res = r.json()["results"][0]
    assert res["status"] == "rejected" and res["outcome"]["issue"][0]["expression"] == ["Observation.status"]
    assert row_counts() == before


def test_integration_role_is_token_only_and_audited_as_itself(world: dict[str, Any]) -> None:
    from omnicare.audit.models import AuditEvent

    c = Client(enforce_csrf_checks=False)
    r = c.post("/api/auth/login", json.dumps({"username": "interface.engine", "password": "correct horse battery staple"}),
               content_type="application/json")
    assert r.status_code in (401, 403), r.content
    c.force_login(world["integ_user"])  # even a session obtained some other way is not accepted
    assert c.get(f"{BASE}/Patient/pat-b").status_code == 401
    r = world["integ"].get(f"{BASE}/Patient/pat-b")  # all patients, by token
    assert r.status_code == 200
    ev = AuditEvent.objects.filter(action="read", resource_type="Patient", resource_id="pat-b").order_by("-seq").first()
    assert ev is not None and ev.username == "interface.engine"


def test_clinician_registering_a_patient_joins_its_care_team_in_the_same_transaction(world: dict[str, Any]) -> None:
    dr = world["dr"]
    r = dr.post(f"{BASE}/Patient", json.dumps({"resourceType": "Patient", "name": [{"family": "Newborn"}]}),
                content_type=FHIR)
    assert r.status_code == 201, r.content
    pid = r.json()["id"]
    assert dr.get(f"{BASE}/Patient/{pid}").status_code == 200  # readable at once: the author is on the team
    teams = dr.get(f"{BASE}/CareTeam", {"patient": pid}).json()
    assert teams["total"] == 1
    assert teams["entry"][0]["resource"]["participant"][0]["member"]["reference"] == "Practitioner/pr-a"
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "weight"},
           "subject": {"reference": f"Patient/{pid}"}}
    assert dr.post(f"{BASE}/Observation", json.dumps(obs), content_type=FHIR).status_code == 201
    assert dr.get(f"{BASE}/Observation", {"patient": pid}).json()["total"] == 1
