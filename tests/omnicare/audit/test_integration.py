"""The audit trail as a user of the API sees it: every FHIR REST and sync interaction leaves an event."""

from __future__ import annotations

import json
from typing import Any

import pytest

from omnicare.audit.models import AuditEvent
from omnicare.audit.services import AuditUnavailable, audit_verify
from omnicare.fhir.models import ResourceVersion
from tests.omnicare.sync.conftest import SyncClient, observation, put


@pytest.fixture
def clinic(db: Any, user: Any, other_user: Any) -> Any:
    from omnicare.access.roles import PHYSICIAN, role_assign
    from tests.omnicare.sync.conftest import care_team, patient, practitioner, seed

    role_assign(user=user, role=PHYSICIAN)
    role_assign(user=other_user, role=PHYSICIAN)
    seed(practitioner(user.username), practitioner(other_user.username), patient("p1"), patient("p2"),
         care_team("p1", [user.username]), care_team("p2", [other_user.username]),
         observation("o1", "p1"), observation("o2", "p2"))
    return user


def last(**filters: Any) -> AuditEvent:
    ev = AuditEvent.objects.filter(**filters).order_by("-seq").first()
    assert ev is not None, f"no audit event with {filters}"
    return ev


def test_a_fhir_read_records_who_what_and_which_patient(clinic: Any, api: Any) -> None:
    assert api.get("/fhir/R4/Observation/o1").status_code == 200
    ev = last(action="read")
    assert (ev.username, ev.roles, ev.resource_type, ev.resource_id) == ("dr.test", ["physician"], "Observation", "o1")
    assert ev.patient_ids == ["p1"] and ev.outcome == "success"


def test_a_denied_read_is_recorded_as_denied(clinic: Any, api: Any) -> None:
    assert api.get("/fhir/R4/Observation/o2").status_code == 403
    ev = last(action="read")
    assert (ev.outcome, ev.resource_id, ev.patient_ids) == ("denied", "o2", ["p2"])


def test_search_is_one_event_per_page_with_its_patients(clinic: Any, api: Any) -> None:
    before = AuditEvent.objects.count()
    r = api.get("/fhir/R4/Observation")
    assert r.status_code == 200 and len(r.json()["entry"]) == 1  # only p1's: scope filter
    assert AuditEvent.objects.count() == before + 1
    ev = last(action="search")
    assert ev.patient_ids == ["p1"] and ev.detail["resources"] == ["Observation/o1"]


def test_writes_are_audited_with_their_version(clinic: Any, api: Any) -> None:
    body = observation("o1", "p1", 81.0)
    r = api.put("/fhir/R4/Observation/o1", json.dumps(body), content_type="application/fhir+json")
    assert r.status_code == 200
    ev = last(action="update")
    assert ev.patient_ids == ["p1"] and ev.detail["version"] == 2
    assert api.delete("/fhir/R4/Observation/o1").status_code == 204
    assert last(action="delete").resource_id == "o1"


def test_a_sync_pull_page_creates_one_event_with_its_patients(clinic: Any, api: Any) -> None:
    before = AuditEvent.objects.count()
    page = SyncClient(api, "dev-a").pull()
    assert page["changes"]
    assert AuditEvent.objects.count() == before + 1
    ev = last(action="sync-pull")
    assert ev.patient_ids == ["p1"] and ev.device_id == "dev-a" and ev.detail["changes"] == len(page["changes"])


def test_push_batch_event_and_denied_mutations(clinic: Any, api: Any) -> None:
    results = SyncClient(api, "dev-b").push(put(observation("o1", "p1", 90.0), 1), put(observation("o9", "p2"), None))
    assert [r["status"] for r in results] == ["applied", "rejected"]
    batch = last(action="sync-push", outcome="success")
    assert batch.patient_ids == ["p1"] and batch.device_id == "dev-b"
    assert batch.detail["statuses"] == {"applied": 1, "rejected": 1}
    denied = last(action="sync-push", outcome="denied")
    assert (denied.resource_id, denied.patient_ids) == ("o9", ["p2"])


def test_writes_fail_closed_when_the_trail_is_down(clinic: Any, api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def down(*args: Any, **kwargs: Any) -> Any:
        raise AuditUnavailable("audit trail unavailable")

    monkeypatch.setattr("omnicare.fhir.trail.audit_record", down)
    versions = ResourceVersion.objects.count()
    body = observation("o1", "p1", 99.0)
    r = api.put("/fhir/R4/Observation/o1", json.dumps(body), content_type="application/fhir+json")
    assert r.status_code == 503 and r.json()["resourceType"] == "OperationOutcome"
    r = SyncClient(api, "dev-c").post("/push", {"deviceId": "dev-c", "mutations": [put(observation("o1", "p1", 98.0), 1)]})
    assert r.status_code == 503
    assert ResourceVersion.objects.count() == versions  # nothing written that was not audited
    # Reads fail closed too: no data without a record of who saw it.
    assert api.get("/fhir/R4/Observation/o1").status_code == 503
    assert SyncClient(api, "dev-c").post("/pull", {"cursor": None, "limit": 10}).status_code == 503


def test_audit_verify_passes_after_a_mixed_workload(clinic: Any, api: Any) -> None:
    sync = SyncClient(api, "dev-d")
    sync.pull_all()
    sync.push(put(observation("o1", "p1", 70.5), 1), put(observation("o3", "p1"), None), put(observation("o4", "p2"), None))
    api.get("/fhir/R4/Observation/o2")
    api.get("/fhir/R4/Observation?patient=p1")
    api.get("/fhir/R4/Observation/o1/_history")
    new = observation("x", "p1")
    del new["id"]
    assert api.post("/fhir/R4/Observation", json.dumps(new), content_type="application/fhir+json").status_code == 201
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Observation/o1"}},
        {"request": {"method": "GET", "url": "Observation/o2"}},
    ]}
    assert api.post("/fhir/R4/", json.dumps(bundle), content_type="application/fhir+json").status_code == 200
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"sync-pull", "sync-push", "read", "search", "history", "create", "batch"} <= actions
    report = audit_verify()
    assert report.ok, report.problems
