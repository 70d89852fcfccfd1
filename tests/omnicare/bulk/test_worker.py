"""Bulk jobs on a REAL Celery worker over Redis (PostgreSQL or the SQLite file DB): an export runs in the
worker process, and an import whose worker is killed (SIGKILL) mid-job resumes on a new worker from its
checkpoint with nothing lost or duplicated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from omnicare.bulk.models import BulkJob
from omnicare.bulk.services import IMPORT_BATCH
from omnicare.fhir.models import Resource, ResourceVersion
from tests.conftest import requires_redis

from .conftest import BASE, client_for, ndjson, wait_manifest

pytestmark = [requires_redis, pytest.mark.redis, pytest.mark.django_db(transaction=True)]


class Worker:
    def __init__(self, env: dict[str, str], queue: str) -> None:
        from tests.live import REPO_ROOT

        self.proc = subprocess.Popen(  # noqa: S603 (fixed argv)
            [sys.executable, "-m", "celery", "-A", "omnicare", "worker", "--pool=solo", "-Q", queue,
             "--loglevel=WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def worker_env(settings: Any, tmp_path: Any) -> Iterator[tuple[dict[str, str], str]]:
    if not os.environ.get("REDIS_URL"):
        pytest.skip("needs REDIS_URL=redis://...")
    from tests.live import child_env, database_url_from_settings

    env = child_env(database_url=database_url_from_settings(dict(settings.DATABASES["default"])))
    env["CELERY_TASK_ALWAYS_EAGER"] = "0"
    env["OMNICARE_BULK_DIR"] = str(settings.OMNICARE_BULK_DIR)
    yield env, f"bulk-test-{uuid.uuid4().hex[:10]}"


def _route(monkeypatch: Any, queue: str) -> None:
    """Send this test's bulk tasks to its own worker's queue (never a queue another test consumes)."""
    from omnicare.bulk import tasks

    for task in (tasks.bulk_import, tasks.bulk_export):
        monkeypatch.setattr(task, "delay", lambda job_id, _t=task: _t.apply_async(args=[job_id], queue=queue))


def _until(pred: Any, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out waiting for the worker"
        time.sleep(0.2)


def test_export_runs_on_a_real_worker(integration: Any, worker_env: Any, monkeypatch: Any) -> None:
    from omnicare.fhir.services import resources_import

    env, queue = worker_env
    _route(monkeypatch, queue)
    resources_import(resources=[{"resourceType": "Patient", "id": f"w{i}", "name": [{"family": "W"}]} for i in range(50)])
    worker = Worker(env, queue)
    try:
        client: Client = client_for(integration)
        r = client.get(f"{BASE}/Patient/$export", HTTP_PREFER="respond-async")
        assert r.status_code == 202
        m = wait_manifest(client, r["Content-Location"], timeout=180)
        assert sorted(x["id"] for x in ndjson(client, m["output"][0]["url"])) == sorted(f"w{i}" for i in range(50))
    finally:
        worker.stop()


def test_import_survives_a_killed_worker(integration: Any, worker_env: Any, monkeypatch: Any) -> None:
    from omnicare.bulk.tasks import bulk_import

    env, queue = worker_env
    _route(monkeypatch, queue)
    n = 8000  # four batches of IMPORT_BATCH (2,000): the kill lands after the first commit, before the last
    body = b"".join(json.dumps({"resourceType": "Patient", "id": f"k{i}", "name": [{"family": f"K{i}"}]}).encode()
                    + b"\n" for i in range(n))
    worker = Worker(env, queue)
    client = client_for(integration)
    try:
        r = client.post(f"{BASE}/$import", body, content_type="application/fhir+ndjson", HTTP_PREFER="respond-async")
        assert r.status_code == 202
        job_id = r["Content-Location"].rsplit("/", 1)[1]
        _until(lambda: BulkJob.objects.get(pk=job_id).lines_done >= IMPORT_BATCH)
        worker.kill()  # mid-job, without any chance to clean up
    finally:
        worker.stop()
    job = BulkJob.objects.get(pk=job_id)
    assert job.status == BulkJob.RUNNING and IMPORT_BATCH <= job.lines_done < n, (job.status, job.lines_done)
    committed = job.lines_done
    assert Resource.objects.filter(resource_type="Patient").count() == committed  # checkpoint == rows
    worker = Worker(env, queue)
    try:
        bulk_import.apply_async(args=[job_id], queue=queue)  # the redelivery
        m = wait_manifest(client, r["Content-Location"], timeout=300)
    finally:
        worker.stop()
    assert m["output"] == [{"type": "Patient", "count": n}]
    assert Resource.objects.filter(resource_type="Patient").count() == n
    assert ResourceVersion.objects.filter(resource_type="Patient").count() == n  # nothing written twice
    assert BulkJob.objects.get(pk=job_id).attempts == 2
