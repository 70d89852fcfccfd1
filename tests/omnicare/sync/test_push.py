"""Push: applied, idempotent replays, three-way merges, durable conflicts, resolution, bad input."""

from __future__ import annotations

import copy
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from omnicare.fhir.models import Resource, ResourceVersion
from omnicare.fhir.services import resources_import
from omnicare.sync.models import AppliedMutation, Conflict, Device
from omnicare.sync.services import MAX_PUSH_MUTATIONS
from tests.omnicare.sync.conftest import SyncClient, care_team, delete, observation, patient, put


def current(rtype: str, rid: str) -> Resource:
    return Resource.objects.get(resource_type=rtype, resource_id=rid)


def test_create_update_delete_applied_and_device_registered(clinic: Any, sync: SyncClient) -> None:
    [r] = sync.push(put(observation("n1", "p1", 80.0), None))
    assert r["status"] == "applied" and r["versionId"] == 1
    assert r["resource"]["meta"]["versionId"] == "1"
    [r] = sync.push(put(observation("n1", "p1", 81.0), 1))
    assert (r["status"], r["versionId"]) == ("applied", 2)
    [r] = sync.push(delete("Observation", "n1", 2, mid="del-1"))
    assert (r["status"], r["versionId"]) == ("applied", 3)
    assert current("Observation", "n1").deleted
    device = Device.objects.get(device_id=sync.device_id)
    assert device.last_mutation_id == "del-1"
    listed = sync.get("/devices").json()
    assert [d["deviceId"] for d in listed] == [sync.device_id]


def test_replaying_a_mutation_returns_the_first_result_and_changes_nothing(
    clinic: Any, sync: SyncClient
) -> None:
    m = put(observation("o1", "p1", 72.0), 1)
    [first] = sync.push(m)
    versions = ResourceVersion.objects.count()
    [again] = sync.push(m)  # e.g. a retry after a timeout
    [dup, _] = sync.push(m, put(observation("n9", "p1"), None))  # in a later batch
    assert first == again == dup
    assert ResourceVersion.objects.count() == versions + 1  # only n9
    assert current("Observation", "o1").version_id == 2


def test_reusing_a_mutation_id_with_a_different_body_is_rejected(clinic: Any, sync: SyncClient) -> None:
    m = put(observation("o1", "p1", 72.0), 1, mid="same-id")
    sync.push(m)
    other = put(observation("o1", "p1", 99.0), 2, mid="same-id")
    [r] = sync.push(other)
    assert r["status"] == "rejected"
    assert r["outcome"]["issue"][0]["code"] == "conflict"
    assert "already used" in r["outcome"]["issue"][0]["diagnostics"]
    assert current("Observation", "o1").body["valueQuantity"]["value"] == 72.0
    # The original still replays as applied.
    assert sync.push(m)[0]["status"] == "applied"


def test_stale_base_with_disjoint_edits_merges_cleanly(clinic: Any, sync: SyncClient) -> None:
    server = observation("o1", "p1")
    server["note"] = [{"text": "checked by nurse", "time": "2026-01-01T10:00:00Z"}]
    resources_import(resources=[server])  # v2 on the server
    mine = observation("o1", "p1")
    mine["status"] = "amended"  # client edited v1's status
    [r] = sync.push(put(mine, 1))
    assert r["status"] == "merged" and r["versionId"] == 3
    body = current("Observation", "o1").body
    assert body["status"] == "amended" and body["note"][0]["text"] == "checked by nurse"
    assert r["resource"] == body


