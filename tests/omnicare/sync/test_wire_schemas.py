"""The devices, conflicts, snapshots and jobs answers are byte for byte what PROTOCOL.md and the clients expect.

These endpoints return ninja Schema objects (issue 11 item 11); ninja serialises them. What a device would
notice if that changed: another key order, spaces after separators, a null key that was absent (a
``MutationResult`` omits what it does not carry), a datetime cut to milliseconds, a UUID or an empty string
where the protocol says null. Each answer is compared with the bytes built here from the stored row, in the
protocol's key order with compact separators. The schemas are also what /api/openapi.json shows.
"""

from __future__ import annotations

import json
from typing import Any

from omnicare.fhir.models import Resource
from omnicare.fhir.services import resources_import
from omnicare.sync.models import Conflict, Device, PushJob, Snapshot
from tests.omnicare.sync.conftest import SyncClient, observation, put


def _compact(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def _iso(dt: Any) -> str | None:
    return dt.isoformat() if dt else None


def _device(d: Device) -> dict[str, Any]:
    return {"deviceId": d.device_id, "name": d.name, "created": d.created.isoformat(), "lastSeen": _iso(d.last_seen),
            "lastMutationId": d.last_mutation_id, "lastPullSeq": d.last_pull_seq}


def _conflict(c: Conflict) -> dict[str, Any]:
    return {
        "id": str(c.id), "resourceType": c.resource_type, "resourceId": c.resource_id, "status": c.status,
        "baseVersion": c.base_version, "oursVersion": c.ours_version, "base": c.base, "ours": c.ours,
        "theirs": c.theirs, "paths": c.paths, "conflicts": c.details, "author": c.author.get_username(),
        "deviceId": c.device_id, "mutationId": c.mutation_id, "created": c.created.isoformat(),
        "resolution": c.resolution or None, "resolvedBy": c.resolved_by.get_username() if c.resolved_by else None,
        "resolvedAt": _iso(c.resolved_at), "resolvedVersion": c.resolved_version,
    }  # fmt: skip


def test_device_answers_are_compact_and_in_protocol_order(clinic: Any, sync: SyncClient) -> None:
    r = sync.client.post("/api/sync/devices", json.dumps({"deviceId": "ward-tablet-1", "name": "Ward 3 tablet"}),
                         content_type="application/json")
    assert r.status_code == 200 and r["Content-Type"].startswith("application/json")
    d = Device.objects.get(device_id="ward-tablet-1")
    assert r.content == _compact(_device(d))
    assert b'"lastSeen":' in r.content and "." in r.json()["created"]  # microseconds kept, not cut to ms
    listed = sync.get("/devices")
    assert listed.content == _compact([_device(x) for x in Device.objects.filter(user=clinic["user"]).order_by("id")])


def test_conflict_answers_are_compact_and_in_protocol_order(clinic: Any, sync: SyncClient) -> None:
    resources_import(resources=[observation("o1", "p1", 75.0)])
    [pushed] = sync.push(put(observation("o1", "p1", 68.0), 1))
    c = Conflict.objects.get(pk=pushed["conflictId"])
    assert sync.get("/conflicts").content == _compact([_conflict(c)])
    one = sync.get(f"/conflicts/{c.id}")
    assert one.content == _compact(_conflict(c)) and b'"resolution":null' in one.content  # "" on the row
    r = sync.post(f"/conflicts/{c.id}/resolve", {"resolution": "keep-mine"})
    assert r.status_code == 200, r.content
    c.refresh_from_db()
    # The write result is a MutationResult: the written version, and no null conflictId or outcome.
    written = Resource.objects.get(resource_type="Observation", resource_id="o1").body
    result = r.json()["result"]
    assert result == {"mutationId": c.mutation_id, "status": "applied", "versionId": 3, "resource": written}
    assert list(result) == ["mutationId", "status", "versionId", "resource"]
    assert r.content == _compact({"conflict": _conflict(c), "result": result})


def test_snapshot_and_job_answers_are_compact_and_carry_no_extra_nulls(
    clinic: Any, sync: SyncClient, eager_celery: Any, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        r = sync.post("/snapshots", {"deviceId": sync.device_id})
    assert r.status_code == 202 and r["Location"] == f"/api/sync/snapshots/{r.json()['id']}"
    s = Snapshot.objects.get(pk=r.json()["id"])
    status = sync.get(f"/snapshots/{s.id}")
    assert status.content == _compact({"id": str(s.id), "status": s.status, "seq": s.seq, "count": s.count,
                                       "size": s.size, "cursor": s.cursor or None})
    assert s.status == "ready" and s.cursor

    mutations = [put(observation("j1", "p1", 70.0), None), put(observation("j2", "p1", 71.0), None)]
    with django_capture_on_commit_callbacks(execute=True):
        r = sync.post("/push/jobs", {"deviceId": sync.device_id, "mutations": mutations})
    assert r.status_code == 202 and r["Location"] == f"/api/sync/jobs/{r.json()['id']}", r.content
    job = PushJob.objects.get(pk=r.json()["id"])
    answer = sync.get(f"/jobs/{job.id}")
    body = answer.json()
    assert list(body) == ["id", "status", "progress", "total", "result", "error"]
    assert (body["id"], body["status"], body["progress"], body["total"], body["error"]) == (str(job.id), "done", 2, 2,
                                                                                             None)
    results = body["result"]["results"]
    assert [(x["mutationId"], x["status"], x["versionId"]) for x in results] == [
        (m["mutationId"], "applied", 1) for m in mutations]
    assert all(set(x) == {"mutationId", "status", "versionId", "resource"} for x in results)  # no null extras
    assert list(body["result"]) == ["results"] and answer.content == _compact(body)
