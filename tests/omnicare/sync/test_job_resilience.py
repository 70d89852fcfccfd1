"""Push jobs commit in bounded chunks, survive a hard-killed worker and never leave orphaned rows.

The kill test runs a real Celery worker on the real Redis broker, SIGKILLs it in the middle of a job
(some chunks committed, the rest not), and checks that the sweeper re-queues the job, a second worker
resumes it after its last committed chunk, and every mutation is stored exactly once.
"""

from __future__ import annotations

import signal
import time
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from omnicare.fhir.models import Resource, ResourceVersion
from omnicare.sync import jobs, services
from omnicare.sync.models import PushJob, PushJobChunk
from tests.conftest import requires_redis
from tests.omnicare.sync.conftest import Workers, observation, put, wait_for


def _job(user: Any, n: int, prefix: str) -> PushJob:
    muts = [put(observation(f"{prefix}{i}", "p1", float(i)), None) for i in range(n)]
    req = services.parse_push({"deviceId": "d", "mutations": muts}, max_mutations=services.MAX_JOB_MUTATIONS)
    return services.push_job_create(user=user, request=req)


def test_a_job_commits_in_chunks_with_progress(clinic: Any, user: Any, settings: Any) -> None:
    settings.OMNICARE_JOB_CHUNK = 10
    job = _job(user, 35, "ch")
    assert job.status == PushJob.QUEUED and job.total == 35 and job.progress == 0
    done = services.push_job_run(job_id=str(job.id))
    assert done.status == PushJob.DONE and done.progress == 35 and done.attempts == 1
    assert list(PushJobChunk.objects.filter(job=job).order_by("start").values_list("start", flat=True)) == [
        0, 10, 20, 30,
    ]  # fmt: skip
    assert [r["status"] for r in done.result["results"]] == ["applied"] * 35


def test_a_job_resumes_after_its_last_committed_chunk(
    clinic: Any, user: Any, settings: Any, eager_celery: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.OMNICARE_JOB_CHUNK = 10
    job = _job(user, 30, "rs")
    calls: list[int] = []
    real_push = services.push

    def dying_push(*, user: Any, request: Any, **options: Any) -> Any:
        calls.append(len(request.mutations))
        if len(calls) == 2:
            raise SystemExit("worker killed")  # the second chunk never commits
        return real_push(user=user, request=request, **options)

    monkeypatch.setattr(jobs, "push", dying_push)  # the name the job runner calls
    with pytest.raises(SystemExit):
        services.push_job_run(job_id=str(job.id))
    half = PushJob.objects.get(pk=job.id)
    assert half.status == PushJob.RUNNING and half.progress == 10
    assert Resource.objects.filter(resource_id__startswith="rs").count() == 10
    # The sweeper sees the stale heartbeat, re-queues it and sends it (eager here: it runs inline, and
    # starts at mutation 10).
    PushJob.objects.filter(pk=job.id).update(heartbeat=timezone.now() - timedelta(hours=1))
    report = services.push_jobs_sweep()
    assert (report.requeued, report.sent, report.failed) == (1, 1, 0)
    assert calls[2:] == [10, 10]
    done = PushJob.objects.get(pk=job.id)
    assert done.status == PushJob.DONE and done.attempts == 2
    assert [r["status"] for r in done.result["results"]] == ["applied"] * 30
    assert set(
        Resource.objects.filter(resource_id__startswith="rs").values_list("version_id", flat=True)
    ) == {1}


@requires_redis
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_a_job_survives_its_worker_killed_with_sigkill(
    clinic: Any, user: Any, settings: Any, celery_workers: Workers
) -> None:
    n = 1000
    job = _job(user, n, "kw")
    before = ResourceVersion.objects.count()
    first = celery_workers.start(OMNICARE_JOB_CHUNK="20")
    assert services.push_job_enqueue(job_id=str(job.id))
    wait_for(lambda: PushJob.objects.get(pk=job.id).progress >= 40, 120, "the first chunks")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    dead = PushJob.objects.get(pk=job.id)
    assert dead.status == PushJob.RUNNING and 40 <= dead.progress < n, (dead.status, dead.progress)
    # Nothing applies it now: the message is unacknowledged and the broker would redeliver it only after
    # the visibility timeout. The sweeper notices the stale heartbeat and re-queues it.
    settings.OMNICARE_JOB_STALE_SECONDS = 1
    time.sleep(1.2)
    report = services.push_jobs_sweep()
    assert report.requeued == 1 and report.sent == 1
    celery_workers.start(OMNICARE_JOB_CHUNK="20")
    wait_for(lambda: PushJob.objects.get(pk=job.id).status == PushJob.DONE, 180, "the resumed job")
    done = PushJob.objects.get(pk=job.id)
    assert done.attempts == 2 and done.progress == n
    assert [r["status"] for r in done.result["results"]] == ["applied"] * n
    # Exactly once: one version per mutation, every resource at version 1, chunks contiguous.
    assert ResourceVersion.objects.count() == before + n
    assert set(
        Resource.objects.filter(resource_id__startswith="kw").values_list("version_id", flat=True)
    ) == {1}
    starts = list(PushJobChunk.objects.filter(job=job).order_by("start").values_list("start", flat=True))
    assert starts == list(range(0, n, 20))


def test_the_sweeper_resends_a_snapshot_whose_task_was_lost(
    clinic: Any, user: Any, eager_celery: Any
) -> None:
    from omnicare.sync.models import Snapshot

    lost = services.snapshot_request(user=user, device_id="d")  # its task never reached a worker
    fresh = services.snapshot_request(user=user, device_id="d")
    Snapshot.objects.filter(pk=lost.pk).update(created=timezone.now() - timedelta(hours=1))
    report = services.push_jobs_sweep()
    assert report.snapshots == 1
    assert Snapshot.objects.get(pk=lost.pk).status == Snapshot.READY  # built (eager) from the sweep
    assert Snapshot.objects.get(pk=fresh.pk).status == Snapshot.PENDING  # young: its own task may still come
