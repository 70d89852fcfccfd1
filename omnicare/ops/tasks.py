"""Beat jobs of the operations dashboard (schedules in settings, ops block)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from . import services
from .retention import ops_retention_run


@shared_task(name="omnicare.ops.refresh")
def refresh() -> dict[str, Any]:
    """Fold new audit events into the rollups, measure storage hourly, re-evaluate alerts (every 30 s)."""
    return services.ops_refresh()


@shared_task(name="omnicare.ops.verify")
def verify() -> bool:
    """Full audit chain verification; the dashboard shows the last verdict (every 6 h by default)."""
    return services.verify_run().ok


@shared_task(name="omnicare.ops.retention")
def retention() -> dict[str, int]:
    """Delete telemetry history, rollups, verdicts and cleared alerts past their windows (daily by default)."""
    from django.utils import timezone

    return ops_retention_run(now=timezone.now())
