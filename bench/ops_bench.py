"""Operations dashboard benchmark: render time at scale, rollup cost, telemetry/metrics overhead on sync.

    .venv/bin/python bench/ops_bench.py                      # 1,000 devices, 10,000,000 audit events
    .venv/bin/python bench/ops_bench.py --events 2000000     # smaller, on a busy machine

On PostgreSQL (``BENCH_OPS_DATABASE_URL``, default ``postgres://postgres@127.0.0.1:5432/postgres`` as the
maintenance connection) it creates its own database ``ops_bench`` (dropped at the end unless ``--keep``) and:

1. fills 1,000 registered devices (telemetry state, a day of report history each), a day of per-minute
   request rollups, a week of hourly counters, conflicts, grants, revocations, sign-in failures;
2. generates audit events with ``INSERT … SELECT generate_series`` in steps (10 % of the target, then the
   target), and at each size times (a) the full dashboard page as a superuser (every panel) with its
   figures computed (the snapshot forgotten before each view: ``dashboard_render_ms``, and its SQL query
   count ``dashboard_queries``), the same page reusing the snapshot of its refresh interval
   (``dashboard_render_warm_ms`` / ``dashboard_warm_queries``) and the panel refresh — server time, Django
   test client, median of 7 after a warm-up; as with a worker, the audit sequencer and the ops rollup are
   beat jobs, not on the page's path — and (b) the incremental rollup of 10,000 new events, to show the
   rollup cost does not depend on the size of the trail (``BENCH_OPS_SHOW_QUERIES=1`` lists the queries);
3. times sync rounds (a push of 10 new Observations + the pull that brings them back, as the PWA does) with
   and without the request-timing middleware, interleaved round by round (the metrics' cost), and times one
   telemetry report; ``telemetry_overhead_pct`` = the metrics' share + one report per 30 s of back-to-back
   syncing (the PWA's highest report rate).

Merges ``dashboard_render_ms`` and ``telemetry_overhead_pct`` (and the figures behind them) into
``bench/results.json`` ``metrics`` and rewrites its own section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DB_NAME = "ops_bench"
MAINT = os.environ.get("BENCH_OPS_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
os.environ["DATABASE_URL"] = MAINT.rsplit("/", 1)[0] + "/" + DB_NAME
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "omnicare.settings")
os.environ.setdefault("OMNICARE_TESTING", "1")
os.environ.pop("REDIS_URL", None)
os.environ["OMNICARE_DB_POOL"] = "0"
# A deployment with a worker: the audit sequencer and the ops rollup are beat jobs, not on the page's path.
os.environ["OMNICARE_OPS_INLINE_ROLLUP"] = "0"
os.environ["OMNICARE_AUDIT_SEQUENCE_INLINE"] = "0"
os.environ["OMNICARE_OPS_SNAPSHOT_SECONDS"] = "10"
os.environ["OMNICARE_LOG_LEVEL"] = "ERROR"  # thousands of synthetic alerts would be logged otherwise

MARK_START, MARK_END = "<!-- ops-bench -->", "<!-- /ops-bench -->"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _admin_db(sql: str) -> None:
    import psycopg

    with psycopg.connect(MAINT.replace("postgres://", "postgresql://"), autocommit=True) as con:
        con.execute(sql)


def timed(fn: Any, n: int, cpu: list[float] | None = None) -> list[float]:
    """Wall ms per call; ``cpu`` collects this process's CPU ms per call (robust to a loaded machine)."""
    out = []
    for _ in range(n):
        t, c = time.perf_counter(), time.process_time()
        fn()
        out.append((time.perf_counter() - t) * 1000)
        if cpu is not None:
            cpu.append((time.process_time() - c) * 1000)
    return out


