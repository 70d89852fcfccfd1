"""Celery jobs of the CDS domain (idempotent: a redelivered re-check changes nothing)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from . import services


@shared_task(name="omnicare.cds.recheck_orders", acks_late=True)
def recheck_orders(keys: list[list[Any]]) -> int:
    """Re-check MedicationRequest versions ``[[id, version], ...]``; returns how many were checked."""
    return services.orders_recheck(keys=keys)
