"""Celery jobs of the sync domain. They only call services; all are idempotent (a redelivery changes nothing).

Results live in the database (the job and snapshot rows), so the tasks ignore Celery's result backend: a
publish then needs the broker only.
"""

from __future__ import annotations

from celery import shared_task

from . import jobs as job_svc
from . import snapshots as snapshot_svc


@shared_task(name="omnicare.sync.build_snapshot", acks_late=True, ignore_result=True)
def build_snapshot(snapshot_id: str) -> str:
    """Build a first-sync snapshot; returns its status."""
    return snapshot_svc.snapshot_build(snapshot_id=snapshot_id).status


@shared_task(name="omnicare.sync.apply_push_job", acks_late=True, ignore_result=True)
def apply_push_job(job_id: str) -> str:
    """Apply a stored large push batch in committed chunks; returns the job status."""
    return job_svc.push_job_run(job_id=job_id).status


@shared_task(name="omnicare.sync.sweep_jobs", ignore_result=True)
def sweep_jobs() -> dict[str, int]:
    """Beat: re-queue push jobs whose worker died, re-send what the broker never got."""
    report = job_svc.push_jobs_sweep()
    return {"requeued": report.requeued, "sent": report.sent, "failed": report.failed, "snapshots": report.snapshots}
