"""Audit gaps of c8e5e71 (issue 10 items 4-6): batch entries, snapshots, forged device events. Real access rules."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from omnicare.access.roles import role_assign
from omnicare.access.services import break_glass_end, break_glass_request, device_revoke, token_create
from omnicare.audit.models import AuditEvent
from tests.omnicare.sync.conftest import SyncClient, observation, seed

pytestmark = pytest.mark.django_db


def _fhir(client: Any, body: dict[str, Any]) -> Any:
    return client.post("/fhir/R4/", json.dumps(body), content_type="application/fhir+json")


def test_every_batch_entry_is_audited_like_the_single_request(clinic: Any, api: Any) -> None:
    seed(*[observation(f"b{i}", "p1", float(i)) for i in range(5)])
    r = _fhir(api, {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Observation?patient=p1"}},
        {"request": {"method": "GET", "url": "Observation/o2"}},  # p2: not my patient
        {"request": {"method": "GET", "url": "Patient/p2"}},
        {"request": {"method": "PUT", "url": "Observation/o2"}, "resource": observation("o2", "p2", 1.0)},
    ]})
    assert r.status_code == 200, r.content
    statuses = [e["response"]["status"][:3] for e in r.json()["entry"]]
    assert statuses[0] == "200" and statuses[1:] == ["403", "403", "403"]
    entries = {ev.detail["entry"]: ev for ev in AuditEvent.objects.filter(detail__has_key="entry")}
    assert entries[0].action == "search" and entries[0].outcome == "success" and entries[0].patient_ids == ["p1"]
    assert len(entries[0].detail["resources"]) == 6  # o1 and the 5 new Observations
    for i, action in ((1, "read"), (2, "read"), (3, "update")):
        assert entries[i].action == action and entries[i].outcome == "denied" and entries[i].patient_ids == ["p2"]


@pytest.fixture
def grant_snapshot(clinic: Any, user: Any, sync: SyncClient, eager_celery: Any,
                   django_capture_on_commit_callbacks: Any) -> tuple[str, int]:
    grant = break_glass_request(user=user, patient_id="p2", reason="unconscious patient in the ER, no chart")
    with django_capture_on_commit_callbacks(execute=True):
        r = sync.post("/snapshots", {"deviceId": sync.device_id})
    assert r.status_code == 202, r.content
    return r.json()["id"], grant.pk


def test_snapshots_are_audited_when_made_built_and_downloaded(
    grant_snapshot: tuple[str, int], sync: SyncClient
) -> None:
    sid, _ = grant_snapshot
    assert sync.get(f"/snapshots/{sid}/data").status_code == 200
    made = AuditEvent.objects.get(action="snapshot-create")
    built = AuditEvent.objects.get(action="snapshot-build")
    got = AuditEvent.objects.get(action="snapshot-download")
    assert made.resource_id == built.resource_id == got.resource_id == sid
    assert built.patient_ids == got.patient_ids == ["p1", "p2"] and got.device_id == sync.device_id
    assert got.purpose == "ETREAT"  # p2 only through the emergency grant


def test_a_snapshot_built_under_break_the_glass_is_refused_once_the_grant_ends(
    grant_snapshot: tuple[str, int], sync: SyncClient, user: Any
) -> None:
    sid, grant_id = grant_snapshot
    break_glass_end(user=user, grant_id=grant_id)
    r = sync.get(f"/snapshots/{sid}/data")
    assert r.status_code == 403 and b"p2" not in r.content
    denied = AuditEvent.objects.get(action="snapshot-download")
    assert denied.outcome == "denied"


# --- device audit events: only a registered, non-revoked device of that user, plausibly ---------------------


def _device_events(client: Client, device: str, **event: Any) -> Any:
    ev = {"seq": 1, "action": "read", "occurred": (timezone.now() - timedelta(minutes=5)).isoformat(),
          "resourceType": "Observation", "id": "o1", "patientIds": ["p1"], **event}
    return client.post("/api/audit/device-events", {"deviceId": device, "events": [ev]},
                       content_type="application/json")


@pytest.fixture
def pulled(clinic: Any, sync: SyncClient) -> SyncClient:
    r = sync.post("/devices", {"deviceId": sync.device_id, "name": "ward tablet"})
    assert r.status_code == 200, r.content
    r = sync.post(f"/pull?deviceId={sync.device_id}", {"cursor": None, "limit": 1000})
    assert r.status_code == 200, r.content
    return sync


def test_a_registered_device_submits_its_own_offline_events(pulled: SyncClient) -> None:
    r = _device_events(pulled.client, pulled.device_id)
    assert r.status_code == 200, r.content
    assert AuditEvent.objects.filter(device_seq=1, device_id=pulled.device_id, patient_ids=["p1"]).count() == 1


@pytest.mark.parametrize(("case", "change"), [
    ("other patient", {"patientIds": ["p2"], "id": "o2"}),
    ("legal hold purpose", {"purpose": "LEGAL-HOLD"}),
    ("emergency without a grant", {"purpose": "ETREAT"}),
    ("in 2020", {"occurred": "2020-01-01T00:00:00Z"}),
    ("in 2099", {"occurred": "2099-01-01T00:00:00Z"}),
    ("seq 2^62", {"seq": 2**62}),
])
def test_forged_device_events_are_refused_and_recorded(pulled: SyncClient, case: str, change: dict[str, Any]) -> None:
    before = AuditEvent.objects.filter(device_seq__isnull=False).count()
    r = _device_events(pulled.client, pulled.device_id, **change)
    assert r.status_code == 403, (case, r.content)
    assert AuditEvent.objects.filter(device_seq__isnull=False).count() == before
    flag = AuditEvent.objects.get(action="device-events-refused")
    assert flag.category == "security" and flag.outcome == "denied" and flag.username == "dr.test"


def test_unregistered_revoked_or_other_users_devices_may_not_submit(
    pulled: SyncClient, clinic: Any, user: Any, django_user_model: Any
) -> None:
    desk = django_user_model.objects.create_user(username="front.desk")
    role_assign(user=desk, role="front_desk")
    nobody = django_user_model.objects.create_user(username="no.role")
    for who in (desk, nobody):
        client = Client(HTTP_AUTHORIZATION=f"Bearer {token_create(user=who, name='t')}")
        assert _device_events(client, pulled.device_id).status_code == 403  # not their device
        assert _device_events(client, "made-up-device").status_code == 403
    admin = django_user_model.objects.create_user(username="it.admin")
    role_assign(user=admin, role="administrator")
    device_revoke(owner=user, device_id=pulled.device_id, by=admin, reason="stolen")
    assert _device_events(pulled.client, pulled.device_id).status_code == 403
    # The revoked tablet's token died with it (issue 10, item 14): refused at sign-in, recorded as such.
    assert AuditEvent.objects.filter(action="device-events-refused").count() == 4
    assert AuditEvent.objects.filter(action="revoked-device-contact", category="security").count() == 1
    assert not AuditEvent.objects.filter(device_seq__isnull=False).exists()


# --- every device is a witness: the pull carries the newest checkpoint, the device checks consistency --------


def test_each_pull_hands_the_device_a_checkpoint_it_can_check_for_consistency(
    clinic: Any, sync: SyncClient, user: Any
) -> None:
    from omnicare.audit import services
    from pyclient import auditlog

    services.audit_record(user=user, action="read", resource_type="Patient", resource_id="x")
    services.audit_checkpoint()
    first = sync.pull()
    held = auditlog.Checkpoint.from_json(first["auditCheckpoint"])
    assert auditlog.checkpoint_offered(None, held).kind == "adopt"
    for i in range(5):
        services.audit_record(user=user, action="read", resource_type="Patient", resource_id=f"x{i}")
    services.audit_checkpoint()
    offered = auditlog.Checkpoint.from_json(sync.pull()["auditCheckpoint"])
    decision = auditlog.checkpoint_offered(held, offered)
    assert decision.kind == "need-proof" and offered.tree_size > held.tree_size
    r = sync.client.get("/api/audit/log/consistency", {"first": decision.first, "second": decision.second})
    assert r.status_code == 200, r.content
    assert auditlog.checkpoint_proof_check(held, offered, r.json()).kind == "adopt"
    # Only checkpoint sizes are served (no arbitrary, expensive proofs), and nothing but hashes.
    assert sync.client.get("/api/audit/log/consistency", {"first": 1, "second": 10**6}).status_code == 400
    assert set(r.json()) == {"first", "second", "first_root", "second_root", "path"}


def test_a_device_detects_a_history_rewritten_on_the_server(
    clinic: Any, sync: SyncClient, user: Any, settings: Any
) -> None:
    from django.db import connection

    from omnicare.audit import dbguard, merkle, services
    from pyclient import auditlog

    settings.OMNICARE_AUDIT_CHECKPOINT_LOG = ""
    for i in range(6):
        services.audit_record(user=user, action="read", resource_type="Patient", resource_id=f"y{i}",
                              patient_ids=["p1" if i != 2 else "p2"])
    services.audit_checkpoint()
    held = auditlog.Checkpoint.from_json(sync.pull()["auditCheckpoint"])
    # A server-side attacker with the signing key erases the p2 event and rebuilds the chain and tree.
    with connection.cursor() as cur:
        if connection.vendor == "postgresql":
            for t in ("audit_auditevent", "audit_checkpoint", "audit_chainhead"):
                cur.execute(f"ALTER TABLE {t} DISABLE TRIGGER USER")
        else:
            for name in dbguard.sqlite_triggers():
                cur.execute(f"DROP TRIGGER IF EXISTS {name}")
        kept = [e for e in AuditEvent.objects.filter(seq__isnull=False).order_by("seq") if "p2" not in e.patient_ids]
        cur.execute("DELETE FROM audit_checkpoint")
        cur.execute("DELETE FROM audit_auditevent WHERE seq IS NOT NULL")
        cur.execute("DELETE FROM audit_chainhead")
        prev, frontier = services.GENESIS, merkle.Frontier()
        for n, ev in enumerate(kept, 1):
            ev.seq, ev.prev_hash = n, prev
            ev.hash = services.event_hash(prev, services.event_fields(ev))
            ev.pk = None
            ev._state.adding = True
            ev.save()
            frontier.append(bytes.fromhex(ev.hash))
            prev = ev.hash
    from omnicare.audit.models import ChainHead

    ChainHead.objects.create(pk=1, seq=len(kept), hash=prev, frontier=frontier.to_json())
    for i in range(4):  # the log grows on, so the device is offered a bigger tree
        services.audit_record(user=user, action="read", resource_type="Patient", resource_id=f"z{i}")
    services.audit_checkpoint()  # signed with the real key: the server-side verifier alone cannot tell
    offered = auditlog.Checkpoint.from_json(sync.pull()["auditCheckpoint"])
    decision = auditlog.checkpoint_offered(held, offered)
    assert decision.kind == "need-proof"
    proof = sync.client.get("/api/audit/log/consistency", {"first": decision.first, "second": decision.second})
    assert proof.status_code == 200
    assert auditlog.checkpoint_proof_check(held, offered, proof.json()).kind == "violation"
