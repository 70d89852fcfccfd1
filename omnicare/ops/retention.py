"""Retention of the operations tables (beat job ``omnicare.ops.retention``, daily by default).

Telemetry history and rollups grow with time, not with use of the dashboard: without a bound the rollups the
dashboard reads would slowly turn into the full scans they replace. Each table keeps a window set in settings
(days; 0 = keep forever). The latest state per device (``DeviceHealth``) and open alerts are never deleted.
Deletes go in batches by the tables' time indexes, so one run never holds long locks.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction

from .models import Alert, Counter, DeviceReport, RequestMinute, ResolutionCheck, VerifyRun
from .services import counter_add

#: Hourly counters past their window are summed into this one bucket per key before they go, so all-time
#: totals (Prometheus counters) never go down; no dashboard window reaches back to it.
CARRY_BUCKET = datetime(1970, 1, 1, tzinfo=UTC)


def _carry_counters(ids: list[Any]) -> None:
    from django.db.models import Sum

    old = Counter.objects.filter(pk__in=ids)
    counter_add([(k, CARRY_BUCKET, v or 0.0) for k, v in old.values("key").annotate(v=Sum("value"))
                 .values_list("key", "v")])


#: (setting, default days, model, time field, extra filter)
WINDOWS: tuple[tuple[str, float, Any, str, dict[str, Any]], ...] = (
    ("OMNICARE_OPS_RETAIN_REPORT_DAYS", 30, DeviceReport, "received", {}),
    ("OMNICARE_OPS_RETAIN_REQUEST_DAYS", 8, RequestMinute, "minute", {}),
    ("OMNICARE_OPS_RETAIN_COUNTER_DAYS", 400, Counter, "bucket",
     {"bucket__gte": CARRY_BUCKET + timedelta(days=1)}),  # (a day past it: SQLite compares text)
    ("OMNICARE_OPS_RETAIN_VERIFY_DAYS", 90, VerifyRun, "started", {}),
    ("OMNICARE_OPS_RETAIN_ALERT_DAYS", 90, Alert, "cleared", {"cleared__isnull": False}),
    ("OMNICARE_OPS_RETAIN_CHECK_DAYS", 90, ResolutionCheck, "at", {"decided__isnull": False}),
)


def ops_retention_run(*, now: datetime, batch: int = 10_000) -> dict[str, int]:
    """Delete rows older than each table's window; returns rows deleted per table."""
    out: dict[str, int] = {}
    for name, default, model, field, extra in WINDOWS:
        days = float(getattr(settings, name, default))
        deleted = 0
        if days > 0:
            cutoff = now - timedelta(days=days)
            qs = model.objects.filter(**{f"{field}__lt": cutoff}, **extra)
            while True:
                with transaction.atomic():
                    ids = list(qs.values_list("pk", flat=True)[:batch])
                    if not ids:
                        break
                    if model is Counter:
                        _carry_counters(ids)
                    deleted += model.objects.filter(pk__in=ids).delete()[0]
                if len(ids) < batch:
                    break
        out[model._meta.model_name] = deleted
    return out
