"""Celery task failures: counted for Prometheus and for the dashboard (hourly counter)."""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import task_failure
from django.utils import timezone

from . import metrics, services

log = logging.getLogger("omnicare.ops")


@task_failure.connect(weak=False)
def _on_task_failure(sender: Any = None, **kwargs: Any) -> None:
    name = str(getattr(sender, "name", "unknown"))[:80]
    metrics.TASK_FAILURES.labels(name).inc()
    try:
        services.counter_add([("celery.task_failure", timezone.now(), 1)])
    except Exception:  # the database may be the reason the task failed
        log.warning("could not count a task failure", exc_info=True)
