"""Bulk jobs on the Celery worker (eager on the embedded default). Redelivery is safe: both resume from
their checkpoint (``acks_late`` + ``reject_on_worker_lost`` in settings), so a worker killed mid-job loses
nothing."""

from __future__ import annotations

from celery import shared_task

from .services import export_run, import_run, jobs_expire, jobs_resume


@shared_task(name="omnicare.bulk.import")
def bulk_import(job_id: str) -> str:
    job = import_run(job_id=job_id)
    return job.status if job is not None else "gone"


@shared_task(name="omnicare.bulk.export")
def bulk_export(job_id: str) -> str:
    job = export_run(job_id=job_id)
    return job.status if job is not None else "gone"


@shared_task(name="omnicare.bulk.expire")
def bulk_expire() -> int:
    """Beat job: delete expired bulk files and jobs."""
    return jobs_expire()


@shared_task(name="omnicare.bulk.resume")
def bulk_resume() -> int:
    """Beat job: re-queue bulk jobs whose worker died mid-job."""
    return jobs_resume()