def test_conflicting_edit_is_parked_as_a_durable_conflict_and_resolved(clinic: Any, sync: SyncClient) -> None:
    resources_import(resources=[observation("o1", "p1", 75.0)])  # server v2: 75 kg
    [r] = sync.push(put(observation("o1", "p1", 68.0), 1))  # client edited v1: 68 kg
    assert r["status"] == "conflict"
    assert r["versionId"] == 2 and r["resource"]["valueQuantity"]["value"] == 75.0
    assert r["conflicts"] and r["conflicts"][0]["path"].startswith("value")
    assert current("Observation", "o1").version_id == 2  # nothing written
    c = Conflict.objects.get(pk=r["conflictId"])
    assert c.status == "open" and c.theirs["valueQuantity"]["value"] == 68.0 and c.base_version == 1
    assert c.author == clinic["user"] and c.device_id == sync.device_id

    listed = sync.get("/conflicts").json()
    assert [x["id"] for x in listed] == [r["conflictId"]]
    detail = sync.get(f"/conflicts/{r['conflictId']}").json()
    assert (
        detail["theirs"]["valueQuantity"]["value"] == 68.0
        and detail["ours"]["valueQuantity"]["value"] == 75.0
    )

    resolved = sync.post(f"/conflicts/{r['conflictId']}/resolve", {"resolution": "keep-mine"})
    assert resolved.status_code == 200, resolved.content
    out = resolved.json()
    assert out["result"]["versionId"] == 3 and out["conflict"]["resolvedBy"] == "dr.test"
    assert current("Observation", "o1").body["valueQuantity"]["value"] == 68.0
    c.refresh_from_db()
    assert (c.status, c.resolution, c.resolved_version) == ("resolved", "keep-mine", 3)
    assert sync.post(f"/conflicts/{r['conflictId']}/resolve", {"resolution": "keep-mine"}).status_code == 409
    assert sync.get("/conflicts").json() == []
    assert len(sync.get("/conflicts", status="resolved").json()) == 1


def test_resolving_against_a_moved_record_is_refused(clinic: Any, sync: SyncClient) -> None:
    resources_import(resources=[observation("o1", "p1", 75.0)])
    [r] = sync.push(put(observation("o1", "p1", 68.0), 1))
    resources_import(resources=[observation("o1", "p1", 76.0)])  # v3 lands meanwhile
    edited = observation("o1", "p1", 70.0)
    resp = sync.post(f"/conflicts/{r['conflictId']}/resolve", {"resolution": "edited", "resource": edited})
    assert resp.status_code == 409
    assert current("Observation", "o1").body["valueQuantity"]["value"] == 76.0
    resp = sync.post(
        f"/conflicts/{r['conflictId']}/resolve",
        {"resolution": "edited", "resource": edited, "baseVersion": 3},
    )
    assert resp.status_code == 200
    assert current("Observation", "o1").body["valueQuantity"]["value"] == 70.0


def test_conflicts_are_private_to_their_author_and_clinicians_in_scope_not_staff(
    clinic: Any, sync: SyncClient, other_sync: SyncClient
) -> None:
    resources_import(resources=[observation("o1", "p1", 75.0)])
    [r] = sync.push(put(observation("o1", "p1", 68.0), 1))
    assert other_sync.get("/conflicts").json() == []
    assert other_sync.get(f"/conflicts/{r['conflictId']}").status_code == 404
    other = clinic["other"]
    other.is_staff = True  # issue 10: a staff flag is not a reason to read clinical content
    other.save()
    assert other_sync.get("/conflicts").json() == []
    resources_import(resources=[care_team("p1", ["dr.test", "nurse.test"])])  # now on p1's care team
    assert [x["id"] for x in other_sync.get("/conflicts").json()] == [r["conflictId"]]


def test_superseding_edit_closes_the_old_conflict(clinic: Any, sync: SyncClient) -> None:
    resources_import(resources=[observation("o1", "p1", 75.0)])
    [r] = sync.push(put(observation("o1", "p1", 68.0), 1, mid="m-old"))
    m = put(observation("o1", "p1", 69.0), 2)
    m["supersedes"] = "m-old"
    [r2] = sync.push(m)
    assert r2["status"] == "applied"
    c = Conflict.objects.get(pk=r["conflictId"])
    assert (c.status, c.resolution) == ("resolved", "superseded")


def test_delete_of_an_edited_record_is_a_conflict_not_a_silent_loss(clinic: Any, sync: SyncClient) -> None:
    resources_import(resources=[observation("o1", "p1", 75.0)])
    [r] = sync.push(delete("Observation", "o1", 1))
    assert r["status"] == "conflict"
    assert not current("Observation", "o1").deleted


