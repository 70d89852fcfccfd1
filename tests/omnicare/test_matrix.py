"""The permission matrix end to end: every role × resource type × action, on every server surface.

Generated from ``omnicare.access.roles`` (ROLES, RESOURCE_TYPES, allowed_actions), so it cannot drift from
the matrix a privacy officer reads. For each role, one user with only that role, a Practitioner that is
them, a patient on their care team (``pin``) and one that is not (``pout``), and one instance of every
resource type in each patient's compartment. Then, per surface, one request per combination:

* FHIR REST: search, read, update, create, delete — allowed exactly when the role grants the action on the
  type AND the role's patient scope reaches the instance (care-team: ``pin`` only; all: both; none: no
  patient data; Practitioner is outside patient compartments). Denied means 403, nothing else.
* sync pull: exactly the readable resources of the device scope are delivered (devices replicate the
  care team and grants, never "all").
* sync push: per mutation (create, update, delete), ``applied`` when allowed, else ``rejected`` (forbidden).
* WebSocket subscribe: hints name exactly what a pull would deliver.

A mismatch in either direction fails with the full list. 100 % of combinations not granted must be denied.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from omnicare.access import roles as rbac
from omnicare.fhir.search import COMPARTMENT, SUPPORTED_TYPES

ROLES = sorted(rbac.ROLES)
#: Types the FHIR store holds that the matrix speaks about (AuditEvent lives in the audit trail).
STORE_TYPES = [t for t in rbac.RESOURCE_TYPES if t in SUPPORTED_TYPES]
#: Types the matrix names that the store does not hold: denied on every store surface, for every role.
NON_STORE_TYPES = [t for t in rbac.RESOURCE_TYPES if t not in SUPPORTED_TYPES]
# Written last: they can change the scope the other checks rely on.
ORDER = sorted(STORE_TYPES, key=lambda t: (t in ("CareTeam", "Patient"), t))
PIN, POUT = "pin", "pout"
FHIR = "application/fhir+json"


def body(rt: str, rid: str, pid: str) -> dict[str, Any]:
    subj = {"reference": f"Patient/{pid}"}
    extra: dict[str, Any] = {
        "Patient": {"name": [{"family": "Matrix"}]},
        "Practitioner": {"name": [{"family": "Matrix"}]},
        "CareTeam": {"status": "active", "subject": subj,
                     "participant": [{"member": {"reference": "Practitioner/pr-other"}}]},
        "Encounter": {"status": "finished", "subject": subj,
                      "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}},
        "Observation": {"status": "final", "code": {"text": "pulse"}, "subject": subj},
        "Condition": {"code": {"text": "asthma"}, "subject": subj},
        "AllergyIntolerance": {"code": {"text": "peanut"}, "patient": subj},
        "MedicationRequest": {"status": "active", "intent": "order", "subject": subj,
                              "medicationCodeableConcept": {"text": "aspirin"}},
        "DocumentReference": {"status": "current", "subject": subj,
                              "content": [{"attachment": {"contentType": "text/plain", "data": "aGk="}}]},
        "Communication": {"status": "completed", "subject": subj},
        # The rest of a US Core record (issue 15); reference data first (outside patient compartments).
        "Organization": {"name": "Matrix clinic"},
        "Location": {"name": "Matrix ward"},
        "PractitionerRole": {"active": True, "practitioner": {"reference": "Practitioner/pr-other"}},
        "Medication": {"code": {"text": "aspirin"}},
        "Immunization": {"status": "completed", "vaccineCode": {"text": "influenza"}, "patient": subj,
                         "occurrenceDateTime": "2024-01-01"},
        "Procedure": {"status": "completed", "subject": subj, "code": {"text": "appendectomy"}},
        "DiagnosticReport": {"status": "final", "code": {"text": "CBC"}, "subject": subj},
        "ServiceRequest": {"status": "active", "intent": "order", "subject": subj},
        "MedicationStatement": {"status": "active", "medicationCodeableConcept": {"text": "aspirin"},
                                "subject": subj},
        "MedicationAdministration": {"status": "completed", "medicationCodeableConcept": {"text": "aspirin"},
                                     "subject": subj, "effectiveDateTime": "2024-01-01T10:00:00Z"},
        "MedicationDispense": {"status": "completed", "medicationCodeableConcept": {"text": "aspirin"},
                               "subject": subj},
        "Appointment": {"status": "booked", "participant": [{"actor": subj, "status": "accepted"}]},
        "Device": {"patient": subj},
        "Goal": {"lifecycleStatus": "active", "description": {"text": "walk daily"}, "subject": subj},
        "CarePlan": {"status": "active", "intent": "plan", "subject": subj},
        "Coverage": {"status": "active", "beneficiary": subj, "payor": [{"reference": "Organization/org-x"}]},
        "Provenance": {"target": [subj], "recorded": "2024-01-01T00:00:00Z",
                       "agent": [{"who": {"reference": "Practitioner/pr-other"}}]},
        "DetectedIssue": {"status": "final", "patient": subj},
        "Flag": {"status": "active", "code": {"text": "fall risk"}, "subject": subj},
        "Specimen": {"subject": subj},
        "QuestionnaireResponse": {"status": "completed", "subject": subj},
        "RelatedPerson": {"patient": subj},
        "EpisodeOfCare": {"status": "active", "patient": subj},
        "Subscription": {"status": "off", "reason": "matrix", "criteria": f"Observation?patient={pid}",
                         "channel": {"type": "rest-hook", "endpoint": "http://127.0.0.1:9/hook"}},
    }[rt]
    return {"resourceType": rt, "id": rid, **extra}


def instance(rt: str, where: str) -> str:
    return where if rt == "Patient" else f"{rt.lower()}-{where}"


def granted(role: str, rt: str, action: str) -> bool:
    return action in rbac.allowed_actions(role, rt)


def reaches(role: str, rt: str, where: str) -> bool:
    """Whether the role's patient scope covers an instance in ``where``'s compartment."""
    if rt != "Patient" and not COMPARTMENT.get(rt):
        return True  # not patient data (Practitioner)
    scope = rbac.ROLES[role].scope
    return scope == "all" or (scope == "care-team" and where == PIN)


def allowed(role: str, rt: str, action: str, where: str) -> bool:
    if not granted(role, rt, action):
        return False
    if rt == "Patient" and action == "create":
        return True  # registering a new patient: nobody's chart yet
    return reaches(role, rt, where)


def seeded() -> list[dict[str, Any]]:
    out = [body("Patient", PIN, PIN), body("Patient", POUT, POUT)]
    for rt in STORE_TYPES:
        if rt != "Patient":
            out += [body(rt, instance(rt, PIN), PIN), body(rt, instance(rt, POUT), POUT)]
    return out


def setup_world(django_user_model: Any, role: str) -> Any:
    from omnicare.fhir.services import resources_import

    user = django_user_model.objects.create_user(username=f"m.{role}")
    rbac.role_assign(user=user, role=role)
    me = {"resourceType": "Practitioner", "id": "pr-me",
          "identifier": [{"system": "urn:omnicare:user", "value": user.username}]}
    teams = [
        {"resourceType": "CareTeam", "id": "ct-in", "status": "active", "subject": {"reference": "Patient/pin"},
         "participant": [{"member": {"reference": "Practitioner/pr-me"}}]},
        {"resourceType": "CareTeam", "id": "ct-out", "status": "active", "subject": {"reference": "Patient/pout"},
         "participant": [{"member": {"reference": "Practitioner/pr-other"}}]},
    ]
    other = {"resourceType": "Practitioner", "id": "pr-other", "name": [{"family": "Other"}]}
    resources_import(resources=[me, other, *seeded(), *teams])
    return user


def client_for(user: Any) -> Any:
    from django.test import Client

    from omnicare.access.services import token_create

    return Client(HTTP_AUTHORIZATION=f"Bearer {token_create(user=user, name='matrix')}")


def expected_pull(role: str) -> set[tuple[str, str]]:
    """What a device of this role receives: readable resources of the care team (+ own Practitioner)."""
    out: set[tuple[str, str]] = set()
    on_device = rbac.ROLES[role].scope != "none"
    if granted(role, "Practitioner", "read"):
        out.add(("Practitioner", "pr-me"))
    for rt in STORE_TYPES:
        in_compartment = rt == "Patient" or bool(COMPARTMENT.get(rt))  # reference data does not replicate
        if granted(role, rt, "read") and on_device and in_compartment:
            out.add((rt, instance(rt, PIN)))
    if granted(role, "CareTeam", "read") and on_device:
        out.add(("CareTeam", "ct-in"))
    return out


def report(problems: list[str]) -> str:
    return f"{len(problems)} combination(s) differ from omnicare.access.roles:\n  " + "\n  ".join(problems)


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES)
def test_fhir_rest(role: str, django_user_model: Any) -> None:
    client = client_for(setup_world(django_user_model, role))
    problems: list[str] = []

    def expect(label: str, ok: bool, status: int, good: tuple[int, ...]) -> None:
        if ok and status not in good:
            problems.append(f"{role} {label}: expected allowed {good}, got {status}")
        if not ok and status != 403:
            problems.append(f"{role} {label}: expected 403, got {status}")

    for rt in ORDER:
        r = client.get(f"/fhir/R4/{rt}", {"_count": "100"})
        expect(f"search {rt}", granted(role, rt, "search"), r.status_code, (200,))
        if r.status_code == 200:
            got = {e["resource"]["id"] for e in r.json().get("entry", [])}
            for where in (PIN, POUT):
                if (instance(rt, where) in got) != reaches(role, rt, where):
                    problems.append(f"{role} search {rt}: {instance(rt, where)} delivered={not reaches(role, rt, where)}")
        for where in (PIN, POUT):
            rid, pid = instance(rt, where), where
            r = client.get(f"/fhir/R4/{rt}/{rid}")
            expect(f"read {rt}/{where}", allowed(role, rt, "read", where), r.status_code, (200,))
            r = client.get(f"/fhir/R4/{rt}/{rid}/_history/1")
            expect(f"vread {rt}/{where}", allowed(role, rt, "read", where), r.status_code, (200,))
            r = client.put(f"/fhir/R4/{rt}/{rid}", json.dumps(body(rt, rid, pid)), content_type=FHIR)
            expect(f"update {rt}/{where}", allowed(role, rt, "update", where), r.status_code, (200,))
            new = body(rt, "x", pid)
            del new["id"]
            r = client.post(f"/fhir/R4/{rt}", json.dumps(new), content_type=FHIR)
            expect(f"create {rt}/{where}", allowed(role, rt, "create", where), r.status_code, (201,))
        for where in (PIN, POUT):
            r = client.delete(f"/fhir/R4/{rt}/{instance(rt, where)}")
            expect(f"delete {rt}/{where}", allowed(role, rt, "delete", where), r.status_code, (204,))
    for rt in NON_STORE_TYPES:  # AuditEvent: read through the audit trail API only
        r = client.get("/api/audit/events")
        expect(f"search {rt} (audit API)", granted(role, rt, "search"), r.status_code, (200,))
        r = client.post(f"/fhir/R4/{rt}", json.dumps({"resourceType": rt}), content_type=FHIR)
        if r.status_code < 400:
            problems.append(f"{role} create {rt} in the FHIR store: {r.status_code}")
    assert not problems, report(problems)


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES)
def test_sync_pull_delivers_exactly_what_the_role_may_read(role: str, django_user_model: Any) -> None:
    client = client_for(setup_world(django_user_model, role))
    got: set[tuple[str, str]] = set()
    cursor = None
    client.post("/api/sync/devices", json.dumps({"deviceId": "m1"}), content_type="application/json")
    for _ in range(50):
        r = client.post("/api/sync/pull?deviceId=m1", json.dumps({"cursor": cursor, "limit": 500}),
                        content_type="application/json")
        assert r.status_code == 200, r.content
        page = r.json()
        got |= {(c["resourceType"], c["id"]) for c in page["changes"]}
        cursor = page["cursor"]
        if not page["hasMore"]:
            break
    want = expected_pull(role)
    problems = [f"{role} pull: delivered {k} (not allowed)" for k in sorted(got - want)]
    problems += [f"{role} pull: missing {k}" for k in sorted(want - got)]
    assert not problems, report(problems)


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES)
def test_sync_push_per_mutation(role: str, django_user_model: Any) -> None:
    from omnicare.fhir.models import Resource

    client = client_for(setup_world(django_user_model, role))
    problems: list[str] = []

    def version(rt: str, rid: str) -> int:
        return int(Resource.objects.get(resource_type=rt, resource_id=rid).version_id)

    def push(action: str, mutations: list[tuple[str, str, dict[str, Any]]]) -> None:
        r = client.post("/api/sync/push", json.dumps({"deviceId": "m1", "mutations": [m for _, _, m in mutations]}),
                        content_type="application/json")
        assert r.status_code == 200, r.content
        for (rt, where, _), res in zip(mutations, r.json()["results"], strict=True):
            ok = rt in STORE_TYPES and allowed(role, rt, action, where)
            if ok and res["status"] != "applied":
                problems.append(f"{role} push {action} {rt}/{where}: expected applied, got {res}")
            if not ok and res["status"] != "rejected":
                problems.append(f"{role} push {action} {rt}/{where}: expected rejected, got {res['status']}")
            if not ok and rt in STORE_TYPES and res["outcome"]["issue"][0]["code"] != "forbidden":
                problems.append(f"{role} push {action} {rt}/{where}: expected forbidden, got {res['outcome']}")

    def mid() -> str:
        return str(uuid.uuid4())

    creates, updates, deletes = [], [], []
    for rt in ORDER:
        for where in (PIN, POUT):
            new_id = f"new-{rt.lower()}-{where}"
            creates.append((rt, where, {"mutationId": mid(), "op": "put", "resourceType": rt, "id": new_id,
                                        "baseVersion": None, "resource": body(rt, new_id, where)}))
            rid = instance(rt, where)
            updates.append((rt, where, {"mutationId": mid(), "op": "put", "resourceType": rt, "id": rid,
                                        "baseVersion": version(rt, rid), "resource": body(rt, rid, where)}))
    for rt in NON_STORE_TYPES:
        creates.append((rt, PIN, {"mutationId": mid(), "op": "put", "resourceType": rt, "id": "ae-1",
                                  "baseVersion": None, "resource": {"resourceType": rt}}))
    push("create", creates)
    push("update", updates)
    for rt in ORDER:
        for where in (PIN, POUT):
            rid = instance(rt, where)
            deletes.append((rt, where, {"mutationId": mid(), "op": "delete", "resourceType": rt, "id": rid,
                                        "baseVersion": version(rt, rid)}))
    push("delete", deletes)
    assert not problems, report(problems)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("role", ROLES)
async def test_websocket_hints_name_only_what_the_role_may_read(
    role: str, django_user_model: Any, settings: Any
) -> None:
    from omnicare.access.services import token_create
    from omnicare.asgi import application
    from omnicare.fhir.services import resources_import

    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    user = await database_sync_to_async(setup_world)(django_user_model, role)
    tok = await database_sync_to_async(token_create)(user=user, name="ws")
    comm = WebsocketCommunicator(application, "/ws/sync", headers=[(b"origin", b"http://127.0.0.1")])
    assert (await comm.connect())[0]
    await comm.send_json_to({"type": "auth", "token": tok})
    assert (await comm.receive_json_from(timeout=5))["type"] == "ready"
    # A write to every seeded resource (not the care teams: they would change the scope under test).
    rewrite = seeded() + [{"resourceType": "Practitioner", "id": "pr-me",
                           "identifier": [{"system": "urn:omnicare:user", "value": user.username}]}]
    await database_sync_to_async(resources_import)(resources=rewrite)
    got: set[tuple[str, str]] = set()
    while not await comm.receive_nothing(timeout=0.3):
        msg = await comm.receive_json_from(timeout=5)
        got |= {(c["resourceType"], c["id"]) for c in msg.get("changes", [])}
    await comm.disconnect()
    want = expected_pull(role) - {("CareTeam", "ct-in")}
    problems = [f"{role} ws: hinted {k} (not allowed)" for k in sorted(got - want)]
    problems += [f"{role} ws: no hint for {k}" for k in sorted(want - got)]
    assert not problems, report(problems)
