"""Issue 18 items 1 and 6 through the sync push: a walk-in registered offline puts its registering clinician on
its care team (audited) so the device keeps it after the next pull; authors are checked like on REST."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from omnicare.audit.models import AuditEvent
from omnicare.fhir.models import Resource
from pyclient import registration as reg
from tests.omnicare.sync.conftest import SyncClient, observation, put

pytestmark = pytest.mark.django_db


def walk_in(pid: str, counter: int, device: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "name": [{"use": "official", "family": "Walker", "given": ["Wendy"]}],
            "birthDate": "1990-02-03", "gender": "female",
            "identifier": [{"system": reg.LOCAL_MRN_SYSTEM, "value": reg.local_mrn(device, counter)}]}


def test_a_walk_in_pushed_from_a_device_joins_the_registrants_care_team_and_stays_on_the_device(
    clinic: Any, sync: SyncClient, other_sync: SyncClient
) -> None:
    pid = str(uuid.uuid4())
    [r] = sync.push(put(walk_in(pid, 1, str(uuid.uuid4())), None))
    assert r["status"] == "applied", r
    teams = [t.body for t in Resource.objects.filter(resource_type="CareTeam", deleted=False)
             if t.body["subject"]["reference"] == f"Patient/{pid}"]
    assert [t["participant"][0]["member"]["reference"] for t in teams] == ["Practitioner/pr-dr-test"]
    assert AuditEvent.objects.filter(action="create", resource_type="CareTeam", username="dr.test",
                                     patient_ids=[pid]).count() == 1
    changes, _, _ = sync.pull_all()
    assert ("Patient", pid) in {(c["resourceType"], c["id"]) for c in changes}
    _, _, _ = other_sync.pull_all()
    [r] = other_sync.push(put(observation(f"{pid}-o", pid), None))
    assert r["status"] == "rejected"  # only the registrant's team


def test_two_devices_registering_at_once_get_different_mrns_and_a_reused_one_is_refused(
    clinic: Any, sync: SyncClient
) -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    assert reg.local_mrn(a, 1) != reg.local_mrn(b, 1)
    p1, p2 = str(uuid.uuid4()), str(uuid.uuid4())
    [r1] = sync.push(put(walk_in(p1, 1, a), None))
    [r2] = sync.push(put(walk_in(p2, 1, b), None))
    assert (r1["status"], r2["status"]) == ("applied", "applied")
    [r3] = sync.push(put(walk_in(str(uuid.uuid4()), 1, a), None))
    assert r3["status"] == "rejected" and "already has the MRN" in r3["outcome"]["issue"][0]["diagnostics"]


def test_a_pushed_author_is_completed_or_refused(clinic: Any, sync: SyncClient) -> None:
    o = observation(f"o-{uuid.uuid4().hex[:6]}", "p1")
    o["performer"] = [{"display": "dr.test"}]
    [r] = sync.push(put(o, None))
    assert r["status"] == "applied" and r["resource"]["performer"][0]["reference"] == "Practitioner/pr-dr-test"
    o2 = observation(f"o-{uuid.uuid4().hex[:6]}", "p1")
    o2["performer"] = [{"reference": "Practitioner/pr-nurse-test", "display": "nurse.test"}]
    [r] = sync.push(put(o2, None))
    assert r["status"] == "rejected" and r["outcome"]["issue"][0]["code"] == "forbidden"


def test_a_device_registers_only_from_its_own_mrn_range(clinic: Any, token_for: Any) -> None:
    from django.test import Client

    here, elsewhere = str(uuid.uuid4()), str(uuid.uuid4())
    tablet = SyncClient(Client(HTTP_AUTHORIZATION=f"Bearer {token_for(clinic['user'])}"), device_id=here)
    [r] = tablet.push(put(walk_in(str(uuid.uuid4()), 1, elsewhere), None))
    assert r["status"] == "rejected" and "made on another device" in r["outcome"]["issue"][0]["diagnostics"]
    [r] = tablet.push(put(walk_in(str(uuid.uuid4()), 1, here), None))
    assert r["status"] == "applied", r