def fill_devices(n_devices: int) -> Any:
    """Users, devices, telemetry, rollups and small operational tables (not the audit trail)."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.utils import timezone

    from omnicare.access.models import DeviceRevocation, EmergencyAccessGrant, LoginFailure
    from omnicare.ops.models import Counter, DeviceHealth
    from omnicare.sync.models import Conflict, Device

    U = get_user_model()
    now = timezone.now()
    users = U.objects.bulk_create([U(username=f"clin{i:03d}") for i in range(100)])
    su = U.objects.create_superuser(username="bench.super", password=None)
    devices = Device.objects.bulk_create([Device(user=users[i % 100], device_id=f"dev-{i:04d}", last_seen=now)
                                          for i in range(n_devices)])
    health = []
    for i, d in enumerate(devices):
        if i % 20 == 19:
            continue  # 5 % never reported: silent
        pending = i % 7 == 0
        health.append(DeviceHealth(
            user_id=d.user_id, device_id=d.device_id, first_report=now - timedelta(days=30),
            last_report=now - timedelta(minutes=i % 10 if i % 50 else 90), reports=8640, app_version=f"v{i % 3}",
            pending=3 if pending else 0, conflicted=i % 11 == 0,
            oldest_pending_at=(now - timedelta(hours=(i % 40))) if pending else None,
            last_sync_at=now - timedelta(minutes=3), storage_used=(5 + i % 400) * 2**20, storage_quota=2**33,
            storage_persisted=i % 4 != 0, records=2000 + i, kb_versions={"pyclient": "0.1.0"}))
    DeviceHealth.objects.bulk_create(health)
    DeviceRevocation.objects.bulk_create([DeviceRevocation(user_id=devices[i].user_id, device_id=devices[i].device_id,
                                                           revoked=now - timedelta(days=i), reason="lost")
                                          for i in range(0, n_devices, 50)])
    with connection.cursor() as cur:
        # A day of reports per device (every 5 minutes): the history table at its daily size.
        cur.execute("""
            INSERT INTO ops_devicereport (user_id, device_id, report_id, received, reason, app_version, pending,
              conflicted, rejected, oldest_pending_age, last_sync_age, storage_used, storage_quota, storage_persisted,
              records, failed_unlocks, interval_seconds, offline_seconds, offline_ready_seconds, kb_versions)
            SELECT d.user_id, d.device_id, 'r' || d.id || '-' || g, now() - g * interval '5 minutes', 'timer', 'v1',
                   0, 0, 0, NULL, 60, 50000000, 8000000000, true, 2000, (g % 97 = 0)::int, 300, 30, 300, '{}'
            FROM sync_device d CROSS JOIN generate_series(1, 288) g""")
        cur.execute("""
            INSERT INTO ops_requestminute (minute, route, method, status, count, sum_ms, b0, b1, b2, b3, b4, b5, b6, b7,
                                           b8, b9, b10, b11)
            SELECT date_trunc('minute', now()) - m * interval '1 minute', r.route, 'POST', s.status, 40, 2000,
                   5, 10, 10, 5, 5, 3, 1, 1, 0, 0, 0, 0
            FROM generate_series(0, 1439) m
            CROSS JOIN (VALUES ('api/sync/push'), ('api/sync/pull'), ('api/ops/telemetry'), ('fhir/R4/<str:rt>'),
                               ('api/audit/device-events'), ('api/auth/login'), ('api/sync/devices'),
                               ('fhir/R4/<str:rt>/<str:id>')) r(route)
            CROSS JOIN (VALUES (200), (403), (500)) s(status)""")
    keys = ["audit.events", "audit.login.failure", "audit.login.success", "audit.denied", "push.applied",
            "push.merged", "push.conflict", "telemetry.reports", "telemetry.failed_unlocks", "telemetry.interval_s",
            "telemetry.offline_s", "telemetry.offline_ready_s", "audit.break-glass-start.success",
            "audit.device-revoke.success", "celery.task_failure"]
    hour = now.replace(minute=0, second=0, microsecond=0)
    Counter.objects.bulk_create([Counter(bucket=hour - timedelta(hours=h), key=k, value=float(1 + h % 13))
                                 for h in range(24 * 7) for k in keys])
    Conflict.objects.bulk_create([
        Conflict(resource_type="Observation", resource_id=f"o{i}", author=users[i % 100], device_id="dev-0001",
                 mutation_id=str(uuid.uuid4()), status="open" if i < 500 else "resolved",
                 resolution="" if i < 500 else ("keep-mine", "keep-server", "edited", "superseded")[i % 4])
        for i in range(2500)])
    EmergencyAccessGrant.objects.bulk_create([
        EmergencyAccessGrant(user=users[i], patient_id=f"p-{i}", reason="emergency", started=now - timedelta(hours=i),
                             expires=now - timedelta(hours=i) + timedelta(hours=4)) for i in range(30)])
    LoginFailure.objects.bulk_create([LoginFailure(username=f"clin{i % 9:03d}", ip=f"10.0.0.{i % 30}", at=now)
                                      for i in range(100)])
    return su


def grow_audit(to: int) -> float:
    """Append synthetic audit events up to ``to`` (seq 1..to) with INSERT ... SELECT generate_series."""
    from django.db import connection

    from omnicare.audit.models import ChainHead

    head = ChainHead.objects.filter(pk=1).first()
    start = (head.seq if head else 0) + 1
    t = time.perf_counter()
    step = 1_000_000
    with connection.cursor() as cur:
        for lo in range(start, to + 1, step):
            hi = min(to, lo + step - 1)
            cur.execute("""
                INSERT INTO audit_auditevent (seq, category, action, outcome, purpose, user_id, username, roles,
                  resource_type, resource_id, patient_ids, device_id, device_seq, device_time, received_at, detail,
                  prev_hash, hash)
                SELECT g, CASE WHEN g %% 50 = 0 THEN 'security' ELSE 'access' END,
                       (ARRAY['read','search','sync-pull','sync-push','login','update'])[1 + g %% 6],
                       CASE WHEN g %% 97 = 0 THEN 'denied' ELSE 'success' END, 'TREAT', 1 + g %% 100,
                       'clin' || lpad((g %% 100)::text, 3, '0'), '["physician"]', 'Observation', 'o' || g,
                       jsonb_build_array('p' || (g %% 5000)), NULL, NULL, NULL,
                       now() - ((%s - g) * interval '30 milliseconds'),
                       CASE WHEN g %% 6 = 3 THEN '{"statuses": {"applied": 9, "merged": 1}}'::jsonb ELSE '{}' END,
                       '', ''
                FROM generate_series(%s, %s) g""", [to, lo, hi])
            log(f"  audit events: {hi:,}")
    ChainHead.objects.update_or_create(pk=1, defaults={"seq": to, "hash": "0" * 64, "frontier": []})
    with connection.cursor() as cur:
        cur.execute("ANALYZE audit_auditevent")
    return time.perf_counter() - t


def measure_dashboard(su: Any, size: int) -> dict[str, Any]:
    """The page as a deployment with a worker serves it: the audit and ops beats keep up (sequencer and rollup
    are not on the request path), the page reads the rollups.

    * cold: the snapshot is forgotten before every view, so every view computes every figure (the worst case,
      once per ``OMNICARE_OPS_SNAPSHOT_SECONDS`` whoever is looking) — this is ``dashboard_render_ms``;
    * warm: the snapshot of this refresh interval is reused (every other view, e.g. a second administrator).
    """
    from django.db import connection
    from django.test import Client

    from omnicare.audit.models import AuditEvent
    from omnicare.ops import services
    from omnicare.ops.dashboard import snapshot_clear
    from omnicare.ops.models import Watermark

    Watermark.objects.update_or_create(name="audit", defaults={"position": size})  # the beat job kept up
    c = Client()
    c.force_login(su)
    services.ops_refresh(limit=0)  # the beat: storage measured, alerts evaluated (not timed)
    assert c.get("/admin/ops/dashboard/").status_code == 200  # warm-up

    def cold() -> None:
        snapshot_clear()
        assert c.get("/admin/ops/dashboard/").status_code == 200

    def warm() -> None:
        assert c.get("/admin/ops/dashboard/").status_code == 200

    def queries_of(fn: Any) -> list[str]:
        seen: list[str] = []

        def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
            seen.append(sql)
            return execute(sql, params, many, context)

        with connection.execute_wrapper(count):
            fn()
        return seen

    cpu: list[float] = []
    page = timed(cold, 7, cpu)
    seen = queries_of(cold)
    warm_ms = timed(warm, 7)
    seen_warm = queries_of(warm)
    if os.environ.get("BENCH_OPS_SHOW_QUERIES"):
        for q in seen:
            log("  Q " + q[:160])
    panels = timed(lambda: (snapshot_clear(), c.get("/admin/ops/dashboard/panels/")), 7)
    # 10,000 new (sequenced) events after the watermark: what one rollup run folds.
    from django.db.models import Max

    from omnicare.audit.models import ChainHead

    head = int(AuditEvent.objects.aggregate(m=Max("seq"))["m"] or 0)
    with connection.cursor() as cur:
        cur.execute("""INSERT INTO audit_auditevent (seq, category, action, outcome, purpose, user_id, username, roles,
                         resource_type, resource_id, patient_ids, received_at, detail, prev_hash, hash)
                       SELECT g, 'access', 'read', 'success', 'TREAT', 1, 'clin001', '[]', 'Observation', 'x',
                              '[]', now(), '{}', '', '' FROM generate_series(%s, %s) g""", [head + 1, head + 10_000])
    ChainHead.objects.filter(pk=1).update(seq=head + 10_000)
    t = time.perf_counter()
    folded = services.audit_rollup_refresh(limit=50_000)
    rollup_ms = (time.perf_counter() - t) * 1000
    assert folded >= 10_000, folded
    return {"events": size, "page_ms": round(statistics.median(page), 1), "page_ms_all": [round(x, 1) for x in page],
            "page_cpu_ms": round(statistics.median(cpu), 1), "queries": len(seen),
            "warm_ms": round(statistics.median(warm_ms), 1), "warm_queries": len(seen_warm),
            "panels_ms": round(statistics.median(panels), 1), "rollup_10k_ms": round(rollup_ms, 1)}


def measure_overhead(rounds: int, blocks: int) -> dict[str, Any]:
    """Sync rounds (push 10 + pull) with vs without the timing middleware; the cost of one telemetry report."""
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client, override_settings

    from omnicare.access.roles import PHYSICIAN, role_assign
    from omnicare.fhir.services import resources_import

    user = get_user_model().objects.create_user(username="bench.doc")
    role_assign(user=user, role=PHYSICIAN)
    patients = [f"bp{i}" for i in range(20)]
    base: list[dict[str, Any]] = [{"resourceType": "Practitioner", "id": "pr-bench",
                                   "identifier": [{"system": "urn:omnicare:user", "value": "bench.doc"}]}]
    for pid in patients:
        base.append({"resourceType": "Patient", "id": pid, "name": [{"family": "Bench", "given": [pid]}]})
        base.append({"resourceType": "CareTeam", "id": f"ct-{pid}", "status": "active",
                     "subject": {"reference": f"Patient/{pid}"},
                     "participant": [{"member": {"reference": "Practitioner/pr-bench"}}]})
    resources_import(resources=base)
    timing = "omnicare.ops.middleware.RequestTimingMiddleware"
    without = [m for m in settings.MIDDLEWARE if m != timing]
    counter = [0]

    def make(middleware: list[str], device: str) -> Client:
        with override_settings(MIDDLEWARE=middleware):
            # A session is bound to its device and must name it on every call (issue 10, item 15).
            c = Client(headers={"OmniCare-Device-Id": device})
            c.force_login(user)
            assert c.post("/api/sync/devices", json.dumps({"deviceId": device}),
                          content_type="application/json").status_code == 200
        return c

    clients = {"with": make(list(settings.MIDDLEWARE), "bench-with"), "without": make(without, "bench-without")}
    cursors: dict[str, str | None] = {"with": None, "without": None}

    def sync_round(mode: str, *, report: bool) -> None:
        c = clients[mode]
        muts = []
        for _ in range(10):
            counter[0] += 1
            i = counter[0]
            muts.append({"mutationId": str(uuid.uuid4()), "op": "put", "resourceType": "Observation",
                         "id": f"ob-{mode}-{i}", "baseVersion": None, "resource": {
                             "resourceType": "Observation", "id": f"ob-{mode}-{i}", "status": "final",
                             "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                             "subject": {"reference": f"Patient/{patients[i % len(patients)]}"},
                             "valueQuantity": {"value": 60 + i % 40, "unit": "/min"}}})
        r = c.post("/api/sync/push", json.dumps({"deviceId": f"bench-{mode}", "mutations": muts}),
                   content_type="application/json")
        assert r.status_code == 200, r.content[:300]
        while True:
            r = c.post(f"/api/sync/pull?deviceId=bench-{mode}", json.dumps({"cursor": cursors[mode], "limit": 1000}),
                       content_type="application/json")
            page = r.json()
            cursors[mode] = page["cursor"]
            if not page["hasMore"]:
                break
        if report:
            post_report()

    def post_report() -> None:
        r = clients["with"].post("/api/ops/telemetry", json.dumps({
            "deviceId": "bench-with", "reportId": str(uuid.uuid4()), "reason": "sync", "appVersion": "bench",
            "outbox": {"pending": 0, "conflicted": 0, "rejected": 0, "oldestPendingAge": None},
            "lastSyncAge": 1.0, "storage": {"used": 10**7, "quota": 10**9, "persisted": True, "records": 100},
            "intervalSeconds": 30.0, "offlineSeconds": 0.0, "offlineReadySeconds": 30.0}),
            content_type="application/json")
        assert r.status_code == 200, r.content[:300]

    for mode in ("with", "without"):  # warm-up: first pull fills the scope
        for _ in range(3):
            sync_round(mode, report=False)
    # Metrics: the same sync round with and without the timing middleware, interleaved round by round
    # (ABAB..., then BABA...) so the machine's load drifts over both alike.
    per: dict[str, list[float]] = {"with": [], "without": []}
    for i in range(rounds * blocks):
        for mode in (("with", "without") if i % 2 == 0 else ("without", "with")):
            t = time.perf_counter()
            sync_round(mode, report=False)
            per[mode].append((time.perf_counter() - t) * 1000)
    # Telemetry: what one report costs the server (the PWA sends at most one per 30 s).
    report_ms = []
    for _ in range(rounds * 2):
        t = time.perf_counter()
        post_report()
        report_ms.append((time.perf_counter() - t) * 1000)
    w, wo = statistics.median(per["with"]), statistics.median(per["without"])
    ab_pct = 100.0 * (w / wo - 1)
    # The A/B difference drowns in the machine's noise, so the middleware's own work is also timed directly:
    # per request (two Prometheus observations + the rollup buffer) and the 5-second flush, amortised.
    from omnicare.ops import metrics as m

    n = 20_000
    t = time.perf_counter()
    for _ in range(n):
        m.HTTP_REQUESTS.labels("api/sync/push", "POST", "200").inc()
        m.HTTP_LATENCY.labels("api/sync/push").observe(0.05)
        m.BUFFER.add(route="api/sync/push", method="POST", status=200, ms=50.0, at=time.time())
    per_request_ms = (time.perf_counter() - t) * 1000 / n
    flush = timed(m.BUFFER.flush, 1)[0]
    flush_runs = []
    for _ in range(10):
        m.BUFFER.add(route="api/sync/push", method="POST", status=200, ms=50.0, at=time.time())
        flush_runs.append(timed(m.BUFFER.flush, 1)[0])
    flush = statistics.median(flush_runs)
    requests_per_flush = 2 * 5000 / wo  # two requests per round, one flush per 5 s
    metrics_ms = 2 * per_request_ms + 2 * flush / requests_per_flush
    metrics_pct = 100.0 * metrics_ms / wo
    rep = statistics.median(report_ms)
    # A device syncing back to back sends one report per 30 s of sync rounds.
    telemetry_pct = 100.0 * rep / 30_000
    return {"round_ms_with": round(w, 2), "round_ms_without": round(wo, 2), "ab_pct": round(ab_pct, 2),
            "per_request_us": round(per_request_ms * 1000, 1), "flush_ms": round(flush, 2),
            "metrics_pct": round(metrics_pct, 3),
            "report_ms": round(rep, 2), "report_vs_round_pct": round(100.0 * rep / wo, 1),
            "telemetry_pct": round(telemetry_pct, 3), "overhead_pct": round(metrics_pct + telemetry_pct, 3),
            "rounds": rounds * blocks}


def write_results(out: dict[str, Any]) -> None:
    path = ROOT / "bench" / "results.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    metrics = data.setdefault("metrics", {})
    biggest = out["sizes"][-1]
    metrics.update({
        "dashboard_render_ms": biggest["page_ms"],
        "dashboard_queries": biggest["queries"],
        "dashboard_render_warm_ms": biggest.get("warm_ms"),
        "dashboard_warm_queries": biggest.get("warm_queries"),
        "dashboard_panels_ms": biggest["panels_ms"],
        "dashboard_render_cpu_ms": biggest["page_cpu_ms"],
        "dashboard_render_ms_small_trail": out["sizes"][0]["page_ms"],
        "ops_rollup_10k_events_ms": biggest["rollup_10k_ms"],
        "ops_bench_audit_events": biggest["events"],
        "telemetry_overhead_pct": out["overhead"]["overhead_pct"],
        "ops_metrics_overhead_pct": out["overhead"]["metrics_pct"],
        "telemetry_report_ms": out["overhead"]["report_ms"],
    })
    data.setdefault("detail", {})["ops"] = out
    path.write_text(json.dumps(data, indent=2) + "\n")
    rows = "\n".join(f"| {s['events']:,} | {s['page_ms']} | {s['page_cpu_ms']} | {s['queries']} "
                     f"| {s.get('warm_ms')} | {s.get('warm_queries')} | {s['panels_ms']} "
                     f"| {s['rollup_10k_ms']} |" for s in out["sizes"])
    o = out["overhead"]
    section = f"""{MARK_START}
