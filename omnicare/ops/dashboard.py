"""The dashboard's figures in few queries, computed once per refresh and shared by every viewer.

Cost (1,000 devices, 10 million audit events): one row per device in ONE query (state, outbox, storage: every
device figure is folded in Python from those rows), ONE query over the per-minute request rollup (the last hour,
plus error rows of the day), ONE over the hourly counters (24 h / 7 d / 30 d sums by FILTER), and a handful of
indexed reads of small operational tables (conflicts, grants, revocations, verdicts, HL7 and Bulk queues). The
audit trail is never read. The result is cached (``OMNICARE_OPS_SNAPSHOT_SECONDS``, per audience set), so a
refresh of an open page, or ten administrators watching, costs one computation per interval.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import Count, Q, Sum
from django.utils import timezone

from omnicare.access.models import DeviceRevocation, LoginFailure
from omnicare.access.services import LOGIN_MAX_PER_IP, LOGIN_MAX_PER_USER, LOGIN_WINDOW
from omnicare.audit.models import ChainHead
from omnicare.sync.models import Conflict, PushJob, Snapshot

from . import services as s
from .corrections import resolution_counts
from .models import Alert, Counter, RequestMinute

COUNTER_KEYS = (
    "audit.login.failure", "audit.login.success", "telemetry.failed_unlocks", "audit.denied",
    "audit.break-glass-start.success", "audit.device-revoke.success", "audit.device-gap.failure",
    "audit.device-gap.success", "telemetry.interval_s", "telemetry.offline_s", "telemetry.offline_ready_s",
    "telemetry.reports", "celery.task_failure", "push.merged", "push.conflict",
    "audit.audit-witness.failure",  # trust hook: devices that saw the audit history rewritten
)
ACCURACY_DAYS = 30


def counters(*, now: datetime) -> dict[str, dict[str, float]]:
    """{window: {key: sum}} for the 24 h, 7 d and 30 d windows, in one query."""
    hour = s.hour_start(now)
    windows = {"day": hour - timedelta(hours=24), "week": hour - timedelta(days=7),
               "month": hour - timedelta(days=ACCURACY_DAYS)}
    agg = {w: Sum("value", filter=Q(bucket__gte=since)) for w, since in windows.items()}
    out = {w: dict.fromkeys(COUNTER_KEYS, 0.0) for w in windows}
    for row in Counter.objects.filter(key__in=COUNTER_KEYS, bucket__gte=windows["month"]).values("key").annotate(
            **agg):
        for w in windows:
            out[w][row["key"]] = float(row[w] or 0.0)
    return out


def request_stats(*, now: datetime, minutes: int = 60) -> dict[str, Any]:
    """``services.request_stats`` (same figures) from one read of the request rollup."""
    since = now - timedelta(minutes=minutes)
    day = now - timedelta(hours=24)
    from django.db.models import BooleanField, Case, DateTimeField, F, When

    # Grouped by the database: per (route, method, status), split into the last hour / the rest of the day (error
    # rows only), and per minute only for the two sync routes (their per-minute chart). A few hundred rows.
    sync_q = Q(minute__gte=since, method="POST", route__in=list(s.SYNC_ROUTES))
    rows = RequestMinute.objects.filter(Q(minute__gte=since) | Q(minute__gte=day, status__gte=400)).values(
        "route", "method", "status",
        recent=Case(When(minute__gte=since, then=True), default=False, output_field=BooleanField()),
        m=Case(When(sync_q, then=F("minute")), default=None, output_field=DateTimeField())).annotate(
        n=Sum("count"), **{f"s{i}": Sum(f"b{i}") for i in range(12)}).values_list(
        "m", "route", "method", "status", "recent", "n", *[f"s{i}" for i in range(12)])
    start = (now - timedelta(minutes=minutes - 1)).replace(second=0, microsecond=0)
    per_minute = {"push": [0] * minutes, "pull": [0] * minutes}
    routes: dict[tuple[str, str], list[float]] = {}
    rejects: dict[int, int] = defaultdict(int)
    sync_total = sync_ok = 0
    for minute, route, method, status, recent, n, *b in rows:
        if status >= 400:
            rejects[status] += int(n)
        if not recent:
            continue
        acc = routes.setdefault((route, method), [0.0] * 14)
        acc[0] += n
        if status >= 500:
            acc[1] += n
        for i, x in enumerate(b):
            acc[2 + i] += x
        if minute is not None:
            i = int((minute - start).total_seconds() // 60)
            if 0 <= i < minutes:
                per_minute[s.SYNC_ROUTES[route]][i] += int(n)
            sync_total += int(n)
            sync_ok += int(n) if status < 400 else 0
    ordered = sorted(routes.items(), key=lambda kv: -kv[1][0])
    lat: dict[str, list[float]] = {}
    table = []
    for (route, method), acc in ordered:
        buckets = acc[2:]
        if method == "POST" and route in s.SYNC_ROUTES:
            lat[s.SYNC_ROUTES[route]] = buckets
        if len(table) < 25:
            table.append({"route": route, "method": method, "count": int(acc[0]), "errors": int(acc[1]),
                          "p50": s.quantile(buckets, 0.5), "p95": s.quantile(buckets, 0.95),
                          "p99": s.quantile(buckets, 0.99)})
    total = int(sum(acc[0] for _, acc in ordered))
    errors = int(sum(acc[1] for _, acc in ordered))
    return s.request_figures(per_minute=per_minute, latency=lat, total=total, errors=errors,
                             sync_total=sync_total, sync_ok=sync_ok, routes=table, rejects=rejects)


def devices(*, now: datetime) -> dict[str, Any]:
    """Device states, the oldest waiting devices and the storage distribution from ONE query (a row a device)."""
    from django.contrib.auth import get_user_model

    sql, params = s.device_state_sql(now)
    h = "h.pending, h.conflicted, h.last_report, h.oldest_pending_at, h.storage_used, h.storage_quota, " \
        "h.storage_persisted, h.storage_idb, h.records, u.username"
    qn = connection.ops.quote_name
    sql = sql.replace("r.id AS revocation_id ", f"r.id AS revocation_id, {h} ", 1).replace(
        " LEFT JOIN", f" JOIN {qn(get_user_model()._meta.db_table)} u ON u.id = d.user_id LEFT JOIN", 1)
    with connection.cursor() as cur:
        cur.execute(sql, params)
        rows = cur.fetchall()
    by_state = dict.fromkeys(s.DEVICE_STATES, 0)
    waiting, live = [], []
    for (_uid, did, state, hid, _rid, pending, conflicted, last_report, oldest, used, quota, persisted, idb,
         records, username) in rows:
        by_state[state] += 1
        if hid is None or state == "revoked":
            continue
        if connection.vendor == "sqlite":  # raw SQL on SQLite returns text timestamps
            from django.utils.dateparse import parse_datetime

            last_report = parse_datetime(last_report) if isinstance(last_report, str) else last_report
            oldest = parse_datetime(oldest) if isinstance(oldest, str) else oldest
            last_report = last_report.replace(tzinfo=UTC) if last_report and not last_report.tzinfo else last_report
            oldest = oldest.replace(tzinfo=UTC) if oldest and not oldest.tzinfo else oldest
        live.append((used, quota, persisted, idb, records))
        if oldest is not None:
            waiting.append({"user": username, "device_id": did, "pending": pending, "conflicted": conflicted,
                            "last_report": last_report, "oldest_pending_age": (now - oldest).total_seconds()})
    waiting.sort(key=lambda w: -w["oldest_pending_age"])
    labels = [label for _, label in s.STORAGE_EDGES] + ["> 1 GB"]
    dist = dict.fromkeys(labels, 0)
    used_all = sorted(u for u, *_ in live if u is not None)
    for u in used_all:
        dist[next((label for edge, label in s.STORAGE_EDGES if u < edge), "> 1 GB")] += 1
    shares = [u / q for u, q, *_ in live if u and q and u > 0 and q > 0]
    at_rest = sum(i for _, _, _, i, r in live if i and i > 0 and r and r > 0)
    held = sum(r for _, _, _, i, r in live if i and i > 0 and r and r > 0)
    return {
        "by_state": by_state, "oldest": waiting[:20], "distribution": dist,
        "median_used": used_all[len(used_all) // 2] if used_all else None,
        "max_share": max(shares) if shares else None, "at_rest": at_rest, "held": held,
        "persisted": sum(1 for _, _, p, _, _ in live if p is True),
        "persisted_known": sum(1 for _, _, p, _, _ in live if p is not None),
    }


def storage_panel(dev: dict[str, Any]) -> dict[str, Any]:
    gauge, rows, avg_json = s.storage_by_type()
    reduction = s.bench_compression()
    return {
        "db_bytes": int(gauge.value) if gauge else None, "measured": gauge.measured if gauge else None,
        "by_type": rows[:20], "distribution": dev["distribution"], "median_used": dev["median_used"],
        "max_quota_share": None if dev["max_share"] is None else round(100.0 * dev["max_share"], 1),
        "persisted": dev["persisted"], "persisted_known": dev["persisted_known"],
        # Bytes at rest in IndexedDB per byte of the same records as plain JSON (server's average record size).
        "device_efficiency": s.pct(dev["at_rest"], dev["held"] * avg_json) if avg_json and dev["held"] else None,
        "avg_json_bytes": round(avg_json) if avg_json else None,
        "bench_efficiency": None if reduction is None else round(100.0 * (1 - reduction), 1),
    }


def conflicts_panel(*, now: datetime, c: dict[str, dict[str, float]]) -> dict[str, Any]:
    from django.db.models.functions import TruncDate

    days = 14
    start = (now - timedelta(days=days - 1)).astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    month = now - timedelta(days=ACCURACY_DAYS)
    per_day = [0] * days
    mix: dict[str, int] = defaultdict(int)
    # Created per day (14 d) and resolutions (30 d) in one grouped read.
    for day, status, resolution, n in Conflict.objects.filter(
            Q(created__gte=start) | Q(status=Conflict.RESOLVED, resolved_at__gte=month)).annotate(
            day=TruncDate("created", tzinfo=UTC)).values("day", "status", "resolution").annotate(
            n=Count("id")).values_list("day", "status", "resolution", "n"):
        i = (day - start.date()).days
        if 0 <= i < days:
            per_day[i] += int(n)
        if status == Conflict.RESOLVED:
            mix[resolution] += int(n)
    opened = s.conflicts_open(now=now)
    merged = c["month"]["push.merged"]
    parked = c["month"]["push.conflict"]
    checks = resolution_counts(since=month)
    # Resolved without a person (a clean automatic merge) AND without a later correction (corrections.py).
    held = max(0.0, merged - checks["merge_corrected"])
    outcome = {**s.conflict_outcome(mix=mix, merged=merged, open_count=opened["open"]),
               "merges later corrected": checks["merge_corrected"],
               "resolutions later corrected": checks["resolve_corrected"]}
    return {
        "per_day": per_day, "day_labels": [(start + timedelta(days=i)).strftime("%d %b") for i in range(days)],
        **opened, "outcome": outcome,
        "accuracy": s.pct(held, merged + parked), "stale_edits": int(merged + parked),
        "corrections": checks, "watch_hours": float(getattr(settings, "OMNICARE_OPS_CORRECTION_HOURS", 72)),
        "window_days": ACCURACY_DAYS,
    }


def performance_panel(*, now: datetime, req: dict[str, Any], c: dict[str, dict[str, float]]) -> dict[str, Any]:
    since = now - timedelta(hours=24)
    jobs = PushJob.objects.aggregate(
        failed=Count("id", filter=Q(status=PushJob.FAILED, created__gte=since)),
        pending=Count("id", filter=Q(status__in=(PushJob.QUEUED, PushJob.RUNNING))))
    return {
        "routes": req["routes"], "queue_depth": s.queue_depth(),
        "task_failures_24h": int(c["day"]["celery.task_failure"]),
        "push_jobs_failed_24h": int(jobs["failed"]), "push_jobs_pending": int(jobs["pending"]),
        "snapshots_failed_24h": Snapshot.objects.filter(status=Snapshot.FAILED, created__gte=since).count(),
        "queues": s.queues_panel(now=now),
    }


def security_panel(*, now: datetime, req: dict[str, Any], c: dict[str, dict[str, float]]) -> dict[str, Any]:
    d = c["day"]
    per_user: dict[str, int] = defaultdict(int)
    per_ip: dict[str, int] = defaultdict(int)
    for username, ip, n in LoginFailure.objects.filter(at__gt=now - LOGIN_WINDOW).values("username", "ip").annotate(
            n=Count("id")).values_list("username", "ip", "n"):
        per_user[username] += n
        per_ip[ip] += n
    grant_rows = s.grants_recent(now=now)
    rev_n = DeviceRevocation.objects.aggregate(total=Count("id"), told=Count("id", filter=Q(wipe_told__isnull=False)))
    head = ChainHead.objects.filter(pk=1).values_list("seq", flat=True).first()
    return {
        "failed_signins_24h": int(d["audit.login.failure"]), "signins_24h": int(d["audit.login.success"]),
        "locked_users": sorted(u for u, n in per_user.items() if n >= LOGIN_MAX_PER_USER)[:20],
        "locked_ips": sum(1 for n in per_ip.values() if n >= LOGIN_MAX_PER_IP),
        "failed_unlocks_24h": int(d["telemetry.failed_unlocks"]),
        "break_glass_24h": int(d["audit.break-glass-start.success"]),
        "grants": grant_rows, "grants_active": sum(g["active"] for g in grant_rows),
        "revocations": s.revocations_recent(), "revocations_total": int(rev_n["total"]),
        "wipes_told": int(rev_n["told"]), **s.audit_integrity_latest(),
        "chain_events": head or 0,
        "denied_24h": int(d["audit.denied"]),
        "device_gaps_24h": int(d["audit.device-gap.failure"] + d["audit.device-gap.success"]),
        "audit_rewrites_24h": int(d["audit.audit-witness.failure"]),  # trust hook (pyclient.auditlog witness)
        "rejects": req["rejects"],
    }


def compute(*, audiences: frozenset[str], now: datetime) -> dict[str, Any]:
    req = request_stats(now=now)
    c = counters(now=now)
    out: dict[str, Any] = {"now": now, "audiences": sorted(audiences)}
    if s.OPS in audiences:
        dev = devices(now=now)
        by_state = dev["by_state"]
        out["sync"] = {"by_state": by_state, "labels": s.STATE_LABELS, "devices": sum(by_state.values()),
                       "oldest": dev["oldest"], **{k: req[k] for k in (
                           "per_minute", "push_last_hour", "pull_last_hour", "push_p50", "push_p95", "pull_p50",
                           "pull_p95", "error_rate", "sync_success_rate", "sync_requests", "requests", "errors")}}
        out["conflicts"] = conflicts_panel(now=now, c=c)
        out["storage"] = storage_panel(dev)
        day, week = c["day"], c["week"]
        out["offline"] = {
            "rate_24h": s.pct(day["telemetry.offline_ready_s"], day["telemetry.interval_s"]),
            "rate_7d": s.pct(week["telemetry.offline_ready_s"], week["telemetry.interval_s"]),
            "device_hours_24h": round(day["telemetry.interval_s"] / 3600, 2),
            "offline_hours_24h": round(day["telemetry.offline_s"] / 3600, 2),
            "reports_24h": int(day["telemetry.reports"]),
        }
        out["performance"] = performance_panel(now=now, req=req, c=c)
    if s.SECURITY in audiences:
        out["security"] = security_panel(now=now, req=req, c=c)
    out["alerts"] = list(Alert.objects.filter(cleared__isnull=True, audience__in=audiences).order_by("-last_seen")
                         .values("id", "kind", "message", "link", "first_seen", "last_seen")[:50])
    return out


def snapshot(*, audiences: frozenset[str], now: datetime | None = None) -> dict[str, Any]:
    """The figures for these audiences: cached for ``OMNICARE_OPS_SNAPSHOT_SECONDS`` (one computation per
    refresh interval, whoever is looking). ``now`` given (tests, the bench) always computes afresh."""
    ttl = float(getattr(settings, "OMNICARE_OPS_SNAPSHOT_SECONDS", 10))
    if now is not None or ttl <= 0:
        return compute(audiences=audiences, now=now or timezone.now())
    key = "ops:snapshot:" + ",".join(sorted(audiences))
    got = cache.get(key)
    if got is None:
        got = compute(audiences=audiences, now=timezone.now())
        cache.set(key, got, ttl)
    return got  # type: ignore[no-any-return]


def snapshot_clear() -> None:
    """Forget cached figures (after the rollups changed under a test or the refresh command)."""
    for aud in ({s.OPS}, {s.SECURITY}, {s.OPS, s.SECURITY}):
        cache.delete("ops:snapshot:" + ",".join(sorted(aud)))