def test_bad_mutations_are_rejected_individually_and_the_rest_proceeds(clinic: Any, sync: SyncClient) -> None:
    results = sync.push(
        put(observation("ok1", "p1"), None),
        put({"resourceType": "Spaceship", "id": "s1"}, None),
        put(observation("o1", "p1", 1.0), 7),  # base from the future
        put(observation("o2", "p2", 1.0), 1),  # p2 is not my patient
        put(
            {
                "resourceType": "Observation",
                "id": "bad1",
                "status": "final",
                "code": {"text": "x"},
                "subject": {"reference": "Patient/p1"},
                "valueQuantity": "heavy",
            },
            None,
        ),
        put(observation("ok2", "p1"), None),
    )
    status = [(r["status"], r.get("outcome", {}).get("issue", [{}])[0].get("code")) for r in results]
    assert status[0] == ("applied", None) and status[5] == ("applied", None)
    assert status[1][0] == "rejected" and status[2][0] == "rejected" and status[4][0] == "rejected"
    assert status[3] == ("rejected", "forbidden")
    assert "ahead" in results[2]["outcome"]["issue"][0]["diagnostics"]
    assert current("Observation", "o2").body["valueQuantity"]["value"] == 70.0
    assert current("Observation", "o1").version_id == 1
    assert not Resource.objects.filter(resource_id__in=["s1", "bad1"]).exists()


def test_malformed_and_oversized_batches_are_refused_whole(clinic: Any, sync: SyncClient) -> None:
    before = ResourceVersion.objects.count()
    good = put(observation("z1", "p1"), None)
    assert sync.post("/push", "{not json").status_code == 400
    assert sync.post("/push", {"mutations": [good]}).status_code == 400  # no deviceId
    broken = {"deviceId": "d", "mutations": [good, {"op": "put", "id": "x"}]}
    r = sync.post("/push", broken)
    assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome"
    dup = {"deviceId": "d", "mutations": [good, good]}
    assert sync.post("/push", dup).status_code == 400
    many = {
        "deviceId": "d",
        "mutations": [put(observation(f"y{i}", "p1"), None) for i in range(MAX_PUSH_MUTATIONS + 1)],
    }
    r = sync.post("/push", many)
    assert r.status_code == 413 and r.json()["issue"][0]["code"] == "too-costly"
    assert ResourceVersion.objects.count() == before


def test_new_patient_can_be_registered_offline_and_charts_outside_scope_stay_closed(
    clinic: Any, sync: SyncClient, other_sync: SyncClient
) -> None:
    pid = f"new-{uuid.uuid4().hex[:6]}"
    [r] = sync.push(put(patient(pid), None))
    assert r["status"] == "applied"
    [r] = other_sync.push(put(observation("intruder", "p1"), None))
    assert r["status"] == "rejected" and r["outcome"]["issue"][0]["code"] == "forbidden"
    assert not Resource.objects.filter(resource_id="intruder").exists()


def test_large_batch_is_applied_by_a_job(
    clinic: Any, sync: SyncClient, django_capture_on_commit_callbacks: Any, eager_celery: Any
) -> None:
    n = MAX_PUSH_MUTATIONS + 20
    muts = [put(observation(f"j{i}", "p1", float(i)), None) for i in range(n)]
    with django_capture_on_commit_callbacks(execute=True):
        r = sync.post("/push/jobs", {"deviceId": sync.device_id, "mutations": muts})
    assert r.status_code == 202, r.content
    job = r.json()
    status = sync.get(f"/jobs/{job['id']}").json()  # eager Celery: already done
    assert status["status"] == "done"
    assert [x["status"] for x in status["result"]["results"]] == ["applied"] * n
    assert AppliedMutation.objects.filter(mutation_id__in=[m["mutationId"] for m in muts]).count() == n
    # Redelivering the task changes nothing.
    from omnicare.sync.tasks import apply_push_job

    before = ResourceVersion.objects.count()
    apply_push_job.apply(args=[job["id"]])
    from omnicare.sync.models import PushJob

    # As if the worker died after applying everything but before saving: a stale heartbeat, no progress.
    PushJob.objects.filter(pk=job["id"]).update(
        status="running", progress=0, heartbeat=timezone.now() - timedelta(hours=1)
    )
    apply_push_job.apply(args=[job["id"]])
    assert ResourceVersion.objects.count() == before
    again = PushJob.objects.get(pk=job["id"])
    assert again.status == "done" and again.attempts == 2
    assert [x["status"] for x in again.result["results"]] == ["applied"] * n


