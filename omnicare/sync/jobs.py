"""Push jobs: batches larger than one push, applied by a Celery job with the same per-mutation rules."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from omnicare.access.services import device_check
from omnicare.core.broker import enqueue
from omnicare.core.errors import (
    ApiError,
    NotFound,
)
from omnicare.fhir.trail import audited
from pyclient.protocol import (
    PushRequest,
)

from .cursor import User
from .devices import device_register
from .models import PushJob, PushJobChunk, Snapshot
from .push import MAX_JOB_MUTATIONS, parse_push, push, push_attempts, push_audit

# ---------------------------------------------------------------------------------------------------------
# Push jobs (large batches through Celery)
# ---------------------------------------------------------------------------------------------------------


def _job_setting(name: str, default: float) -> float:
    return float(getattr(settings, name, default))


def push_job_create(*, user: User, request: PushRequest) -> PushJob:
    """Store a batch for :func:`push_job_run`, queued and not yet handed to the broker (the outbox row):
    the caller commits, then calls :func:`push_job_enqueue`; the sweeper retries what was never sent."""
    device_register(user=user, device_id=request.device_id)
    return PushJob.objects.create(
        user=user, device_id=request.device_id, request=request.to_json(), total=len(request.mutations)
    )


def push_job_enqueue(*, job_id: str) -> bool:
    """Hand a committed job to the broker (after commit). False when the broker is unreachable (the row
    stays queued with no outbox mark; the API then answers 503 and removes it, the sweeper retries it)."""
    from .tasks import apply_push_job  # noqa: PLC0415 - deferred: the tasks module imports this one (Celery)

    if not enqueue(apply_push_job, str(job_id)):
        return False
    PushJob.objects.filter(pk=job_id, enqueued__isnull=True).update(enqueued=timezone.now())
    return True


def _job_claim(job_id: str) -> bool:
    """Take the job for this worker: queued, or running with a stale heartbeat (its worker died). A
    duplicate delivery of a job that another live worker runs (or that is finished) gets False."""
    now = timezone.now()
    stale = now - timedelta(seconds=_job_setting("OMNICARE_JOB_STALE_SECONDS", 60))
    return bool(
        PushJob.objects.filter(pk=job_id)
        .filter(Q(status=PushJob.QUEUED) | Q(status=PushJob.RUNNING, heartbeat__lt=stale))
        .update(status=PushJob.RUNNING, heartbeat=now, started=now, attempts=F("attempts") + 1)
    )


def _job_fail(job: PushJob, error: str) -> PushJob:
    job.status, job.error, job.finished = PushJob.FAILED, error[:500], timezone.now()
    job.save(update_fields=["status", "error", "finished"])
    return job


def push_job_run(*, job_id: str) -> PushJob:
    """Apply a stored batch in chunks of ``OMNICARE_JOB_CHUNK`` mutations, each committed in its own
    transaction with its audit event, its results and the job's progress. So other writers never wait for
    the whole job, and a job whose worker died resumes after its last committed chunk (a re-run of any
    chunk replays its mutations' stored results: nothing is applied twice)."""
    job = PushJob.objects.select_related("user").get(pk=job_id)
    if job.status in (PushJob.DONE, PushJob.FAILED) or not _job_claim(job_id):
        return job
    job.refresh_from_db()
    try:
        request = parse_push(job.request, max_mutations=MAX_JOB_MUTATIONS)
        device_check(user=job.user, device_id=request.device_id)  # revoked after it was queued: not applied
    except ApiError as exc:
        return _job_fail(job, exc.diagnostics)
    size = max(1, int(_job_setting("OMNICARE_JOB_CHUNK", 100)))
    start = job.progress
    while start < len(request.mutations):
        chunk = PushRequest(device_id=request.device_id, mutations=request.mutations[start : start + size])

        def run(optimistic: bool, chunk: PushRequest = chunk, start: int = start) -> None:
            # One transaction per attempt (push_attempts): the chunk, its audit event, results and progress.
            with audited(user=job.user, action="sync-push", device_id=request.device_id,
                         detail={"job": str(job.pk), "from": start}) as note:  # fmt: skip
                response = push(user=job.user, request=chunk, optimistic=optimistic)
                push_audit(note=note, request=chunk, response=response)
                PushJobChunk.objects.update_or_create(
                    job=job, start=start, defaults={"results": response.to_json()["results"]}
                )
                PushJob.objects.filter(pk=job.pk).update(progress=start + len(chunk.mutations),
                                                         heartbeat=timezone.now())

        try:
            push_attempts(run)
            start += len(chunk.mutations)
        except ApiError as exc:
            return _job_fail(job, exc.diagnostics)
    results: list[Any] = []
    for c in PushJobChunk.objects.filter(job=job).order_by("start"):
        results.extend(c.results)
    job.status, job.progress, job.result, job.finished = PushJob.DONE, start, {"results": results}, timezone.now()
    job.save(update_fields=["status", "progress", "result", "finished"])
    return job


@dataclass(frozen=True)
class SweepReport:
    requeued: int  # running jobs whose worker stopped sending heartbeats
    sent: int  # queued jobs (re)sent to the broker: never sent, or sent long ago and never started
    failed: int  # gave up after OMNICARE_JOB_MAX_ATTEMPTS
    snapshots: int = 0  # pending snapshots whose task was lost (sent long ago, never built): sent again


def push_jobs_sweep() -> SweepReport:
    """The beat task's body (every ~15 s): re-queue jobs whose worker died, send outbox rows the broker
    never got, give up on jobs that keep killing their workers, and re-send snapshots pending for longer than
    ``OMNICARE_JOB_LOST_SECONDS`` (their task was lost). Safe to run anywhere, any time."""
    now = timezone.now()
    stale = now - timedelta(seconds=_job_setting("OMNICARE_JOB_STALE_SECONDS", 60))
    lost = now - timedelta(seconds=_job_setting("OMNICARE_JOB_LOST_SECONDS", 600))
    grace = now - timedelta(seconds=5)  # the API enqueues its own job right after commit
    max_attempts = int(_job_setting("OMNICARE_JOB_MAX_ATTEMPTS", 5))
    dead = PushJob.objects.filter(status=PushJob.RUNNING, heartbeat__lt=stale)
    failed = dead.filter(attempts__gte=max_attempts).update(
        status=PushJob.FAILED, finished=now, error="The job stopped its worker too many times; not finished"
    )
    revived = list(dead.values_list("pk", flat=True)[:500])
    requeued = PushJob.objects.filter(pk__in=revived, status=PushJob.RUNNING, heartbeat__lt=stale).update(
        status=PushJob.QUEUED, enqueued=None, heartbeat=now
    )
    todo = PushJob.objects.filter(status=PushJob.QUEUED).filter(
        Q(pk__in=revived) | Q(enqueued__isnull=True, created__lt=grace) | Q(enqueued__lt=lost)
    )
    sent = 0
    for job_id in list(todo.values_list("pk", flat=True)[:500]):
        PushJob.objects.filter(pk=job_id).update(enqueued=None)
        if not push_job_enqueue(job_id=str(job_id)):
            break  # broker still down: the next sweep tries again
        sent += 1
    snapshots = 0

    from .tasks import build_snapshot  # noqa: PLC0415 - deferred: the tasks module imports this one (Celery)

    for snap_id in list(Snapshot.objects.filter(status=Snapshot.PENDING, created__lt=lost).values_list("pk", flat=True)[:100]):
        if not enqueue(build_snapshot, str(snap_id)):  # idempotent: a duplicate build gives the same image
            break
        snapshots += 1
    return SweepReport(requeued=requeued, sent=sent, failed=failed, snapshots=snapshots)


def _uuid_or_none(raw: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(raw))
    except ValueError:
        return None


def push_job_get(*, user: User, job_id: str) -> PushJob:
    key = _uuid_or_none(job_id)  # not a UUID: 404, not a database error (found by schemathesis)
    job = PushJob.objects.filter(pk=key, user=user).first() if key is not None else None
    if job is None:
        raise NotFound("No such push job")
    return job


