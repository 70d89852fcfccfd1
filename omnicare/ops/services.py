"""Operations services: telemetry ingest, incremental rollups, the dashboard's figures, alerts.

Cost model (1,000 devices, 10 million audit events): the dashboard never scans the audit trail, the FHIR
store or the mutation log. It reads

* ``DeviceHealth`` / ``sync.Device`` / ``DeviceRevocation`` — one row per device;
* ``RequestMinute`` — one row per (minute, route, method, status) for the last 24 h;
* ``Counter`` — hourly sums, keyed by fixed names, filled incrementally from the audit trail by
  :func:`audit_rollup_refresh` (reads only events after its watermark, by the ``seq`` unique index);
* small operational tables (open conflicts, grants, revocations, lockouts, the last verification and
  checkpoint) through their indexes.

No function here returns patient data: record ids and user names only, never names or clinical content.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Q, Sum
from django.utils import timezone

from omnicare.access import roles as rbac
from omnicare.access.models import DeviceRevocation, EmergencyAccessGrant, LoginFailure
from omnicare.access.services import LOGIN_MAX_PER_IP, LOGIN_MAX_PER_USER, LOGIN_WINDOW
from omnicare.audit.models import AuditEvent, ChainHead, Checkpoint
from omnicare.audit.services import audit_verify
from omnicare.bulk.models import BulkJob
from omnicare.core.errors import ApiError, Forbidden
from omnicare.fhir.models import Resource, ResourceVersion
from omnicare.hl7.models import InboundMessage, OutboundMessage
from omnicare.sync.models import Conflict, Device, PushJob, Snapshot
from pyclient.telemetry import TelemetryReport

from . import metrics
from .corrections import resolution_scan, resolution_watch_conflicts, resolution_watch_merges
from .models import (
    LATENCY_BUCKETS_MS,
    Alert,
    Counter,
    DeviceHealth,
    DeviceReport,
    Gauge,
    RequestMinute,
    VerifyRun,
    Watermark,
)

log = logging.getLogger("omnicare.ops")

OPS, SECURITY = "ops", "security"
DEVICE_STATES = ("synced", "pending_1h", "pending_24h", "pending_over_24h", "silent", "revoked")
STATE_LABELS = {
    "synced": "Synced", "pending_1h": "Waiting < 1 h", "pending_24h": "Waiting 1–24 h",
    "pending_over_24h": "Waiting > 24 h", "silent": "Silent", "revoked": "Revoked",
}
REJECT_LABELS = {
    400: "Invalid request", 401: "Not signed in", 403: "Forbidden or revoked device", 404: "Not found",
    405: "Wrong method", 409: "Version conflict", 412: "Precondition failed", 413: "Too large",
    415: "Wrong content type", 422: "Unprocessable", 429: "Throttled",
}


def _setting(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


def _now(now: datetime | None) -> datetime:
    return now if now is not None else timezone.now()


def hour_start(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


# --- who sees what -------------------------------------------------------------------------------------


def dashboard_audiences(*, user: Any) -> frozenset[str]:
    """Administrators see the operations panels, auditors (privacy officers) the security panels."""
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return frozenset()
    if user.is_superuser:
        return frozenset({OPS, SECURITY})
    held = rbac.user_roles(user)
    out = set()
    if rbac.ADMINISTRATOR in held:
        out.add(OPS)
    if rbac.AUDITOR in held:
        out.add(SECURITY)
    return frozenset(out)


# --- counters (rollups) ------------------------------------------------------------------------------


def counter_add(items: Iterable[tuple[str, datetime, float]]) -> None:
    """Add values to hourly counters with one upsert (PostgreSQL and SQLite both have ON CONFLICT)."""
    sums: dict[tuple[str, datetime], float] = defaultdict(float)
    for key, at, value in items:
        sums[(key[:100], hour_start(at))] += float(value)
    if not sums:
        return
    table = connection.ops.quote_name(Counter._meta.db_table)
    rows = [(b, k, v) for (k, b), v in sums.items()]
    with connection.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {table} (bucket, key, value) VALUES (%s, %s, %s) "  # noqa: S608 - table name is ours
            "ON CONFLICT (key, bucket) DO UPDATE SET value = {t}.value + excluded.value".format(t=table),
            rows,
        )


def counter_sum(keys: Iterable[str], *, since: datetime) -> dict[str, float]:
    keys = list(keys)
    got = dict(Counter.objects.filter(key__in=keys, bucket__gte=hour_start(since)).values("key")
               .annotate(total=Sum("value")).values_list("key", "total"))
    return {k: float(got.get(k) or 0.0) for k in keys}


def counter_total(prefix: str) -> dict[str, float]:
    """All-time totals of every key starting with ``prefix`` (for Prometheus counters)."""
    return {k: float(v or 0) for k, v in Counter.objects.filter(key__startswith=prefix).values("key")
            .annotate(total=Sum("value")).values_list("key", "total")}


def counter_per_day(keys: Iterable[str], *, days: int, now: datetime) -> dict[str, list[float]]:
    """Daily sums for the last ``days`` days (oldest first), per key."""
    keys = list(keys)
    start = hour_start(now).replace(hour=0) - timedelta(days=days - 1)
    out = {k: [0.0] * days for k in keys}
    for key, bucket, value in Counter.objects.filter(key__in=keys, bucket__gte=start).values_list(
            "key", "bucket", "value"):
        i = (bucket.astimezone(UTC).date() - start.date()).days
        if 0 <= i < days:
            out[key][i] += float(value)
    return out


def request_rollup_add(rows: Mapping[tuple[datetime, str, str, int], list[float]]) -> None:
    """Upsert the request buffer (see ``metrics.RequestBuffer``): count, ms sum and 12 histogram buckets."""
    table = connection.ops.quote_name(RequestMinute._meta.db_table)
    cols = ["count", "sum_ms"] + [f"b{i}" for i in range(12)]
    sets = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in cols)
    sql = (f"INSERT INTO {table} (minute, route, method, status, {', '.join(cols)}) "  # noqa: S608
           f"VALUES ({', '.join(['%s'] * (4 + len(cols)))}) "
           f"ON CONFLICT (minute, route, method, status) DO UPDATE SET {sets}")
    params = [(m, r, meth, st, int(v[0]), v[1], *(int(x) for x in v[2:])) for (m, r, meth, st), v in rows.items()]
    with connection.cursor() as cur:
        cur.executemany(sql, params)


# --- telemetry ----------------------------------------------------------------------------------------


class DeviceNotRegistered(ApiError):
    status, code = 404, "not-found"


@dataclass(frozen=True)
class IngestResult:
    report: DeviceReport
    created: bool


def telemetry_ingest(*, user: Any, report: TelemetryReport, now: datetime | None = None) -> IngestResult:
    """Store one device report (history + latest state + hourly counters). Idempotent per ``reportId``.

    The device must be registered to ``user`` (``POST /api/sync/devices``) and not revoked (the caller runs
    ``device_check`` first, which answers a revoked device with the wipe order).
    """
    now = _now(now)
    if not Device.objects.filter(user=user, device_id=report.device_id).exists():
        raise DeviceNotRegistered("This device is not registered to you: register it before reporting")
    with transaction.atomic():
        existing = DeviceReport.objects.filter(user=user, device_id=report.device_id,
                                               report_id=report.report_id).first()
        if existing is not None:
            return IngestResult(existing, False)
        st = report.storage
        row = DeviceReport.objects.create(
            user=user, device_id=report.device_id, report_id=report.report_id, received=now,
            reason=report.reason, app_version=report.app_version, pending=report.pending,
            conflicted=report.conflicted, rejected=report.rejected, oldest_pending_age=report.oldest_pending_age,
            last_sync_age=report.last_sync_age, storage_used=st.used, storage_quota=st.quota,
            storage_persisted=st.persisted, records=st.records, storage_idb=st.indexed_db, failed_unlocks=report.failed_unlocks,
            interval_seconds=report.interval_seconds, offline_seconds=report.offline_seconds,
            offline_ready_seconds=report.offline_ready_seconds, kb_versions=report.kb_versions,
        )
        fields = {
            "last_report": now, "app_version": report.app_version, "pending": report.pending,
            "conflicted": report.conflicted, "rejected": report.rejected,
            "oldest_pending_at": None if report.oldest_pending_age is None
            else now - timedelta(seconds=report.oldest_pending_age),
            "last_sync_at": None if report.last_sync_age is None else now - timedelta(seconds=report.last_sync_age),
            "storage_used": st.used, "storage_quota": st.quota, "storage_persisted": st.persisted,
            "records": st.records, "storage_idb": st.indexed_db, "kb_versions": report.kb_versions,
        }
        health, made = DeviceHealth.objects.select_for_update().get_or_create(
            user=user, device_id=report.device_id, defaults={**fields, "first_report": now, "reports": 1})
        if not made:
            for k, v in fields.items():
                setattr(health, k, v)
            health.reports += 1
            health.save()
        counter_add([
            ("telemetry.reports", now, 1),
            ("telemetry.failed_unlocks", now, report.failed_unlocks),
            ("telemetry.interval_s", now, report.interval_seconds),
            ("telemetry.offline_s", now, report.offline_seconds),
            ("telemetry.offline_ready_s", now, report.offline_ready_seconds),
        ])
    metrics.TELEMETRY_REPORTS.labels(report.reason).inc()
    if report.failed_unlocks:
        metrics.FAILED_UNLOCKS.inc(report.failed_unlocks)
    return IngestResult(row, True)


def device_state_sql(now: datetime) -> tuple[str, list[Any]]:
    """THE rule for a device's state, as SQL over one row per registered device (PostgreSQL and SQLite).

    revoked (a revocation exists) > silent (no report for OMNICARE_OPS_SILENT_MINUTES, or never) > synced
    (nothing unsynced) > waiting < 1 h / 1-24 h / > 24 h (by the age of its oldest unsynced change).
    """
    q = connection.ops.quote_name
    silent_after = timedelta(minutes=int(_setting("OMNICARE_OPS_SILENT_MINUTES", 15)))
    sql = (
        "SELECT d.user_id, d.device_id, CASE "  # noqa: S608 - only our table names are interpolated
        "WHEN r.id IS NOT NULL THEN 'revoked' "
        "WHEN h.id IS NULL OR h.last_report < %s THEN 'silent' "
        "WHEN h.oldest_pending_at IS NULL THEN 'synced' "
        "WHEN h.oldest_pending_at >= %s THEN 'pending_1h' "
        "WHEN h.oldest_pending_at >= %s THEN 'pending_24h' "
        "ELSE 'pending_over_24h' END AS state, h.id AS health_id, r.id AS revocation_id "
        f"FROM {q(Device._meta.db_table)} d "
        f"LEFT JOIN {q(DeviceHealth._meta.db_table)} h ON h.user_id = d.user_id AND h.device_id = d.device_id "
        f"LEFT JOIN {q(DeviceRevocation._meta.db_table)} r ON r.user_id = d.user_id AND r.device_id = d.device_id"
    )
    return sql, [now - silent_after, now - timedelta(hours=1), now - timedelta(hours=24)]


def device_state_counts(*, now: datetime | None = None) -> dict[str, int]:
    """How many registered devices are in each state (one aggregate query)."""
    sql, params = device_state_sql(_now(now))
    out = dict.fromkeys(DEVICE_STATES, 0)
    with connection.cursor() as cur:
        cur.execute(f"SELECT state, count(*) FROM ({sql}) s GROUP BY state", params)  # noqa: S608
        for state, n in cur.fetchall():
            out[state] = int(n)
    return out


def device_states(*, now: datetime | None = None) -> list[dict[str, Any]]:
    """Every registered device with its state and latest telemetry (for detail views and tests; no PHI)."""
    now = _now(now)
    sql, params = device_state_sql(now)
    with connection.cursor() as cur:
        cur.execute(sql, params)
        rows = cur.fetchall()
    health = {h["id"]: h for h in DeviceHealth.objects.filter(id__in=[r[3] for r in rows if r[3]]).values()}
    from django.contrib.auth import get_user_model

    names = dict(get_user_model().objects.filter(id__in={r[0] for r in rows}).values_list("id", "username"))
    out = []
    for uid, did, state, hid, _rid in rows:
        h = health.get(hid) or {}
        oldest = h.get("oldest_pending_at")
        out.append({"user": names.get(uid, ""), "device_id": did, "state": state,
                    "last_report": h.get("last_report"),
                    "oldest_pending_age": (now - oldest).total_seconds() if oldest else None,
                    **{k: h.get(k) for k in ("pending", "conflicted", "rejected", "app_version", "storage_used",
                                             "storage_quota", "storage_persisted", "records", "storage_idb")}})
    return out


def _unrevoked_health() -> Any:
    """DeviceHealth rows of devices that are not revoked."""
    from django.db.models import Exists, OuterRef

    revoked = DeviceRevocation.objects.filter(user_id=OuterRef("user_id"), device_id=OuterRef("device_id"))
    return DeviceHealth.objects.filter(~Exists(revoked))


def devices_waiting(*, now: datetime, older_than: timedelta | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """Unrevoked devices holding unsynced changes, oldest first (index on ``oldest_pending_at``)."""
    qs = _unrevoked_health().filter(oldest_pending_at__isnull=False)
    if older_than is not None:
        qs = qs.filter(oldest_pending_at__lt=now - older_than)
    return [{"user": r["user__username"], "device_id": r["device_id"], "pending": r["pending"],
             "conflicted": r["conflicted"], "last_report": r["last_report"],
             "oldest_pending_age": (now - r["oldest_pending_at"]).total_seconds()}
            for r in qs.order_by("oldest_pending_at").values(
                "user__username", "device_id", "pending", "conflicted", "last_report", "oldest_pending_at")[:limit]]


# --- incremental audit rollup ----------------------------------------------------------------------------

#: Security-relevant actions counted from the trail (everything else only counts toward ``audit.events``).
AUDIT_ACTIONS = ("login", "break-glass-start", "break-glass-stop", "device-revoke", "device-gap",
                 "conflict-resolve", "dashboard-view", "audit-witness")


def audit_rollup_refresh(*, limit: int = 50_000, now: datetime | None = None) -> int:
    """Fold audit events after the watermark into hourly counters; returns how many were read.

    Reads at most ``limit`` events by the ``seq`` index, so its cost depends on the new events only,
    never on the size of the trail. Safe to run concurrently (the watermark row is locked).
    """
    now = _now(now)
    # Requests only insert their events; the audit sequencer (its own beat job, or inline after each audited
    # request without a worker) numbers them. The rollup only reads what has been sequenced — folding by
    # ``seq`` never skips a late commit — and never writes to the trail itself.
    with transaction.atomic():
        mark, _ = Watermark.objects.select_for_update().get_or_create(name="audit")
        rows = list(AuditEvent.objects.filter(seq__gt=mark.position).order_by("seq")
                    .values_list("seq", "action", "outcome", "received_at", "detail")[:limit])
        if not rows:
            return 0
        items: list[tuple[str, datetime, float]] = []
        merges: list[tuple[str, datetime]] = []
        for _seq, action, outcome, at, detail in rows:
            items.append(("audit.events", at, 1))
            if outcome == "denied":
                items.append(("audit.denied", at, 1))
                items.append((f"audit.denied.{action}"[:100], at, 1))
            if action in AUDIT_ACTIONS:
                items.append((f"audit.{action}.{outcome}", at, 1))
            if action == "sync-push" and isinstance(detail, dict):
                for status, n in (detail.get("statuses") or {}).items():
                    if status in ("applied", "merged", "conflict", "rejected") and isinstance(n, int):
                        items.append((f"push.{status}", at, n))
                merges.extend((ref, at) for ref in (detail.get("merged") or [])[:100] if isinstance(ref, str))
        counter_add(items)
        resolution_watch_merges(merges)
        mark.position = rows[-1][0]
        mark.updated = now
        mark.save(update_fields=["position", "updated"])
    return len(rows)


# --- storage and verification (beat jobs: full scans, never at render time) --------------------------------


def storage_measure(*, now: datetime | None = None) -> Gauge:
    """Count and size (bytes of stored JSON) of current resources and their history, by resource type."""
    now = _now(now)
    pg = connection.vendor == "postgresql"
    size = "octet_length(body::text)" if pg else "length(body)"
    by_type: dict[str, dict[str, float]] = {}
    with connection.cursor() as cur:
        for model, prefix in ((Resource, "current"), (ResourceVersion, "history")):
            cur.execute(f"SELECT resource_type, count(*), coalesce(sum({size}), 0) FROM "  # noqa: S608
                        f"{connection.ops.quote_name(model._meta.db_table)} GROUP BY resource_type")
            for rt, n, nbytes in cur.fetchall():
                d = by_type.setdefault(rt, {})
                d[f"{prefix}_count"] = int(n)
                d[f"{prefix}_bytes"] = int(nbytes)
        db_bytes = 0
        if pg:
            cur.execute("SELECT pg_database_size(current_database())")
            db_bytes = int(cur.fetchone()[0])
        else:
            cur.execute("PRAGMA page_count")
            pages = int(cur.fetchone()[0])
            cur.execute("PRAGMA page_size")
            db_bytes = pages * int(cur.fetchone()[0])
    gauge, _ = Gauge.objects.update_or_create(key="storage", defaults={
        "value": db_bytes, "detail": {"by_type": by_type}, "measured": now})
    return gauge


def verify_run(*, now: datetime | None = None) -> VerifyRun:
    """Run the full audit chain verification and keep its verdict for the dashboard (beat job)."""
    started = _now(now)
    report = audit_verify()
    run = VerifyRun.objects.create(started=started, finished=timezone.now(), ok=report.ok, events=report.events,
                                   problems=[str(p)[:300] for p in report.problems[:20]])
    if not report.ok:
        log.error("audit chain verification FAILED: %d problem(s)", len(report.problems))
    return run


def queue_depth() -> int | None:
    """Messages waiting in the default Celery queue (Redis LLEN); None without a Redis broker."""
    url = str(_setting("CELERY_BROKER_URL", ""))
    if not url.startswith("redis"):
        return None
    try:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        return int(client.llen("celery"))
    except Exception:  # noqa: BLE001 - unknown rather than an error page
        return None


def ops_refresh(*, now: datetime | None = None, limit: int = 50_000, min_interval: float = 0.0) -> dict[str, Any]:
    """The periodic job: fold new audit events, measure storage hourly, re-evaluate alerts.

    ``min_interval``: do nothing if the last refresh is more recent (the dashboard calls it on every view when
    there is no beat, i.e. the embedded default; the beat job passes 0).
    """
    now = _now(now)
    if min_interval > 0:
        with transaction.atomic():
            mark, _ = Watermark.objects.select_for_update().get_or_create(name="refresh")
            if mark.updated is not None and (now - mark.updated).total_seconds() < min_interval:
                return {"audit_read": 0, "alerts": None, "skipped": True}
            mark.updated = now
            mark.save(update_fields=["updated"])

    read = audit_rollup_refresh(limit=limit, now=now)
    resolution_watch_conflicts(now=now)
    resolution_scan(now=now)
    storage = Gauge.objects.filter(key="storage").first()
    if storage is None or storage.measured < now - timedelta(hours=1):
        storage_measure(now=now)
    alerts = alerts_evaluate(now=now)
    return {"audit_read": read, "alerts": len(alerts)}


# --- latency maths ------------------------------------------------------------------------------------------


def quantile(buckets: list[float], q: float) -> float | None:
    """The ``q`` quantile (ms) from histogram bucket counts, interpolated inside the bucket."""
    total = sum(buckets)
    if total <= 0:
        return None
    target = q * total
    acc = 0.0
    bounds = [0.0, *LATENCY_BUCKETS_MS]
    for i, n in enumerate(buckets):
        if n and acc + n >= target:
            lo = bounds[i]
            hi = LATENCY_BUCKETS_MS[i] if i < len(LATENCY_BUCKETS_MS) else LATENCY_BUCKETS_MS[-1] * 2
            return round(lo + (hi - lo) * (target - acc) / n, 1)
        acc += n
    return float(LATENCY_BUCKETS_MS[-1])


SYNC_ROUTES = {"api/sync/push": "push", "api/sync/pull": "pull"}


def request_stats(*, now: datetime, minutes: int = 60) -> dict[str, Any]:
    """Per-route latency quantiles, per-minute sync rates, error and sync success rates, rejects by reason.

    All sums are done by the database over ``RequestMinute`` (rows of the window only, by its index).
    """
    since = now - timedelta(minutes=minutes)
    bcols = [f"b{i}" for i in range(12)]
    window = RequestMinute.objects.filter(minute__gte=since)
    sums = {c: Sum(c) for c in bcols}
    routes = list(window.values("route", "method").annotate(
        n=Sum("count"), errors=Sum("count", filter=Q(status__gte=500)), **sums).order_by("-n"))
    start = (now - timedelta(minutes=minutes - 1)).replace(second=0, microsecond=0)
    per_minute = {"push": [0] * minutes, "pull": [0] * minutes}
    sync = window.filter(route__in=list(SYNC_ROUTES), method="POST")
    for minute, route, n in sync.values("minute", "route").annotate(n=Sum("count")).values_list(
            "minute", "route", "n"):
        i = int((minute - start).total_seconds() // 60)
        if 0 <= i < minutes:
            per_minute[SYNC_ROUTES[route]][i] += int(n)
    ok = sync.aggregate(ok=Sum("count", filter=Q(status__lt=400)), total=Sum("count"))
    total = sum(int(r["n"] or 0) for r in routes)
    errors = sum(int(r["errors"] or 0) for r in routes)
    lat: dict[str, list[float]] = {}
    table = []
    for r in routes:
        buckets = [float(r[c] or 0) for c in bcols]
        if r["method"] == "POST" and r["route"] in SYNC_ROUTES:
            lat[SYNC_ROUTES[r["route"]]] = buckets
        if len(table) < 25:
            table.append({"route": r["route"], "method": r["method"], "count": int(r["n"] or 0),
                          "errors": int(r["errors"] or 0), "p50": quantile(buckets, 0.5),
                          "p95": quantile(buckets, 0.95), "p99": quantile(buckets, 0.99)})
    day = RequestMinute.objects.filter(minute__gte=now - timedelta(hours=24), status__gte=400).values(
        "status").annotate(n=Sum("count")).order_by("status")
    return request_figures(per_minute=per_minute, latency=lat, total=total, errors=errors,
                           sync_total=int(ok["total"] or 0), sync_ok=int(ok["ok"] or 0), routes=table,
                           rejects={int(d["status"]): int(d["n"]) for d in day})


def request_figures(*, per_minute: dict[str, list[int]], latency: Mapping[str, list[float]], total: int,
                    errors: int, sync_total: int, sync_ok: int, routes: list[dict[str, Any]],
                    rejects: Mapping[int, int]) -> dict[str, Any]:
    """The request figures both dashboards show, from what each read: per-minute sync counts, the sync
    routes' latency buckets, totals and the day's refusals by status."""
    empty = [0.0] * 12
    q = quantile
    return {
        "per_minute": per_minute,
        "push_last_hour": sum(per_minute["push"]), "pull_last_hour": sum(per_minute["pull"]),
        "push_p50": q(latency.get("push", empty), 0.5), "push_p95": q(latency.get("push", empty), 0.95),
        "pull_p50": q(latency.get("pull", empty), 0.5), "pull_p95": q(latency.get("pull", empty), 0.95),
        "requests": total, "errors": errors,
        "error_rate": None if not total else round(100.0 * errors / total, 2),
        "sync_requests": sync_total,
        "sync_success_rate": None if not sync_total else round(100.0 * sync_ok / sync_total, 2),
        "routes": routes,
        "rejects": [{"status": st, "reason": REJECT_LABELS.get(st, "Server error" if st >= 500 else "Other"),
                     "count": n} for st, n in sorted(rejects.items())],
    }


# --- the dashboard -------------------------------------------------------------------------------------------


def bench_compression() -> float | None:
    path = settings.BASE_DIR / "bench" / "results.json"
    try:
        value = json.loads(path.read_text())["metrics"].get("compression_reduction")
        return float(value) if value is not None else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def pct(part: float, whole: float) -> float | None:
    return None if not whole else round(100.0 * part / whole, 1)


def sync_panel(*, now: datetime, req: dict[str, Any]) -> dict[str, Any]:
    by_state = device_state_counts(now=now)
    return {"by_state": by_state, "labels": STATE_LABELS, "devices": sum(by_state.values()),
            "oldest": devices_waiting(now=now), **{
                k: req[k] for k in ("per_minute", "push_last_hour", "pull_last_hour", "push_p50", "push_p95",
                                    "pull_p50", "pull_p95", "error_rate", "sync_success_rate", "sync_requests",
                                    "requests", "errors")}}


def conflicts_open(*, now: datetime) -> dict[str, Any]:
    """The open conflicts (both dashboards): the 20 oldest, how many, and how old, in two indexed reads."""
    open_q = Conflict.objects.filter(status=Conflict.OPEN)
    open_rows = list(open_q.order_by("created").values("id", "resource_type", "resource_id", "created",
                                                       "author__username", "device_id")[:20])
    counts = open_q.aggregate(
        total=Count("id"), under_1h=Count("id", filter=Q(created__gte=now - timedelta(hours=1))),
        over_24h=Count("id", filter=Q(created__lt=now - timedelta(hours=24))))
    open_count = int(counts["total"])
    ages = {"under_1h": int(counts["under_1h"]), "over_24h": int(counts["over_24h"])}
    ages["1h_24h"] = open_count - ages["under_1h"] - ages["over_24h"]
    return {"open": open_count, "oldest_open_age": (now - open_rows[0]["created"]).total_seconds() if open_rows
            else None, "open_rows": open_rows, "ages": ages}


def conflict_outcome(*, mix: Mapping[str, int], merged: float, open_count: int) -> dict[str, int]:
    """How stale edits ended: merged by the server, or resolved by a person (``mix``: resolution -> count)."""
    return {"merged automatically": int(merged), "kept mine": mix.get("keep-mine", 0),
            "kept server": mix.get("keep-server", 0), "edited by hand": mix.get("edited", 0),
            "superseded": mix.get("superseded", 0), "still open": open_count}


def conflicts_panel(*, now: datetime) -> dict[str, Any]:
    days = 14
    start = (now - timedelta(days=days - 1)).astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    from django.db.models.functions import TruncDate

    per_day = [0] * days
    for day, n in Conflict.objects.filter(created__gte=start).annotate(day=TruncDate("created", tzinfo=UTC)).values(
            "day").annotate(n=Count("id")).values_list("day", "n"):
        i = (day - start.date()).days
        if 0 <= i < days:
            per_day[i] += int(n)
    opened = conflicts_open(now=now)
    mix = dict(Conflict.objects.filter(status=Conflict.RESOLVED).values("resolution").annotate(n=Count("id"))
               .values_list("resolution", "n"))
    pushes = counter_total("push.")
    merged = pushes.get("push.merged", 0.0)
    conflicts_total = pushes.get("push.conflict", 0.0)
    return {
        "per_day": per_day, "day_labels": [(start + timedelta(days=i)).strftime("%d %b") for i in range(days)],
        **opened, "outcome": conflict_outcome(mix=mix, merged=merged, open_count=opened["open"]),
        # Resolved without a person: clean automatic merges among all stale edits that needed a merge.
        "accuracy": pct(merged, merged + conflicts_total),
        "stale_edits": int(merged + conflicts_total),
    }


MB = 2**20
STORAGE_EDGES = ((10 * MB, "< 10 MB"), (50 * MB, "10–50 MB"), (200 * MB, "50–200 MB"), (1024 * MB, "200 MB–1 GB"))


def storage_by_type() -> tuple[Gauge | None, list[dict[str, Any]], float | None]:
    """The storage gauge, its per-type rows (largest first) and the average current record size in bytes."""
    gauge = Gauge.objects.filter(key="storage").first()
    by_type = (gauge.detail.get("by_type") if gauge else {}) or {}
    rows = sorted(({"type": rt, **{k: int(v) for k, v in d.items()}} for rt, d in by_type.items()),
                  key=lambda r: -(r.get("current_bytes", 0) + r.get("history_bytes", 0)))
    cur_n = sum(r.get("current_count", 0) for r in rows)
    cur_b = sum(r.get("current_bytes", 0) for r in rows)
    return gauge, rows, cur_b / cur_n if cur_n else None


def storage_panel() -> dict[str, Any]:
    from django.db.models import Case, F, FloatField, IntegerField, Max, When
    from django.db.models.functions import Cast

    gauge, rows, avg_json = storage_by_type()
    edges = STORAGE_EDGES
    bucket = Case(*[When(storage_used__lt=edge, then=i) for i, (edge, _) in enumerate(edges)],
                  default=len(edges), output_field=IntegerField())
    live = _unrevoked_health()
    dist = {label: 0 for _, label in edges} | {"> 1 GB": 0}
    labels = [label for _, label in edges] + ["> 1 GB"]
    for b, n in live.filter(storage_used__isnull=False).annotate(b=bucket).values("b").annotate(
            n=Count("id")).values_list("b", "n"):
        dist[labels[b]] = int(n)
    # Bytes at rest in IndexedDB (encrypted records, their base copies, outbox, blind indexes) per byte of the
    # same records as plain JSON (estimated from the server's average record size).
    eff = live.filter(storage_idb__gt=0, records__gt=0).aggregate(at_rest=Sum("storage_idb"), held=Sum("records"))
    device_eff = (pct(eff["at_rest"] or 0, (eff["held"] or 0) * avg_json)
                  if avg_json and eff["held"] else None)
    agg = live.aggregate(
        persisted=Count("id", filter=Q(storage_persisted=True)),
        known=Count("id", filter=Q(storage_persisted__isnull=False)),
        share=Max(Cast(F("storage_used"), FloatField()) / Cast(F("storage_quota"), FloatField()),
                  filter=Q(storage_used__gt=0, storage_quota__gt=0)),
    )
    reporting = live.filter(storage_used__isnull=False)
    n_used = reporting.count()
    median_used = (reporting.order_by("storage_used").values_list("storage_used", flat=True)[n_used // 2]
                   if n_used else None)
    reduction = bench_compression()
    return {
        "db_bytes": int(gauge.value) if gauge else None, "measured": gauge.measured if gauge else None,
        "by_type": rows[:20], "distribution": dist, "median_used": median_used,
        "max_quota_share": None if agg["share"] is None else round(100.0 * agg["share"], 1),
        "persisted": agg["persisted"], "persisted_known": agg["known"],
        "device_efficiency": device_eff, "avg_json_bytes": round(avg_json) if avg_json else None,
        "bench_efficiency": None if reduction is None else round(100.0 * (1 - reduction), 1),
    }


def offline_panel(*, now: datetime) -> dict[str, Any]:
    keys = ("telemetry.interval_s", "telemetry.offline_s", "telemetry.offline_ready_s", "telemetry.reports")
    day = counter_sum(keys, since=now - timedelta(hours=24))
    week = counter_sum(keys, since=now - timedelta(days=7))
    return {
        "rate_24h": pct(day["telemetry.offline_ready_s"], day["telemetry.interval_s"]),
        "rate_7d": pct(week["telemetry.offline_ready_s"], week["telemetry.interval_s"]),
        "device_hours_24h": round(day["telemetry.interval_s"] / 3600, 2),
        "offline_hours_24h": round(day["telemetry.offline_s"] / 3600, 2),
        "reports_24h": int(day["telemetry.reports"]),
    }


def performance_panel(*, now: datetime, req: dict[str, Any]) -> dict[str, Any]:
    since = now - timedelta(hours=24)
    failures = counter_sum(["celery.task_failure"], since=since)["celery.task_failure"]
    return {
        "routes": req["routes"], "queue_depth": queue_depth(), "task_failures_24h": int(failures),
        "push_jobs_failed_24h": PushJob.objects.filter(status=PushJob.FAILED, created__gte=since).count(),
        "snapshots_failed_24h": Snapshot.objects.filter(status=Snapshot.FAILED, created__gte=since).count(),
        "push_jobs_pending": PushJob.objects.filter(status__in=(PushJob.QUEUED, PushJob.RUNNING)).count(),
    }


def grants_recent(*, now: datetime) -> list[dict[str, Any]]:
    """The 20 latest break-the-glass grants of the week, and any still open (both dashboards)."""
    grants = (EmergencyAccessGrant.objects.filter(Q(expires__gt=now - timedelta(days=7)) | Q(ended__isnull=True))
              .select_related("user").order_by("-started")[:20])
    return [{"id": g.pk, "user": g.user.get_username(), "patient_id": g.patient_id,
             "reason": g.reason[:80], "started": g.started, "expires": g.expires, "ended": g.ended,
             "active": g.ended is None and g.expires > now} for g in grants]


def revocations_recent() -> list[dict[str, Any]]:
    """The 20 latest device revocations and whether the device was told to wipe (both dashboards)."""
    revs = DeviceRevocation.objects.select_related("user", "revoked_by").order_by("-revoked")[:20]
    return [{"id": r.pk, "device_id": r.device_id, "owner": r.user.get_username(),
             "by": r.revoked_by.get_username() if r.revoked_by else "", "reason": r.reason[:80],
             "revoked": r.revoked, "wipe_told": r.wipe_told} for r in revs]


def audit_integrity_latest() -> dict[str, Any]:
    """The last verification run and the last signed checkpoint (both dashboards)."""
    run = VerifyRun.objects.order_by("-started").first()
    cp = Checkpoint.objects.order_by("-tree_size", "-id").first()
    return {"verify": None if run is None else {"id": run.pk, "ok": run.ok, "started": run.started,
                                                "events": run.events, "problems": run.problems[:5]},
            "checkpoint": None if cp is None else {"id": cp.pk, "tree_size": cp.tree_size,
                                                   "created": cp.created_at, "key_id": cp.key_id,
                                                   "root": cp.merkle_root[:16]}}


def security_panel(*, now: datetime, req: dict[str, Any]) -> dict[str, Any]:
    day = now - timedelta(hours=24)
    c = counter_sum(["audit.login.failure", "audit.login.success", "telemetry.failed_unlocks", "audit.denied",
                     "audit.break-glass-start.success", "audit.device-revoke.success",
                     "audit.device-gap.failure", "audit.device-gap.success", "audit.audit-witness.failure"],
                    since=day)
    window = now - LOGIN_WINDOW
    locked_users = list(LoginFailure.objects.filter(at__gt=window).values("username").annotate(n=Count("id"))
                        .filter(n__gte=LOGIN_MAX_PER_USER).values_list("username", flat=True)[:20])
    locked_ips = LoginFailure.objects.filter(at__gt=window).values("ip").annotate(n=Count("id")).filter(
        n__gte=LOGIN_MAX_PER_IP).count()
    grant_rows = grants_recent(now=now)
    head = ChainHead.objects.filter(pk=1).first()
    return {
        "failed_signins_24h": int(c["audit.login.failure"]), "signins_24h": int(c["audit.login.success"]),
        "locked_users": locked_users, "locked_ips": locked_ips,
        "failed_unlocks_24h": int(c["telemetry.failed_unlocks"]),
        "break_glass_24h": int(c["audit.break-glass-start.success"]),
        "grants": grant_rows, "grants_active": sum(g["active"] for g in grant_rows),
        "revocations": revocations_recent(), "revocations_total": DeviceRevocation.objects.count(),
        "wipes_told": DeviceRevocation.objects.filter(wipe_told__isnull=False).count(),
        **audit_integrity_latest(),
        "chain_events": head.seq if head else 0,
        "denied_24h": int(c["audit.denied"]),
        "device_gaps_24h": int(c["audit.device-gap.failure"] + c["audit.device-gap.success"]),
        # trust hook: devices that saw this server's audit history rewritten (pyclient.auditlog witness).
        "audit_rewrites_24h": int(c["audit.audit-witness.failure"]),
        "rejects": req["rejects"],
    }


def dashboard_data_panels(*, audiences: frozenset[str], now: datetime | None = None) -> dict[str, Any]:
    """The same figures panel by panel (one small query per figure): the reference the few-query version
    is tested against."""
    now = _now(now)
    req = request_stats(now=now)
    out: dict[str, Any] = {"now": now, "audiences": sorted(audiences)}
    if OPS in audiences:
        out["sync"] = sync_panel(now=now, req=req)
        out["conflicts"] = conflicts_panel(now=now)
        out["storage"] = storage_panel()
        out["offline"] = offline_panel(now=now)
        out["performance"] = performance_panel(now=now, req=req)
    if SECURITY in audiences:
        out["security"] = security_panel(now=now, req=req)
    out["alerts"] = list(Alert.objects.filter(cleared__isnull=True, audience__in=audiences).order_by("-last_seen")
                         .values("id", "kind", "message", "link", "first_seen", "last_seen")[:50])
    return out


# --- alerts ------------------------------------------------------------------------------------------------


def alerts_evaluate(*, now: datetime | None = None) -> list[Alert]:
    """Raise / refresh / clear alerts from the thresholds in settings; a new alert is logged once."""
    now = _now(now)
    found: dict[str, tuple[str, str, str, str]] = {}  # key -> (kind, audience, message, link)
    hours = float(_setting("OMNICARE_OPS_ALERT_UNSYNCED_HOURS", 24))
    for d in devices_waiting(now=now, older_than=timedelta(hours=hours), limit=1000):
        found[f"unsynced:{d['user']}:{d['device_id']}"] = (
            "unsynced", OPS, f"Device {d['device_id']} ({d['user']}) has changes unsynced for "
            f"{d['oldest_pending_age'] / 3600:.0f} h", f"/admin/ops/devicehealth/?device_id={d['device_id']}")
    run = VerifyRun.objects.order_by("-started").first()
    if run is not None and not run.ok:
        found["audit-verify"] = ("audit-verify", SECURITY, "Audit chain verification failed",
                                 f"/admin/ops/verifyrun/{run.pk}/change/")
    # trust hook: a device (a witness of the signed checkpoints) saw the audit history rewritten.
    rewrites = counter_sum(["audit.audit-witness.failure"], since=now - timedelta(days=7))["audit.audit-witness.failure"]
    if rewrites:
        found["audit-rewrite"] = ("audit-rewrite", SECURITY, f"Audit history rewritten: {int(rewrites)} device "
                                  f"report{'s' if rewrites != 1 else ''} in 7 days (the server's log no longer "
                                  "extends what a device saw)", "/admin/audit/auditevent/?action=audit-witness")
    if _setting("OMNICARE_OPS_ALERT_BREAK_GLASS", True):
        for g in EmergencyAccessGrant.objects.filter(ended__isnull=True, expires__gt=now).select_related("user"):
            found[f"break-glass:{g.pk}"] = (
                "break-glass", SECURITY, f"Break-the-glass: {g.user.get_username()} on record Patient/{g.patient_id}",
                f"/admin/access/emergencyaccessgrant/{g.pk}/change/")
    dead = PushJob.objects.filter(status=PushJob.FAILED, created__gte=now - timedelta(hours=24)).count()
    if dead:
        found["dead-letter"] = ("dead-letter", OPS, f"{dead} background push job(s) failed in 24 h",
                                "/admin/sync/pushjob/?status__exact=failed")

    for model, word, path in ((InboundMessage, "inbound", "inboundmessage"),
                              (OutboundMessage, "outbound", "outboundmessage")):
        n = model.objects.filter(state=model.DEAD).count()
        if n:
            found[f"hl7-dead:{word}"] = ("dead-letter", OPS, f"{n} HL7 {word} message(s) dead-lettered",
                                         f"/admin/hl7/{path}/?state__exact=dead")
    req = request_stats(now=now, minutes=15)
    limit = float(_setting("OMNICARE_OPS_ALERT_ERROR_RATE_PCT", 5))
    if req["error_rate"] is not None and req["requests"] >= 20 and req["error_rate"] > limit:
        found["error-rate"] = ("error-rate", OPS, f"Server error rate {req['error_rate']} % over 15 min "
                               f"(threshold {limit:g} %)", "/admin/ops/dashboard/#performance")
    alerts: list[Alert] = []
    with transaction.atomic():
        current = {a.key: a for a in Alert.objects.select_for_update().filter(cleared__isnull=True)}
        known = {a.key: a for a in Alert.objects.filter(key__in=[k for k in found if k not in current])}
        refresh, create = [], []
        for key, (kind, audience, message, link) in found.items():
            a = current.pop(key, None)
            if a is None:
                a = known.get(key) or Alert(key=key)
                a.first_seen, a.cleared = now, None
                a.kind, a.audience, a.message, a.link, a.last_seen = kind, audience, message[:300], link, now
                (create if a.pk is None else refresh).append(a)
                log.warning("ops alert [%s] %s", kind, message)
            else:
                a.message, a.last_seen = message[:300], now
                refresh.append(a)
            alerts.append(a)
        for a in current.values():
            a.cleared = now
            refresh.append(a)
            log.info("ops alert cleared [%s] %s", a.kind, a.message)
        Alert.objects.bulk_create(create)
        Alert.objects.bulk_update(refresh, ["kind", "audience", "message", "link", "first_seen", "last_seen",
                                            "cleared"], batch_size=500)
    return alerts


def queues_panel(*, now: datetime) -> dict[str, Any]:
    """HL7 inbound/outbound and Bulk-data jobs by state (three grouped reads of their state columns)."""
    day = now - timedelta(hours=24)

    def by_state(model: Any, field: str, time_field: str) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for state, recent, n in model.objects.values_list(field).annotate(
                recent=Count("pk", filter=Q(**{f"{time_field}__gte": day})), n=Count("pk")).values_list(
                field, "recent", "n"):
            out[str(state)] = {"total": int(n), "day": int(recent)}
        return out

    inbound = by_state(InboundMessage, "state", "received_at")
    outbound = by_state(OutboundMessage, "state", "created_at")
    bulk = by_state(BulkJob, "status", "created")

    def n(d: dict[str, dict[str, int]], *states: str, key: str = "total") -> int:
        return sum(d.get(st, {}).get(key, 0) for st in states)

    return {
        "hl7_in_waiting": n(inbound, "received", "failed"), "hl7_in_dead": n(inbound, "dead"),
        "hl7_in_processed_24h": n(inbound, "processed", key="day"),
        "hl7_out_waiting": n(outbound, "queued", "failed"), "hl7_out_dead": n(outbound, "dead"),
        "hl7_out_processed_24h": n(outbound, "processed", key="day"),
        "bulk_running": n(bulk, BulkJob.ACCEPTED, BulkJob.RUNNING),
        "bulk_failed_24h": n(bulk, BulkJob.FAILED, key="day"),
        "bulk_completed_24h": n(bulk, BulkJob.COMPLETED, key="day"),
    }


# --- metrics snapshot (for /metrics gauges) ------------------------------------------------------------------


def metrics_snapshot(*, now: datetime | None = None) -> dict[str, Any]:
    now = _now(now)
    states = device_state_counts(now=now)
    run = VerifyRun.objects.order_by("-started").first()
    head = ChainHead.objects.filter(pk=1).first()
    return {
        "devices": states,
        "conflicts_open": Conflict.objects.filter(status=Conflict.OPEN).count(),
        "audit_ok": 1.0 if run is not None and run.ok else 0.0,
        "audit_events": head.seq if head else 0,
        "break_glass_active": EmergencyAccessGrant.objects.filter(ended__isnull=True, expires__gt=now).count(),
        "queue_depth": queue_depth() or 0,
        "alerts": Alert.objects.filter(cleared__isnull=True).count(),
        "queues": queues_panel(now=now),
        "totals": counter_total(""),
    }


def forbid_unless(audiences: frozenset[str]) -> None:
    if not audiences:
        raise Forbidden("The operations dashboard is for administrators and auditors")


__all__ = [
    "DEVICE_STATES", "OPS", "SECURITY", "alerts_evaluate", "audit_rollup_refresh", "counter_add",
    "dashboard_audiences", "device_states", "metrics_snapshot", "ops_refresh", "quantile",
    "request_rollup_add", "storage_measure", "telemetry_ingest", "verify_run",
]