## Operations dashboard (`bench/ops_bench.py`)

Run `{out.get('dashboard_command', out['command'])}` on {out.get('dashboard_date', out['date'])} (PostgreSQL database `ops_bench`, {out['devices']:,} devices with a
day of telemetry history each, a day of per-minute request rollups, a week of hourly counters, 2,500
conflicts). Audit events generated with `INSERT … SELECT generate_series` ({out['generate_s']:.0f} s).
Server time through the Django test client (no network), median of 7 after a warm-up, as a superuser
(every panel); the machine's load average during the run: {out['load']}.

| audit events | dashboard page, figures computed (ms) | of which Django CPU (ms) | SQL queries | page, snapshot reused (ms) | its SQL queries | panel refresh, computed (ms) | rollup of 10,000 new events (ms) |
|---:|---:|---:|---:|---:|---:|---:|---:|
{rows}

**dashboard_render_ms = {out['sizes'][-1]['page_ms']}** (goal < 300) at {out['sizes'][-1]['events']:,} events.
"Computed": the page's snapshot is forgotten before every view, so each view computes every figure (what
happens once per `OMNICARE_OPS_SNAPSHOT_SECONDS`, whoever is looking); "reused": a view within the interval
(session, user, roles, the view's own audit event). As with a worker, the audit sequencer and the ops rollup are
beat jobs, not on the page's path. The page reads rollups only: the same {out['sizes'][-1]['queries']} SQL queries at
every size (one row per device in one query, one read of the request rollup, one of the counters, indexed reads of
small tables), none of them over the audit trail. The rollup reads only the events after its watermark, through the `seq` unique index; the last
column is what folding 10,000 new events costs at each size (on this loaded machine it varies between runs: an
earlier run measured 159.9 ms at 1,000,000 and 165.9 ms at 10,000,000 events). Wall time here is mostly waiting
for the 2 shared cores (load above); this process's own CPU per page is the third column.

**telemetry_overhead_pct = {o['overhead_pct']}** (goal < 5) = metrics {o['metrics_pct']} % + telemetry
{o['telemetry_pct']} %.

* Metrics: the request-timing middleware's own work is {o['per_request_us']} µs per request (two Prometheus
  observations and the rollup buffer) plus one {o['flush_ms']} ms upsert every 5 s, against a sync round (push of
  10 new Observations + the pull that returns them, two requests) of {o['round_ms_without']} ms. Cross-check, the
  whole round with and without the middleware, interleaved round by round ({o['rounds']} each): {o['round_ms_with']}
  vs {o['round_ms_without']} ms ({o['ab_pct']} %, i.e. lost in this machine's noise; load {out.get('overhead_load')}).
* Telemetry: one report costs the server {o['report_ms']} ms ({o['report_vs_round_pct']} % of one round); the PWA
  sends at most one per 30 s, so a device syncing back to back spends {o['telemetry_pct']} % of its server time on
  reports. (An idle device's 30-second timer round is one small pull plus one report: there the report is a larger
  share of a small load.)
{MARK_END}"""
    md = ROOT / "BENCHMARKS.md"
    text = md.read_text() if md.exists() else "# OmniCare benchmarks\n"
    if MARK_START in text and MARK_END in text:
        head, rest = text.split(MARK_START, 1)
        text = head + section + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    md.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=20, help="sync rounds per block (overhead)")
    ap.add_argument("--blocks", type=int, default=8)
    ap.add_argument("--keep", action="store_true", help="keep the ops_bench database")
    ap.add_argument("--no-write", action="store_true", help="print, do not write results.json/BENCHMARKS.md")
    ap.add_argument("--only-overhead", action="store_true",
                    help="measure only the push/pull overhead; keep the dashboard figures already in results.json")
    args = ap.parse_args()
    _admin_db(f"DROP DATABASE IF EXISTS {DB_NAME}")
    _admin_db(f"CREATE DATABASE {DB_NAME}")
    t0 = time.time()
    try:
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        log("filling devices and rollups")
        su = fill_devices(args.devices)
        sizes = []
        gen = 0.0
        previous = json.loads((ROOT / "bench" / "results.json").read_text()).get("detail", {}).get("ops", {})
        if args.only_overhead:
            sizes, gen = previous.get("sizes", []), float(previous.get("generate_s", 0.0))
        for size in ([] if args.only_overhead else sorted({max(100_000, args.events // 10), args.events})):
            log(f"growing the audit trail to {size:,}")
            gen += grow_audit(size)
            sizes.append(measure_dashboard(su, size))
            log(f"  {sizes[-1]}")
        log("sync rounds with and without telemetry")
        overhead = measure_overhead(args.rounds, args.blocks)
        log(f"  {overhead}")
        out = {"command": "python bench/ops_bench.py " + " ".join(sys.argv[1:]),
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "devices": args.devices,
               "generate_s": gen, "sizes": sizes,
               "dashboard_command": previous.get("dashboard_command", previous.get("command")) if args.only_overhead
               else "python bench/ops_bench.py " + " ".join(sys.argv[1:]),
               "dashboard_date": previous.get("dashboard_date", previous.get("date")) if args.only_overhead
               else time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "load": previous.get("load") if args.only_overhead else " / ".join(f"{x:.1f}" for x in os.getloadavg()),
               "overhead_load": " / ".join(f"{x:.1f}" for x in os.getloadavg()), "overhead": overhead, "elapsed_s": round(time.time() - t0)}
        print(json.dumps(out, indent=2))
        if not args.no_write:
            write_results(out)
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep:
            _admin_db(f"DROP DATABASE IF EXISTS {DB_NAME}")


if __name__ == "__main__":
    main()
