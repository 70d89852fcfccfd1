"""Celery jobs: first-sync snapshots and large push batches, eagerly and on a real worker over Redis."""

from __future__ import annotations

import gzip
import json
import uuid
from typing import Any

import pytest

from omnicare.fhir.models import ResourceVersion
from omnicare.fhir.services import resources_import
from omnicare.sync import services
from omnicare.sync.models import PushJob, Snapshot
from tests.conftest import requires_redis
from tests.omnicare.sync.conftest import SyncClient, Workers, observation, put, seed, wait_for


def test_snapshot_then_incremental_pull(
    clinic: Any, sync: SyncClient, eager_celery: Any, django_capture_on_commit_callbacks: Any
) -> None:
    seed(*[observation(f"s{i}", "p1", float(i)) for i in range(30)])
    with django_capture_on_commit_callbacks(execute=True):
        r = sync.post("/snapshots", {"deviceId": sync.device_id})
    assert r.status_code == 202, r.content
    sid = r.json()["id"]
    status = sync.get(f"/snapshots/{sid}").json()
    assert (
        status["status"] == "ready" and status["count"] == 34
    )  # p1, ct-p1, o1, 30 observations, my Practitioner
    data = sync.get(f"/snapshots/{sid}/data")
    assert data["Content-Encoding"] == "gzip"
    image = json.loads(gzip.decompress(data.content))
    ids = {(c["resourceType"], c["id"]) for c in image["changes"]}
    assert ("Observation", "o2") not in ids and ("Patient", "p2") not in ids  # not my patient
    assert {("Observation", f"s{i}") for i in range(30)} <= ids and ("Practitioner", "pr-dr-test") in ids
    resources_import(resources=[observation("s1", "p1", 100.0), observation("o2", "p2", 5.0)])
    changes, _, _ = sync.pull_all(image["cursor"])
    assert [(c["id"], c["versionId"]) for c in changes] == [("s1", 2)]


def test_snapshot_task_is_idempotent(clinic: Any, user: Any) -> None:
    from omnicare.sync.tasks import build_snapshot

    snap = services.snapshot_request(user=user, device_id="d")
    build_snapshot.apply(args=[str(snap.id)])
    first = Snapshot.objects.get(pk=snap.id)
    resources_import(resources=[observation("o1", "p1", 1.0)])
    build_snapshot.apply(args=[str(snap.id)])  # redelivered after a new write: the image does not change
    again = Snapshot.objects.get(pk=snap.id)
    assert bytes(again.data) == bytes(first.data) and again.seq == first.seq


def test_someone_elses_snapshot_and_job_are_not_found(
    clinic: Any, sync: SyncClient, other_sync: SyncClient, eager_celery: Any
) -> None:
    snap = services.snapshot_request(user=clinic["user"], device_id="d")
    assert other_sync.get(f"/snapshots/{snap.id}").status_code == 404
    assert other_sync.get("/snapshots/not-a-uuid").status_code == 404
    assert other_sync.get(f"/jobs/{uuid.uuid4()}").status_code == 404


@requires_redis
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_real_worker_applies_push_job_and_builds_snapshot_idempotently(
    clinic: Any, user: Any, celery_workers: Workers
) -> None:
    from omnicare.sync.tasks import apply_push_job, build_snapshot

    muts = [put(observation(f"rw{i}", "p1", float(i)), None) for i in range(120)]
    job = services.push_job_create(
        user=user,
        request=services.parse_push(
            {"deviceId": "d", "mutations": muts}, max_mutations=services.MAX_JOB_MUTATIONS
        ),
    )
    before = ResourceVersion.objects.count()
    celery_workers.start()
    worker_queue = celery_workers.queue
    apply_push_job.apply_async(args=[str(job.id)], queue=worker_queue)
    apply_push_job.apply_async(args=[str(job.id)], queue=worker_queue)  # a redelivery
    wait_for(lambda: PushJob.objects.get(pk=job.id).status == PushJob.DONE, 60, "the job")
    snap = services.snapshot_request(user=user, device_id="d")
    build_snapshot.apply_async(args=[str(snap.id)], queue=worker_queue)
    wait_for(lambda: Snapshot.objects.get(pk=snap.id).status == Snapshot.READY, 60, "the snapshot")
    result = PushJob.objects.get(pk=job.id).result
    assert [r["status"] for r in result["results"]] == ["applied"] * 120
    assert ResourceVersion.objects.count() == before + 120
    image = json.loads(gzip.decompress(bytes(Snapshot.objects.get(pk=snap.id).data)))
    assert {f"rw{i}" for i in range(120)} <= {c["id"] for c in image["changes"]}