def test_client_meta_is_ignored_and_server_meta_assigned(clinic: Any, sync: SyncClient) -> None:
    o = copy.deepcopy(observation("o1", "p1", 73.0))
    o["meta"] = {"versionId": "999", "lastUpdated": "1999-01-01T00:00:00Z"}
    [r] = sync.push(put(o, 1))
    assert r["resource"]["meta"]["versionId"] == "2"


def test_offline_registration_patient_care_team_and_notes_in_one_push(clinic: Any, sync: SyncClient) -> None:
    from tests.omnicare.sync.conftest import care_team

    pid = f"reg-{uuid.uuid4().hex[:6]}"
    # In the client's send order (priority: observations, then Patient, then CareTeam).
    results = sync.push(
        put(observation(f"{pid}-o", pid), None),
        put(patient(pid), None),
        put(care_team(pid, ["dr.test"]), None),
    )
    assert [r["status"] for r in results] == ["applied"] * 3, results
    changes, _, _ = sync.pull_all()
    assert {(c["resourceType"], c["id"]) for c in changes} >= {("Patient", pid), ("Observation", f"{pid}-o")}
    # Registering does not open anyone else's chart: p2 exists and is nurse.test's patient.
    results = sync.push(
        put(care_team("p2", ["dr.test"], team_id="ct-grab"), None),
        put(observation(f"{pid}-p2", "p2"), None),
        put(patient("p2", "Renamed"), 1),
    )
    assert [r["status"] for r in results] == ["rejected"] * 3, results
    assert all(r["outcome"]["issue"][0]["code"] == "forbidden" for r in results)


def test_registering_in_one_push_does_not_carry_over_to_the_next(
    clinic: Any, sync: SyncClient, other_sync: SyncClient
) -> None:
    """The exemption is for the request that created the patient; later writes need the CareTeam. Since issue 18
    the server puts the registering clinician on it at once, so their later writes pass; nobody else's do."""
    pid = f"reg-{uuid.uuid4().hex[:6]}"
    [r] = sync.push(put(patient(pid), None))
    assert r["status"] == "applied"
    [r] = other_sync.push(put(observation(f"{pid}-x", pid), None))
    assert r["status"] == "rejected", r
    [r] = sync.push(put(observation(f"{pid}-o", pid), None))
    assert r["status"] == "applied", r


def test_a_create_without_base_onto_a_deleted_record_is_a_conflict_not_a_resurrection(
    clinic: Any, sync: SyncClient
) -> None:
    """PROTOCOL.md §5, "Push" and pyclient/push_rules.py: the server used to write it (the simulator parked
    it); a deleted record is never brought back by a client that did not see the delete."""
    [r] = sync.push(delete("Observation", "o1", 1, mid="del-o1"))
    assert r["status"] == "applied"
    [r] = sync.push(put(observation("o1", "p1", 70.0), None))  # never saw the delete
    assert r["status"] == "conflict" and r["conflictId"]
    assert current("Observation", "o1").deleted  # still deleted
    # Re-creating on top of the tombstone it saw (the delete's version) is a plain write.
    tomb = current("Observation", "o1").version_id
    [r] = sync.push(put(observation("o1", "p1", 71.0), tomb))
    assert r["status"] == "applied" and not current("Observation", "o1").deleted


