"""Prometheus metrics and the request-timing rollup, recorded in one place.

``prometheus_client`` in multiprocess mode when ``PROMETHEUS_MULTIPROC_DIR`` is set (uvicorn workers and
Celery workers each write their own files; ``/metrics`` merges them), the default in-process registry
otherwise. The same observations feed :class:`RequestBuffer`, which adds them up per minute, route pattern,
method and status in memory and writes them to ``ops_requestminute`` with one upsert every
``OMNICARE_OPS_FLUSH_SECONDS`` (default 5 s): the dashboard reads those rows, not Prometheus.

Labels are route *patterns* (``api/sync/push``, ``fhir/R4/<str:resource_type>/<str:id>``), never paths, so
no id or search term becomes a label.
"""

from __future__ import annotations

import atexit
import bisect
import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from .models import LATENCY_BUCKETS_MS

log = logging.getLogger("omnicare.ops")

MULTIPROC = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

HTTP_REQUESTS = Counter("omnicare_http_requests", "HTTP requests by route pattern, method and status",
                        ["route", "method", "status"])
HTTP_LATENCY = Histogram("omnicare_http_request_duration_seconds", "HTTP request latency by route pattern",
                         ["route"], buckets=[b / 1000 for b in LATENCY_BUCKETS_MS])
TELEMETRY_REPORTS = Counter("omnicare_telemetry_reports", "Device telemetry reports accepted", ["reason"])
FAILED_UNLOCKS = Counter("omnicare_device_failed_unlocks", "Wrong offline PINs reported by devices")
TASK_FAILURES = Counter("omnicare_celery_task_failures", "Celery tasks that raised", ["task"])


class OpsCollector:
    """Gauges read from the rollups at scrape time (cheap: indexed counts over ~1,000 device rows)."""

    def collect(self) -> Iterator[Any]:
        from . import services  # noqa: PLC0415 - deferred: built before the app registry is ready; services imports this module

        try:
            snap = services.metrics_snapshot()
        except Exception:  # a scrape must not 500 because the database is briefly away
            log.exception("ops metrics snapshot failed")
            return
        devices = GaugeMetricFamily("omnicare_devices", "Devices by sync state", labels=["state"])
        for state, n in snap["devices"].items():
            devices.add_metric([state], n)
        yield devices
        yield GaugeMetricFamily("omnicare_conflicts_open", "Open sync conflicts", value=snap["conflicts_open"])
        yield GaugeMetricFamily("omnicare_audit_chain_ok", "1 if the last audit verification passed",
                                value=snap["audit_ok"])
        yield GaugeMetricFamily("omnicare_audit_events", "Audit events in the chain", value=snap["audit_events"])
        yield GaugeMetricFamily("omnicare_break_glass_active", "Active break-the-glass grants",
                                value=snap["break_glass_active"])
        yield GaugeMetricFamily("omnicare_celery_queue_depth", "Messages waiting in the Celery queue",
                                value=snap["queue_depth"])
        yield GaugeMetricFamily("omnicare_alerts_active", "Active dashboard alerts", value=snap["alerts"])
        q = snap["queues"]
        hl7 = GaugeMetricFamily("omnicare_hl7_messages", "HL7 v2 queue messages by direction and state",
                                labels=["direction", "state"])
        for direction in ("in", "out"):
            hl7.add_metric([direction, "waiting"], q[f"hl7_{direction}_waiting"])
            hl7.add_metric([direction, "dead"], q[f"hl7_{direction}_dead"])
        yield hl7
        yield GaugeMetricFamily("omnicare_bulk_jobs_running", "Bulk data jobs accepted or in progress",
                                value=q["bulk_running"])
        # Totals folded from the audit trail by the rollup job (exactly once, whichever process wrote the event).
        totals = snap["totals"]
        mutations = CounterMetricFamily("omnicare_sync_mutations", "Pushed mutations by result", labels=["status"])
        for status in ("applied", "merged", "conflict", "rejected"):
            mutations.add_metric([status], totals.get(f"push.{status}", 0.0))
        yield mutations
        logins = CounterMetricFamily("omnicare_signins", "Sign-ins by outcome", labels=["outcome"])
        for outcome in ("success", "failure"):
            logins.add_metric([outcome], totals.get(f"audit.login.{outcome}", 0.0))
        yield logins
        yield CounterMetricFamily("omnicare_audit_denied", "Requests refused by access control (audited)",
                                  value=totals.get("audit.denied", 0.0))
        yield CounterMetricFamily("omnicare_break_glass_grants", "Break-the-glass grants started",
                                  value=totals.get("audit.break-glass-start.success", 0.0))


def exposition() -> bytes:
    """The Prometheus text format for this deployment (all processes in multiprocess mode)."""
    registry = CollectorRegistry()
    if MULTIPROC:
        MultiProcessCollector(registry)
    else:
        for collector in (HTTP_REQUESTS, HTTP_LATENCY, TELEMETRY_REPORTS, FAILED_UNLOCKS,
                          TASK_FAILURES):
            registry.register(collector)
    registry.register(OpsCollector())
    return generate_latest(registry)


def _minute(t: float) -> datetime:
    return datetime.fromtimestamp(t - t % 60, tz=UTC)


class RequestBuffer:
    """Per-process sums of (minute, route, method, status) -> count, ms, histogram; flushed by upsert."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[tuple[datetime, str, str, int], list[float]] = {}
        self._last_flush = time.monotonic()

    def add(self, *, route: str, method: str, status: int, ms: float, at: float) -> None:
        key = (_minute(at), route[:120], method[:8], int(status))
        i = bisect.bisect_left(LATENCY_BUCKETS_MS, ms)
        with self._lock:
            row = self._rows.get(key)
            if row is None:
                row = self._rows[key] = [0.0] * 14
            row[0] += 1
            row[1] += ms
            row[2 + i] += 1

    def due(self, every: float) -> bool:
        return bool(self._rows) and time.monotonic() - self._last_flush >= every

    def reset(self) -> None:
        """Forget what was not flushed yet (tests start from zero)."""
        with self._lock:
            self._rows = {}

    def flush(self, *, quiet: bool = False) -> int:
        """Write what was added since the last flush (one statement); returns the rows written."""
        with self._lock:
            rows, self._rows = self._rows, {}
            self._last_flush = time.monotonic()
        if not rows:
            return 0
        from . import services  # noqa: PLC0415 - deferred: built before the app registry is ready; services imports this module

        try:
            services.request_rollup_add(rows)
        except Exception:  # the database is away: keep the counts for the next flush
            if quiet:
                return 0
            log.warning("request rollup flush failed; kept for the next one", exc_info=True)
            with self._lock:
                for key, vals in rows.items():
                    cur = self._rows.setdefault(key, [0.0] * 14)
                    for j, v in enumerate(vals):
                        cur[j] += v
            return 0
        return len(rows)


BUFFER = RequestBuffer()


@atexit.register
def _flush_at_exit() -> None:
    with contextlib.suppress(Exception):  # the interpreter is shutting down
        BUFFER.flush(quiet=True)
