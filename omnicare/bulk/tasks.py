"""Bulk jobs on the Celery worker (eager on the embedded default). Redelivery is safe: both resume from
their checkpoint (``acks_late`` + ``reject_on_worker_lost`` in settings), so a worker killed mid-job loses
nothing."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="omnicare.bulk.import")
def bulk_import(job_id: str) -> str:
    from .services import import_run

    job = import_run(job_id=job_id)
    return job.status if job is not None else "gone"


@shared_task(name="omnicare.bulk.export")
def bulk_export(job_id: str) -> str:
    from .services import export_run

    job = export_run(job_id=job_id)
    return job.status if job is not None else "gone"


@shared_task(name="omnicare.bulk.expire")
def bulk_expire() -> int:
    """Beat job: delete expired bulk files and jobs."""
    from .services import jobs_expire

    return jobs_expire()


@shared_task(name="omnicare.bulk.resume")
def bulk_resume() -> int:
    """Beat job: re-queue bulk jobs whose worker died mid-job."""
    from .services import jobs_resume

    return jobs_resume()
