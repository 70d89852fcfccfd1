"""Anti-rollback exchange (issue 17): the device lists the versions it holds; the server answers what is newer."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from omnicare.audit.models import AuditEvent
from tests.omnicare.sync.conftest import SyncClient, observation, seed


def test_stale_and_quarantined_copies_are_answered_with_the_current_version(clinic: Any, api: Any) -> None:
    sync = SyncClient(api, "tablet-1")
    sync.pull_all()
    seed(observation("o1", "p1", 81.0))  # o1 is now version 2 on the server
    r = sync.post("/verify", {"deviceId": "tablet-1", "held": [
        ["Observation", "o1", 1],  # rolled back (or not pulled yet): stale
        ["Patient", "p1", 1],  # current: nothing to say
        ["Patient", "p1x", 1],  # never existed
        ["Observation", "o2", 1],  # another clinician's patient: not visible, so "gone" (delete locally)
        ["Patient", "p1", 0],  # quarantined: "send me your copy"
    ]})
    assert r.status_code == 200, r.content
    body = r.json()
    assert [(c["resourceType"], c["id"], c["versionId"]) for c in body["changes"]] == [
        ("Observation", "o1", 2), ("Patient", "p1", 1)]
    assert body["changes"][0]["resource"]["valueQuantity"]["value"] == 81.0
    assert body["gone"] == [{"resourceType": "Patient", "id": "p1x"}, {"resourceType": "Observation", "id": "o2"}]
    assert body["stale"] == 1
    ev = AuditEvent.objects.filter(action="sync-verify").latest("seq")
    assert ev.patient_ids == ["p1"] and ev.device_id == "tablet-1"


def test_bad_verify_bodies_are_400_operation_outcomes(clinic: Any, api: Any) -> None:
    sync = SyncClient(api, "tablet-1")
    for body in ({"held": []}, {"deviceId": "t", "held": "x"}, {"deviceId": "t", "held": [["Patient", "p1"]]},
                 {"deviceId": "t", "held": [["Patient", "p1", -1]]}, {"deviceId": "t", "held": [["P", "\x00", 1]]},
                 {"deviceId": "t", "held": [["Patient", "p1", 1]] * 1001}):
        r = sync.post("/verify", body)
        assert r.status_code == 400, (body, r.content)
        assert r.json()["resourceType"] == "OperationOutcome"


def test_an_integrity_failure_reported_by_a_device_is_a_security_event(clinic: Any, api: Any) -> None:
    sync = SyncClient(api, "tablet-1")
    assert sync.post("/devices", {"deviceId": "tablet-1", "name": "ward tablet"}).status_code == 200
    sync.pull_all()
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    r = api.post("/api/audit/device-events", {"deviceId": "tablet-1", "events": [{
        "seq": 1, "action": "integrity", "occurred": now, "resourceType": "Observation",
        "id": "o1", "patientIds": ["p1"], "outcome": "failure", "purpose": "TREAT",
        "detail": {"reason": "rolled-back"}}]}, content_type="application/json")
    assert r.status_code == 200, r.content
    ev = AuditEvent.objects.get(action="integrity")
    assert ev.category == AuditEvent.CATEGORY_SECURITY and ev.outcome == "failure"
