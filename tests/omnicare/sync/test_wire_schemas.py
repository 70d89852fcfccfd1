"""The sync answers ninja writes are byte for byte what PROTOCOL.md and the clients expect: devices, conflicts,
snapshots, jobs, verify, device-set and recovery-key.

These endpoints return ninja Schema objects (issue 11 item 11); ninja serialises them. What a device would
notice if that changed: another key order, spaces after separators, a null key that was absent (a
``MutationResult`` omits what it does not carry), a datetime cut to milliseconds, a UUID or an empty string
where the protocol says null. Each answer is compared with the bytes built here from the stored row, in the
protocol's key order with compact separators. The schemas are also what /api/openapi.json shows.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from omnicare.core.errors import operation_outcome
from omnicare.fhir.models import Resource
from omnicare.fhir.services import resources_import
from omnicare.sync import device_sets
from omnicare.sync.models import Conflict, Device, PushJob, Snapshot
from omnicare.sync.recovery import _public_raw, recovery_private_key, recovery_token
from pyclient.recovery import ALG, key_id_of
from tests.omnicare.sync.conftest import SyncClient, care_team, delete, observation, patient, put, seed


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


def _json_answer(r: Any) -> bytes:
    """The body of a 200 JSON answer (any charset parameter on the media type aside)."""
    assert r.status_code == 200, r.content
    assert r["Content-Type"].split(";")[0] == "application/json", r["Content-Type"]
    return bytes(r.content)


def _change(row: Resource) -> dict[str, Any]:
    """A verify change: pull-shaped (PROTOCOL.md 6.5), seq 0, the stored body as stored."""
    return {"seq": 0, "resourceType": row.resource_type, "id": row.resource_id, "versionId": row.version_id,
            "deleted": row.deleted, "resource": None if row.deleted else row.body}


def test_verify_answer_is_compact_and_in_protocol_order(clinic: Any, sync: SyncClient) -> None:
    assert _json_answer(sync.post("/verify", {"deviceId": sync.device_id, "held": []})) == (
        b'{"changes":[],"gone":[],"stale":0}')
    seed(observation("o1", "p1", 81.0), patient("p1", "\u0141\u00f3d\u017a"), observation("o4", "p1"))
    [deleted] = sync.push(delete("Observation", "o4", 1))
    assert deleted["status"] == "applied", deleted
    r = sync.post("/verify", {"deviceId": sync.device_id, "held": [
        ["Observation", "o1", 1],  # stale
        ["Patient", "p1", 0],  # quarantined: sent whatever its version (a non-ASCII name: \u escapes)
        ["Patient", "p1x", 1],  # never existed: gone
        ["Observation", "o2", 1],  # another clinician's patient: gone
        ["Observation", "o4", 1],  # deleted since: a tombstone, resource null
    ]})
    rows = {(x.resource_type, x.resource_id): x for x in Resource.objects.all()}
    expected = {
        "changes": [_change(rows["Observation", "o1"]), _change(rows["Patient", "p1"]),
                    _change(rows["Observation", "o4"])],
        "gone": [{"resourceType": "Patient", "id": "p1x"}, {"resourceType": "Observation", "id": "o2"}],
        "stale": 2,
    }
    body = _json_answer(r)
    assert body == _compact(expected)
    assert b'"value":81.0' in body and b'"family":"\\u0141\\u00f3d\\u017a"' in body and b'"resource":null' in body
    assert b'"patients"' not in body  # the audit's patient list is not sent


def test_device_set_answers_are_compact_and_in_protocol_order(clinic: Any, sync: SyncClient) -> None:
    user = clinic["user"]
    seed(patient("p3", "Three"), care_team("p3", [user.username]), observation("o3", "p3"))
    sync.register()
    body = _json_answer(sync.get("/device-set", deviceId=sync.device_id))
    offer = device_sets.device_set_offer(user=user, device_id=sync.device_id)
    expected = {"budgetBytes": offer.budget_bytes, "modelVersion": offer.model_version,
                "patients": [{"id": c.patient_id, "reasons": list(c.reasons), "score": c.score, "bytes": c.json_bytes,
                              "records": c.records} for c in offer.candidates]}
    assert [p["id"] for p in expected["patients"]] == ["p1", "p3"]
    assert body == _compact(expected)
    assert b'"score":0.6,' in body  # a float as Python writes it

    r = sync.post("/device-set", {"deviceId": sync.device_id, "patients": ["p3", "p2", "p1", "p1"]})
    assert _json_answer(r) == b'{"patients":["p1","p3"]}'  # cut to the scope, sorted, once each
    assert _json_answer(sync.post("/device-set", {"deviceId": sync.device_id})) == b'{"patients":[]}'


def test_recovery_key_answer_is_compact_and_in_protocol_order(clinic: Any, sync: SyncClient) -> None:
    sync.register()
    body = _json_answer(sync.get("/recovery-key", deviceId=sync.device_id))
    key = recovery_private_key()
    raw = _public_raw(key)
    assert body == _compact({
        "alg": ALG, "keyId": key_id_of(raw), "publicKey": base64.urlsafe_b64encode(raw).rstrip(b"=").decode(),
        "user": clinic["user"].get_username(),
        "token": recovery_token(key=key, user=clinic["user"], device_id=sync.device_id),
    })


def test_verify_device_set_and_recovery_key_errors_stay_operation_outcomes(clinic: Any, sync: SyncClient) -> None:
    """The 4xx answers are the API's OperationOutcomes (``omnicare.api``), written by Django's JsonResponse."""

    def outcome(status: int, code: str, diagnostics: str, expression: list[str] | None = None) -> tuple[int, bytes]:
        return status, json.dumps(operation_outcome(code=code, diagnostics=diagnostics, expression=expression)).encode()

    sync.register()
    unregistered = "This device is not registered: POST /api/sync/devices first"
    bad_id = "deviceId must be 1-64 characters of A-Z, a-z, 0-9, '.', '_', ':' or '-'"
    cases = [
        (sync.get("/device-set"), outcome(400, "invalid", "deviceId is required", ["deviceId"])),
        (sync.get("/device-set", deviceId="unreg-1"), outcome(403, "forbidden", unregistered)),
        (sync.post("/device-set", {"deviceId": "unreg-1"}), outcome(403, "forbidden", unregistered)),
        (sync.post("/device-set", {"deviceId": sync.device_id, "patients": "x"}),
         outcome(400, "invalid", "Invalid request: body.payload.patients", ["body.payload.patients"])),
        (sync.get("/recovery-key"), outcome(400, "invalid", "deviceId is required", ["deviceId"])),
        (sync.get("/recovery-key", deviceId="bad id!"), outcome(400, "invalid", bad_id, ["deviceId"])),
        (sync.post("/verify", {"held": []}),
         outcome(400, "invalid", "deviceId must be a non-empty string", ["deviceId"])),
        (sync.post("/verify", "[1"), outcome(400, "structure", "Malformed JSON body")),
        (sync.post("/verify", {"deviceId": sync.device_id, "held": [["Patient", "p1"]]}),
         outcome(400, "invalid", "held[0] must be [type, id, version >= 0]", ["held[0]"])),
    ]
    for r, (status, body) in cases:
        assert (r.status_code, r["Content-Type"], r.content) == (status, "application/fhir+json", body)


def test_openapi_documents_the_verify_device_set_and_recovery_key_answers(db: Any, client: Any) -> None:
    """/api/docs shows each answer's schema, its fields in the order they are sent, all of them required."""
    spec = client.get("/api/openapi.json").json()
    components = spec["components"]["schemas"]
    answers = [
        ("/api/sync/verify", "post", "VerifyOut", ["changes", "gone", "stale"]),
        ("/api/sync/device-set", "get", "DeviceSetOfferOut", ["budgetBytes", "modelVersion", "patients"]),
        ("/api/sync/device-set", "post", "DeviceSetOut", ["patients"]),
        ("/api/sync/recovery-key", "get", "RecoveryKeyOut", ["alg", "keyId", "publicKey", "user", "token"]),
    ]
    for path, method, name, fields in answers:
        content = spec["paths"][path][method]["responses"]["200"]["content"]
        assert content == {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}, (path, method)
        assert list(components[name]["properties"]) == fields == components[name]["required"], name
    patient_fields = components["DeviceSetPatientOut"]["properties"]
    assert list(patient_fields) == ["id", "reasons", "score", "bytes", "records"]
    assert components["DeviceSetOfferOut"]["properties"]["patients"]["items"] == {
        "$ref": "#/components/schemas/DeviceSetPatientOut"}
    assert patient_fields["score"]["type"] == "number" and components["VerifyOut"]["properties"]["changes"][
        "items"] == {"$ref": "#/components/schemas/ChangeOut"}
