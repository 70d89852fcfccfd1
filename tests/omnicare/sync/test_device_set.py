"""Scope vs device set (issue 13, item 1) on the real server: the ward census and the schedule widen what a
user may see; a device holds the part of it it chose within its budget; a choice (or a prediction) never
widens scope; the device set and the offer are audited as disclosures, not as chart opens."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from omnicare.access.services import scope_reasons, visible_patient_ids
from omnicare.audit.models import AuditEvent
from omnicare.sync.models import Device

from .conftest import SyncClient, observation, patient, seed


def location(lid: str, name: str) -> dict[str, Any]:
    return {"resourceType": "Location", "id": lid, "name": name, "status": "active"}


def role(rid: str, username: str, *locations: str, active: bool = True) -> dict[str, Any]:
    return {"resourceType": "PractitionerRole", "id": rid, "active": active,
            "practitioner": {"reference": f"Practitioner/pr-{username.replace('.', '-')}"},
            "location": [{"reference": f"Location/{loc}"} for loc in locations]}


def stay(eid: str, pid: str, loc: str, *, status: str = "in-progress", klass: str = "IMP",
         loc_status: str = "active") -> dict[str, Any]:
    return {"resourceType": "Encounter", "id": eid, "status": status,
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": klass},
            "subject": {"reference": f"Patient/{pid}"},
            "period": {"start": (timezone.now() - timedelta(days=1)).isoformat()},
            "location": [{"location": {"reference": f"Location/{loc}"}, "status": loc_status}]}


def left(eid: str, pid: str, loc: str, *, days_ago: int) -> dict[str, Any]:
    end = timezone.now() - timedelta(days=days_ago)
    return {"resourceType": "Encounter", "id": eid, "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
            "subject": {"reference": f"Patient/{pid}"},
            "period": {"start": (end - timedelta(days=4)).isoformat(), "end": end.isoformat()},
            "location": [{"location": {"reference": f"Location/{loc}"}, "status": "completed"}]}


def appointment(aid: str, pid: str, username: str, days: int, status: str = "booked") -> dict[str, Any]:
    start = timezone.now().replace(hour=12, minute=0, second=0, microsecond=0) + timedelta(days=days)
    return {"resourceType": "Appointment", "id": aid, "status": status, "start": start.isoformat(),
            "end": (start + timedelta(minutes=20)).isoformat(),
            "participant": [
                {"actor": {"reference": f"Patient/{pid}"}, "status": "accepted"},
                {"actor": {"reference": f"Practitioner/pr-{username.replace('.', '-')}"}, "status": "accepted"},
            ]}


@pytest.fixture
def hospital(clinic: dict[str, Any]) -> dict[str, Any]:
    """dr.test works on Ward 3 (and is no longer on Ward 9); patients on and off the ward and the schedule."""
    u = clinic["user"].username
    seed(
        location("w3", "Ward 3"), location("w4", "Ward 4"), location("w9", "Ward 9"),
        role("r1", u, "w3"), role("r2", u, "w9", active=False),
        *(patient(p) for p in ("p3", "p4", "p5", "p6", "p7", "p8", "p9", "p10", "p11", "p13", "p14", "p15")),
        stay("e3", "p3", "w3"),  # current inpatient of Ward 3
        stay("e4", "p4", "w3", status="finished"),  # discharged
        stay("e5", "p5", "w3", klass="AMB"),  # an outpatient visit, not the census
        stay("e6", "p6", "w4"),  # another ward
        stay("e11", "p11", "w9"),  # a ward the user no longer works on
        stay("e10", "p10", "w3", loc_status="completed"),  # transferred out of Ward 3, no date: not recent
        left("e13", "p13", "w3", days_ago=3),  # discharged from Ward 3 three days ago: recently on the ward
        left("e14", "p14", "w3", days_ago=20),  # three weeks ago: no longer
        appointment("a15", "p15", u, 9),  # beyond the week
        appointment("a7", "p7", u, 0), appointment("a8", "p8", u, 1),
        appointment("a9", "p9", u, 3), appointment("a10", "p10", u, 0, status="cancelled"),
        observation("o3", "p3"), observation("o7", "p7"),
    )
    return clinic


def test_the_ward_census_and_the_schedule_are_in_scope_and_nothing_else(hospital: dict[str, Any]) -> None:
    user = hospital["user"]
    reasons = scope_reasons(user=user)
    assert reasons == {
        "p1": ["care-team"],
        "p3": ["ward:Ward 3"],
        "p7": ["appointment-today"],
        "p8": ["appointment-tomorrow"],
        "p9": ["appointment-week"],  # in three days: in scope, ranked rather than pinned on devices
        "p13": ["ward-recent:Ward 3"],
    }
    assert visible_patient_ids(user=user, device=True) == frozenset(reasons)
    # The colleague, who works on no ward and has no schedule, keeps only their care team.
    assert scope_reasons(user=hospital["other"]) == {"p2": ["care-team"]}


def test_the_offer_ranks_the_scope_with_reasons_sizes_and_the_default_budget(
        hospital: dict[str, Any], sync: SyncClient) -> None:
    sync.register()
    r = sync.get("/device-set", deviceId=sync.device_id)
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["budgetBytes"] == 1_000_000_000  # the web default from the seed
    assert body["modelVersion"] == "heuristic"
    by_id = {p["id"]: p for p in body["patients"]}
    assert set(by_id) == {"p1", "p3", "p7", "p8", "p9", "p13"}
    assert by_id["p3"]["reasons"] == ["ward:Ward 3"] and by_id["p3"]["records"] == 3  # patient, stay, result
    assert by_id["p3"]["bytes"] > 0
    scores = [p["score"] for p in body["patients"]]
    assert scores == sorted(scores, reverse=True)
    # An administrator sets a budget on the device; mobile devices default to 500 MB.
    Device.objects.filter(device_id=sync.device_id).update(platform="mobile")
    assert sync.get("/device-set", deviceId=sync.device_id).json()["budgetBytes"] == 500_000_000
    Device.objects.filter(device_id=sync.device_id).update(storage_budget_bytes=12345)
    assert sync.get("/device-set", deviceId=sync.device_id).json()["budgetBytes"] == 12345
    offer = AuditEvent.objects.filter(action="device-set-offer", device_id=sync.device_id).first()
    assert offer is not None and set(offer.patient_ids) == {"p1", "p3", "p7", "p8", "p9", "p13"}


def test_a_device_holds_what_it_chose_and_drops_what_it_evicts(hospital: dict[str, Any], sync: SyncClient) -> None:
    changes, _drops, cursor = sync.pull_all()
    assert {c["id"] for c in changes if c["resourceType"] == "Patient"} == {"p1", "p3", "p7", "p8", "p9", "p13"}
    r = sync.client.post("/api/sync/device-set", {"deviceId": sync.device_id, "patients": ["p1", "p7"],
                                                   "modelVersion": "heuristic", "pinned": 2},
                         content_type="application/json")
    assert r.status_code == 200 and r.json() == {"patients": ["p1", "p7"]}
    _changes, drops, cursor = sync.pull_all(cursor)
    assert {(d["resourceType"], d["id"]) for d in drops} >= {("Patient", "p3"), ("Patient", "p8"),
                                                              ("Observation", "o3")}
    assert not {d["id"] for d in drops} & {"p1", "p7", "o1", "o7"}
    # A first sync of this device now downloads only its set.
    changes, _d, _c = sync.pull_all()
    assert {c["id"] for c in changes if c["resourceType"] == "Patient"} == {"p1", "p7"}
    # Taking p3 back (e.g. opened on demand) fills it in on the next pull.
    sync.client.post("/api/sync/device-set", {"deviceId": sync.device_id, "patients": ["p1", "p3", "p7"]},
                     content_type="application/json")
    changes, _d, _c = sync.pull_all(cursor)
    assert {c["id"] for c in changes} == {"p3", "e3", "o3"}


def test_asking_for_more_than_the_scope_gets_nothing_more(hospital: dict[str, Any], sync: SyncClient) -> None:
    sync.register()
    r = sync.client.post("/api/sync/device-set", {"deviceId": sync.device_id, "patients": ["p1", "p2", "p6"]},
                         content_type="application/json")
    assert r.json() == {"patients": ["p1"]}
    changes, _d, _c = sync.pull_all()  # what it declined stays on the server
    assert {c["id"] for c in changes if c["resourceType"] == "Patient"} == {"p1"}
    ev = AuditEvent.objects.get(action="device-set", device_id=sync.device_id)
    assert ev.patient_ids == ["p1"] and ev.detail["refused"] == 2
    assert {"p3", "p7"} & set(ev.patient_ids) == set()


def test_a_patient_who_leaves_scope_leaves_the_device_even_if_chosen(hospital: dict[str, Any],
                                                                     sync: SyncClient) -> None:
    sync.register()
    sync.client.post("/api/sync/device-set", {"deviceId": sync.device_id, "patients": ["p1", "p3"]},
                     content_type="application/json")
    _c, _d, cursor = sync.pull_all()
    seed(stay("e3", "p3", "w3", status="finished"))  # discharged from Ward 3
    _c, drops, _cur = sync.pull_all(cursor)
    assert ("Patient", "p3") in {(d["resourceType"], d["id"]) for d in drops}


def test_the_device_set_is_audited_as_a_disclosure_not_a_chart_open(hospital: dict[str, Any],
                                                                    sync: SyncClient) -> None:
    sync.register()
    before = AuditEvent.objects.filter(action="read").count()
    sync.client.post("/api/sync/device-set", {"deviceId": sync.device_id, "patients": ["p1", "p3", "p8"],
                                              "modelVersion": "default-v2", "pinned": 3},
                     content_type="application/json")
    sync.pull_all()
    ev = AuditEvent.objects.get(action="device-set")
    assert sorted(ev.patient_ids) == ["p1", "p3", "p8"] and ev.device_id == sync.device_id
    assert ev.detail == {"patients": 3, "refused": 0, "modelVersion": "default-v2", "pinned": 3}
    pulled = set()
    for ids in AuditEvent.objects.filter(action="sync-pull", device_id=sync.device_id).values_list("patient_ids",
                                                                                                flat=True):
        pulled.update(ids)
    assert pulled == {"p1", "p3", "p8"}
    assert AuditEvent.objects.filter(action="read").count() == before  # nobody opened a chart


def test_an_unregistered_device_gets_no_offer(hospital: dict[str, Any], sync: SyncClient) -> None:
    assert sync.get("/device-set").status_code == 400  # no device id: refused before anything is bound
    r = sync.get("/device-set", deviceId="dev-nowhere1")
    assert r.status_code == 403
    r = sync.client.post("/api/sync/device-set", {"deviceId": "dev-nowhere1", "patients": ["p1"]},
                         content_type="application/json")
    assert r.status_code == 403


def test_a_patient_new_to_the_scope_arrives_at_once_after_a_choice(hospital: dict[str, Any],
                                                                   sync: SyncClient) -> None:
    """The server remembers what the device declined, not what it chose: a new admission to the ward is
    delivered on the next pull, without waiting for the device's next plan."""
    sync.register()
    sync.client.post("/api/sync/device-set", {"deviceId": sync.device_id, "patients": ["p1"]},
                     content_type="application/json")
    _c, _d, cursor = sync.pull_all()
    seed(patient("p12"), stay("e12", "p12", "w3"))
    changes, _d, _cur = sync.pull_all(cursor)
    assert {c["id"] for c in changes if c["resourceType"] == "Patient"} == {"p12"}


def test_the_ward_and_schedule_scope_follows_every_change_at_once(hospital: dict[str, Any]) -> None:
    """This part of the scope is reused across requests (access.services._wards_and_schedule); no change to an
    appointment, a stay or a ward assignment may be missed by the very next question."""
    user = hospital["user"]
    assert {"p7", "p3"} <= visible_patient_ids(user=user, device=True)
    visible_patient_ids(user=user, device=True)  # the reused answer
    seed(appointment("a7", "p7", user.username, 0, status="cancelled"))
    assert "p7" not in visible_patient_ids(user=user, device=True)
    seed(stay("e6", "p6", "w3"))  # transferred from Ward 4 to the user's Ward 3
    assert "p6" in visible_patient_ids(user=user, device=True)
    seed(role("r1", user.username, "w4"), stay("e11", "p11", "w4"))  # the user now works on Ward 4 only
    now = visible_patient_ids(user=user, device=True)
    assert "p11" in now and not {"p3", "p6", "p13"} & now
