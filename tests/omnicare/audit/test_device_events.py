"""Device audit events: offline events synced with a per-device sequence; gaps flagged; tampering detected."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from omnicare.access.services import DeviceRevoked, device_revoke, token_create
from omnicare.audit import services
from omnicare.audit.models import AuditEvent
from omnicare.audit.services import DeviceEvent
from omnicare.sync import device_audit

pytestmark = pytest.mark.django_db

DEVICE = "tablet-0042"


def _events(seqs: range | list[int]) -> list[DeviceEvent]:
    base = timezone.now() - timedelta(hours=3)
    return [DeviceEvent(seq=s, action="read", occurred=base + timedelta(minutes=s), resource_type="Observation",
                        resource_id=f"obs-{s}", patient_ids=["p1"]) for s in seqs]


@pytest.fixture
def nurse(make_user: Callable[..., Any], register_device: Callable[..., Any]) -> Any:
    user = make_user("nurse.offline", "nurse")
    register_device(user, DEVICE, ["p1"])
    return user


def test_ingest_is_idempotent_and_keeps_device_time(nurse: Any) -> None:
    r1 = device_audit.device_events_ingest(user=nurse, device_id=DEVICE, events=_events(range(1, 4)))
    r2 = device_audit.device_events_ingest(user=nurse, device_id=DEVICE, events=_events(range(1, 5)))
    assert (r1.accepted, r1.duplicates, r2.accepted, r2.duplicates, r2.last_seq) == (3, 0, 1, 3, 4)
    services.audit_sequence()
    ev = AuditEvent.objects.get(device_seq=2)
    assert ev.device_id == DEVICE and ev.username == "nurse.offline" and ev.device_time < ev.received_at
    assert services.audit_verify().ok


def test_a_gap_is_flagged_as_a_security_event(nurse: Any) -> None:
    result = device_audit.device_events_ingest(user=nurse, device_id=DEVICE, events=_events([1, 2, 5]))
    assert result.gaps == [(3, 4)]
    flag = AuditEvent.objects.get(action="device-gap")
    assert flag.category == "security" and flag.detail["missing"] == "3-4"
    services.audit_sequence()
    report = services.audit_verify()
    assert report.ok and any("3..4 never arrived" in w.message for w in report.warnings)
    # The late events arrive: the gap closes and is not flagged again.
    assert device_audit.device_events_ingest(user=nurse, device_id=DEVICE, events=_events([3, 4])).gaps == []
    assert AuditEvent.objects.filter(action="device-gap").count() == 1


def test_a_revoked_device_is_refused_and_told_to_wipe(nurse: Any, make_user: Callable[..., Any]) -> None:
    admin = make_user("it.admin", "administrator")
    device_revoke(owner=nurse, device_id=DEVICE, by=admin, reason="stolen from car")
    with pytest.raises(DeviceRevoked) as exc:
        device_audit.device_events_ingest(user=nurse, device_id=DEVICE, events=_events([1]))
    assert exc.value.headers == {"OmniCare-Device": "revoked; wipe"}
    assert exc.value.outcome()["issue"][0]["details"]["coding"][0]["code"] == "device-revoked"
    assert AuditEvent.objects.filter(action="device-revoke", device_id=DEVICE).count() == 1


@pytest.fixture
def synced(nurse: Any) -> list[AuditEvent]:
    device_audit.device_events_ingest(user=nurse, device_id=DEVICE, events=_events(range(1, 9)))
    services.audit_checkpoint()
    assert services.audit_verify().ok
    return list(AuditEvent.objects.filter(device_seq__isnull=False).order_by("seq"))


def test_device_event_modified(synced: list[AuditEvent], tamper: Callable[..., None]) -> None:
    tamper("UPDATE audit_auditevent SET resource_id = 'obs-x' WHERE device_id = %s AND device_seq = 3", [DEVICE])
    report = services.audit_verify()
    assert any(p.kind == "modified" and p.seq == synced[2].seq for p in report.problems)


def test_device_event_deleted(synced: list[AuditEvent], tamper: Callable[..., None]) -> None:
    tamper("DELETE FROM audit_auditevent WHERE device_id = %s AND device_seq = 5", [DEVICE])
    report = services.audit_verify()
    assert any(p.kind == "deleted" and p.seq == synced[4].seq for p in report.problems)
    assert any("5..5 never arrived" in w.message for w in report.warnings)


def test_device_event_inserted(synced: list[AuditEvent], tamper: Callable[..., None]) -> None:
    last = synced[-1]
    tamper(
        "INSERT INTO audit_auditevent (seq, category, action, outcome, purpose, user_id, username, roles, "
        "resource_type, resource_id, patient_ids, device_id, device_seq, device_time, received_at, detail, "
        "prev_hash, hash) SELECT seq + 1, category, action, outcome, purpose, user_id, username, roles, "
        "resource_type, 'obs-forged', patient_ids, device_id, device_seq + 1, device_time, received_at, detail, "
        "hash, hash FROM audit_auditevent WHERE seq = %s", [last.seq])
    report = services.audit_verify()
    assert any(p.kind in {"modified", "head"} and p.seq == last.seq + 1 for p in report.problems)


def test_device_events_reordered(synced: list[AuditEvent], tamper: Callable[..., None]) -> None:
    a, b = synced[1], synced[2]
    tamper("UPDATE audit_auditevent SET device_seq = -1 WHERE seq = %s", [a.seq])
    tamper("UPDATE audit_auditevent SET device_seq = %s WHERE seq = %s", [a.device_seq, b.seq])
    tamper("UPDATE audit_auditevent SET device_seq = %s WHERE seq = %s", [b.device_seq, a.seq])
    report = services.audit_verify()
    assert {a.seq, b.seq} <= {p.seq for p in report.problems if p.kind == "modified"}


def test_device_events_truncated(synced: list[AuditEvent], tamper: Callable[..., None]) -> None:
    keep = synced[5]
    tamper("DELETE FROM audit_auditevent WHERE seq > %s", [keep.seq])
    tamper("UPDATE audit_chainhead SET seq = %s, hash = %s", [keep.seq, keep.hash])
    report = services.audit_verify()
    assert any(p.kind == "truncated" and p.seq == keep.seq + 1 for p in report.problems)


def test_device_events_over_http(nurse: Any, http_mounted: Callable[[str], None]) -> None:
    http_mounted("/api/audit/device-events")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token_create(user=nurse, name='t')}")
    when = (timezone.now() - timedelta(hours=1)).isoformat()
    body = {"deviceId": DEVICE, "events": [
        {"seq": s, "action": "read", "occurred": when, "resourceType": "Patient", "id": "p1",
         "patientIds": ["p1"]} for s in (1, 2, 4)]}
    before = AuditEvent.objects.count()
    r = client.post("/api/audit/device-events", body, content_type="application/json")
    assert r.status_code == 200, r.content
    assert r.json() == {"accepted": 3, "duplicates": 0, "gaps": [[3, 3]], "lastSeq": 4}
    bad = client.post("/api/audit/device-events", {"deviceId": DEVICE, "events": [
        {"seq": 5, "action": "steal", "occurred": "2026-11-20T10:00:00Z"}]}, content_type="application/json")
    assert bad.status_code == 400
    huge = client.post("/api/audit/device-events", {"deviceId": DEVICE, "events": [
        {"seq": 2**63, "action": "read", "occurred": "2026-11-20T10:00:00Z"}]}, content_type="application/json")
    assert huge.status_code == 400
    assert AuditEvent.objects.count() == before + 4  # 3 events + the gap flag: rejected requests changed nothing


def test_a_rewrite_seen_by_a_device_is_a_security_event_on_the_privacy_officers_dashboard(nurse: Any) -> None:
    """Issue 10: the tablet's witness found the server's audit history rewritten; the event it queues reaches
    the trail as a security event, the security panel counts it and an alert is raised for the auditors."""
    from omnicare.ops import dashboard
    from omnicare.ops import services as ops

    seen = DeviceEvent(seq=1, action="audit-witness", occurred=timezone.now() - timedelta(minutes=1),
                       outcome="failure", detail={"reason": "the audit log of size 12 is not a prefix of size 51: "
                                                            "history was rewritten", "heldSize": "12",
                                                  "offeredSize": "51"})
    assert device_audit.device_events_ingest(user=nurse, device_id=DEVICE, events=[seen]).accepted == 1
    ev = AuditEvent.objects.get(action="audit-witness")
    assert ev.category == "security" and ev.outcome == "failure" and ev.patient_ids == []
    services.audit_sequence()  # the sequencer's beat job; the rollup only reads what it numbered
    ops.audit_rollup_refresh()
    now = timezone.now()
    for data in (dashboard.snapshot(audiences=frozenset({ops.SECURITY}), now=now),
                 ops.dashboard_data_panels(audiences=frozenset({ops.SECURITY}), now=now)):
        assert data["security"]["audit_rewrites_24h"] == 1
    alerts = [a for a in ops.alerts_evaluate() if a.kind == "audit-rewrite"]
    assert len(alerts) == 1 and alerts[0].audience == ops.SECURITY and "rewritten" in alerts[0].message
