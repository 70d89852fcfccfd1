"""Celery jobs for the audit trail: the sequencer, signed checkpoints, 7-year retention archive."""

from __future__ import annotations

from celery import shared_task
from celery.signals import worker_shutdown

from . import services


@shared_task(name="omnicare.audit.sequence", ignore_result=True, expires=5)
def audit_sequence() -> int:
    """Beat, every second: chain what requests stored since, sign a checkpoint when due (returns how many)."""
    return services.audit_sequence()


@shared_task(name="omnicare.audit.checkpoint")
def audit_checkpoint() -> int:
    """Sign the head if it moved (returns the checkpoint's tree size, 0 if nothing new)."""
    cp = services.audit_checkpoint()
    return cp.tree_size if cp else 0


@shared_task(name="omnicare.audit.archive")
def audit_archive() -> int:
    """Archive events older than the retention window; returns how many events moved."""
    return sum(a.count for a in services.audit_archive())


@worker_shutdown.connect
def _checkpoint_on_worker_shutdown(**_: object) -> None:
    services.checkpoint_on_shutdown(force=True)
