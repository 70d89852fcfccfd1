"""Celery jobs: first-sync snapshots and large push batches, eagerly and on a real worker over Redis."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest

from omnicare.fhir.models import ResourceVersion
from omnicare.fhir.services import resources_import
from omnicare.sync import services
from omnicare.sync.models import PushJob, Snapshot
from tests.conftest import requires_redis
from tests.omnicare.sync.conftest import SyncClient, observation, put, seed


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


@pytest.fixture
def worker_queue(transactional_db: Any, settings: Any) -> Any:
    """A real Celery worker (solo pool) on the real Redis broker, consuming a queue of its own."""
    if not os.environ.get("REDIS_URL"):
        pytest.skip("needs REDIS_URL=redis://...")
    from tests.live import REPO_ROOT, child_env, database_url_from_settings

    queue = f"sync-test-{uuid.uuid4().hex[:10]}"
    env = child_env(database_url=database_url_from_settings(dict(settings.DATABASES["default"])))
    env["CELERY_TASK_ALWAYS_EAGER"] = "0"
    proc = subprocess.Popen(  # noqa: S603 (fixed argv)
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "omnicare",
            "worker",
            "--pool=solo",
            "-Q",
            queue,
            "--loglevel=WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        yield queue
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        if out and out.strip():
            print(out.decode(errors="replace")[-4000:])


def _wait(pred: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError("timed out waiting for the worker")


@requires_redis
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_real_worker_applies_push_job_and_builds_snapshot_idempotently(
    clinic: Any, user: Any, worker_queue: str
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
    apply_push_job.apply_async(args=[str(job.id)], queue=worker_queue)
    apply_push_job.apply_async(args=[str(job.id)], queue=worker_queue)  # a redelivery
    _wait(lambda: PushJob.objects.get(pk=job.id).status == PushJob.DONE)
    snap = services.snapshot_request(user=user, device_id="d")
    build_snapshot.apply_async(args=[str(snap.id)], queue=worker_queue)
    _wait(lambda: Snapshot.objects.get(pk=snap.id).status == Snapshot.READY)
    result = PushJob.objects.get(pk=job.id).result
    assert [r["status"] for r in result["results"]] == ["applied"] * 120
    assert ResourceVersion.objects.count() == before + 120
    image = json.loads(gzip.decompress(bytes(Snapshot.objects.get(pk=snap.id).data)))
    assert {f"rw{i}" for i in range(120)} <= {c["id"] for c in image["changes"]}
