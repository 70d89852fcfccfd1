"""Celery jobs of the sync domain. They only call services; both are idempotent (a redelivery changes nothing)."""

from __future__ import annotations

from celery import shared_task

from . import services


@shared_task(name="omnicare.sync.build_snapshot", acks_late=True)
def build_snapshot(snapshot_id: str) -> str:
    """Build a first-sync snapshot; returns its status."""
    return services.snapshot_build(snapshot_id=snapshot_id).status


@shared_task(name="omnicare.sync.apply_push_job", acks_late=True)
def apply_push_job(job_id: str) -> str:
    """Apply a stored large push batch; returns the job status."""
    return services.push_job_run(job_id=job_id).status
