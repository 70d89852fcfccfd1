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


@pytest.fixture
def desk_sync(clinic: Any, django_user_model: Any, token_for: Any) -> SyncClient:
    """A front-desk user (registers, reads demographics, no clinical data) syncing from a tablet."""
    from django.test import Client

    from omnicare.access.roles import FRONT_DESK, role_assign

    desk = django_user_model.objects.create_user(username="desk.test")
    role_assign(user=desk, role=FRONT_DESK)
    return SyncClient(Client(HTTP_AUTHORIZATION=f"Bearer {token_for(desk)}"))


def _teams(pid: str) -> list[list[str]]:
    return [[p["member"]["reference"] for p in t.body["participant"]]
            for t in Resource.objects.filter(resource_type="CareTeam", deleted=False)
            if t.body["subject"]["reference"] == f"Patient/{pid}"]


def test_a_front_desk_walk_in_goes_to_the_responsible_clinician_chosen_at_registration(
    clinic: Any, desk_sync: SyncClient, sync: SyncClient
) -> None:
    """The front desk never joins a care team (no clinical data for them); the clinician named at registration
    (Patient.generalPractitioner) gets the patient, audited as done by the front desk."""
    pid = str(uuid.uuid4())
    body = {**walk_in(pid, 1, str(uuid.uuid4())),
            "generalPractitioner": [{"reference": "Practitioner/pr-dr-test", "display": "Dr Test"}]}
    [r] = desk_sync.push(put(body, None))
    assert r["status"] == "applied", r
    assert _teams(pid) == [["Practitioner/pr-dr-test"]]
    event = AuditEvent.objects.get(action="create", resource_type="CareTeam", patient_ids=[pid])
    assert event.username == "desk.test" and "responsible clinician" in event.detail["reason"]
    # The clinician's device receives the patient and may chart; the front desk still may not.
    changes, _, _ = sync.pull_all()
    assert ("Patient", pid) in {(c["resourceType"], c["id"]) for c in changes}
    [ok] = sync.push(put(observation(f"{pid}-o", pid), None))
    assert ok["status"] == "applied"
    [no] = desk_sync.push(put(observation(f"{pid}-o2", pid), None))
    assert no["status"] == "rejected"


def test_a_front_desk_walk_in_without_a_clinician_or_with_an_unknown_one(
    clinic: Any, desk_sync: SyncClient
) -> None:
    pid = str(uuid.uuid4())
    [r] = desk_sync.push(put(walk_in(pid, 1, str(uuid.uuid4())), None))
    assert r["status"] == "applied" and _teams(pid) == []  # demographics only; the front desk is on no team
    other = str(uuid.uuid4())
    body = {**walk_in(other, 2, str(uuid.uuid4())), "generalPractitioner": [{"reference": "Practitioner/nobody"}]}
    [bad] = desk_sync.push(put(body, None))
    assert bad["status"] == "rejected" and "responsible clinician" in bad["outcome"]["issue"][0]["diagnostics"]
    assert not Resource.objects.filter(resource_type="Patient", resource_id=other).exists()  # nothing half-written


def test_the_sign_in_answer_lists_the_clinicians_for_the_front_desk_only(
    clinic: Any, desk_sync: SyncClient, sync: SyncClient
) -> None:
    """So an offline registration can still name one: shipped with the sign-in answer, like the permissions."""
    desk = desk_sync.client.get("/api/auth/me").json()
    assert {c["id"] for c in desk["clinicians"]} == {"pr-dr-test", "pr-nurse-test"}
    names = [c["display"] for c in desk["clinicians"]]
    assert names == sorted(names, key=str.casefold) and all(names)
    assert sync.client.get("/api/auth/me").json()["clinicians"] is None  # a clinician joins the team themselves


def test_the_front_desks_clinicians_cost_the_same_queries_for_three_or_thirty_and_follow_its_ward(
    clinic: Any, django_user_model: Any
) -> None:
    """The sign-in answer reads the clinicians' Practitioners and wards for all of them at once (it ran queries
    per clinician); a desk on a ward sees only the clinicians of that ward."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from omnicare.access.roles import FRONT_DESK, PHYSICIAN, role_assign
    from omnicare.access.services import registration_clinicians
    from tests.omnicare.sync.conftest import practitioner, seed

    desk = django_user_model.objects.create_user(username="desk.ward")
    role_assign(user=desk, role=FRONT_DESK)

    def hire(n: int, start: int) -> None:
        for i in range(start, start + n):
            u = django_user_model.objects.create_user(username=f"doc{i}")
            role_assign(user=u, role=PHYSICIAN)
            seed(practitioner(u.username), {
                "resourceType": "PractitionerRole", "id": f"role-doc{i}", "active": True,
                "practitioner": {"reference": f"Practitioner/pr-doc{i}"},
                "location": [{"reference": f"Location/{'w1' if i % 2 else 'w2'}"}]})

    seed({"resourceType": "Location", "id": "w1", "name": "Ward 1"},
         {"resourceType": "Location", "id": "w2", "name": "Ward 2"}, practitioner(desk.username),
         {"resourceType": "PractitionerRole", "id": "role-desk", "practitioner": {"reference": "Practitioner/pr-desk-ward"},
          "location": [{"reference": "Location/w1"}]})
    hire(3, 0)
    registration_clinicians(user=desk)  # the desk's own roles are read once per user object, then cached
    with CaptureQueriesContext(connection) as few:
        small = registration_clinicians(user=desk)
    hire(27, 3)
    with CaptureQueriesContext(connection) as many:
        large = registration_clinicians(user=desk)
    assert len(many.captured_queries) == len(few.captured_queries)
    assert small is not None and large is not None
    assert {c["id"] for c in small} == {"pr-doc1"}  # dr.test and nurse.test work on no ward: not listed
    assert {c["id"] for c in large} == {f"pr-doc{i}" for i in range(30) if i % 2}
    assert [c["display"] for c in large] == sorted((c["display"] for c in large), key=str.casefold)