def test_a_device_lists_only_its_own_open_conflicts_to_adopt(clinic: Any, sync: SyncClient) -> None:
    """PROTOCOL.md §5 "Conflicts the device lost": ``?deviceId=`` is the caller's conflicts from that device."""
    resources_import(resources=[observation("o1", "p1", 75.0)])
    [r] = sync.push(put(observation("o1", "p1", 68.0), 1))
    assert r["status"] == "conflict"
    mine = sync.get(f"/conflicts?deviceId={sync.device_id}").json()
    assert [c["mutationId"] for c in mine] == [r["mutationId"]]
    assert mine[0]["theirs"]["valueQuantity"]["value"] == 68.0 and mine[0]["deviceId"] == sync.device_id
    assert sync.get("/conflicts?deviceId=another-tablet").json() == []


def test_a_push_refused_midway_by_the_store_is_redone_whole_with_the_same_answers(
    clinic: Any, sync: SyncClient, monkeypatch: Any
) -> None:
    """The first attempt of a push takes no savepoint; when the store refuses its write after writing (what a
    device creating the same new id at the same moment does), the whole request is rolled back and redone the
    careful way: every mutation answered as usual, nothing stored twice, one audit event."""
    from django.db import IntegrityError

    from omnicare.audit.models import AuditEvent
    from omnicare.fhir.repository import FhirStore

    real = FhirStore.apply
    calls: list[int] = []

    def refuse_once(self: FhirStore, writes: Any, **kwargs: Any) -> Any:
        calls.append(len(writes))
        written = real(self, writes, **kwargs)
        if len(calls) == 1:
            raise IntegrityError("duplicate key value violates unique constraint")  # after writing
        return written

    monkeypatch.setattr(FhirStore, "apply", refuse_once)
    before = AuditEvent.objects.filter(action="sync-push").count()
    results = sync.push(
        put(observation("rd1", "p1", 71.0), None, mid="rd-1"),
        put(observation("o1", "p1", 72.0), 1, mid="rd-2"),
        put(observation("rd3", "p2", 73.0), None, mid="rd-3"),  # p2 is not dr.test's patient
    )
    assert [(r["status"], r.get("versionId")) for r in results] == [
        ("applied", 1), ("applied", 2), ("rejected", None)
    ]  # fmt: skip
    assert calls == [2, 2]  # the optimistic attempt, then the careful one
    assert ResourceVersion.objects.filter(resource_type="Observation", resource_id="rd1").count() == 1
    assert current("Observation", "o1").version_id == 2
    assert not Resource.objects.filter(resource_id="rd3").exists()
    assert AppliedMutation.objects.filter(mutation_id__in=["rd-1", "rd-2", "rd-3"]).count() == 3
    # Once each: the push's event and the denial of rd3 (none left from the rolled-back attempt).
    new = AuditEvent.objects.filter(action="sync-push").order_by("id")[before:]
    assert sorted(e.outcome for e in new) == ["denied", "success"]
    monkeypatch.setattr(FhirStore, "apply", real)
    assert sync.push(put(observation("rd1", "p1", 71.0), None, mid="rd-1")) == results[:1]  # replayed


@pytest.mark.django_db(transaction=True)  # the request's transaction is then a real BEGIN, as in production
def test_a_push_costs_the_same_statements_for_one_mutation_or_fifty_and_no_savepoint(
    clinic: Any, sync: SyncClient
) -> None:
    """Per-push cost, not per-mutation: the batch reads the log, the rows and the scope once, writes every
    table once, and takes no savepoint (a refused write redoes the whole push instead)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    sync.push(put(observation("warm", "p1"), None))  # registers the device, warms the scope cache

    def statements(n: int) -> list[str]:
        muts = [put(observation(f"qc{n}-{i}", "p1", 60.0 + i), None) for i in range(n)]
        with CaptureQueriesContext(connection) as ctx:
            assert {r["status"] for r in sync.push(*muts)} == {"applied"}
        return [q["sql"] for q in ctx.captured_queries]

    one, fifty = statements(1), statements(50)
    assert not [q for q in one + fifty if q.upper().startswith("SAVEPOINT")]
    assert len(fifty) <= len(one)
