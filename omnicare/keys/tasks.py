"""Celery beat job: rotate server keys every 90 days (and re-wrap what is under old KEKs)."""

from __future__ import annotations

from celery import shared_task

from . import services


@shared_task(name="omnicare.keys.rotate_due")
def keys_rotate_due() -> dict[str, int]:
    """Idempotent: rotates only keys past the interval; re-wrapping resumes where it stopped."""
    return services.rotate_due()
