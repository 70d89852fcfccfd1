"""Infrastructure tasks (used by health checks and the Celery smoke test)."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="omnicare.core.ping")
def ping(value: int) -> int:
    """Round-trip through the broker and a worker; returns ``value + 1``."""
    return value + 1
