"""Celery jobs for access control: break-glass expiry (beat, every minute; see ``CELERY_BEAT_SCHEDULE``)."""

from __future__ import annotations

from celery import shared_task

from .services import break_glass_expire as expire


@shared_task(name="omnicare.access.break_glass_expire")
def break_glass_expire() -> int:
    """Record 'emergency override stopped' for grants that ran out."""
    return expire()
