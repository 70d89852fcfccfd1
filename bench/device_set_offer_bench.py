"""The device-set offer on a large hospital (issue 13): queries and time of ``GET /api/sync/device-set``'s work.

    .venv/bin/python bench/device_set_offer_bench.py                    # build the hospital, measure, record
    .venv/bin/python bench/device_set_offer_bench.py --reuse --label before --results /tmp/before.json

Builds, on PostgreSQL (``OFFER_BENCH_DATABASE_URL``, default ``.../offer_bench``; dropped and recreated unless
``--reuse``), a hospital of ``--patients`` patients over 20 wards: every patient has three finished inpatient
stays over the last two years and an outpatient visit, 30 current inpatients per ward, 100 clinicians with a
year of appointments each, results of the last day, chart opens of the last week. One physician (dr.bench)
works on one ward, has 40 care-team patients and ten appointments a day. Then ``device_set_offer`` (the
server's side of the offer: scope, ranking features, sizes) runs ``--runs`` times with the scope caches cleared,
counting the SQL queries, their rows of Encounter/Appointment bodies aside.

``--label`` names the run in ``bench/results.json`` ``detail.device_set_offer`` (or ``--results``): run this same
script from a checkout of the older code with ``--reuse --label before`` to compare; the BENCHMARKS.md section
is rewritten from the labels recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.sections import section_write  # noqa: E402

DB_URL = os.environ.get("OFFER_BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/offer_bench_h13")
SECTION = "## Device-set offer on a large hospital (issue 13)"
WARDS, CLINICIANS = 20, 100


def _setup(reuse: bool) -> None:
    import psycopg

    name = DB_URL.rsplit("/", 1)[1]
    if not reuse:
        with psycopg.connect(DB_URL.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
    os.environ.update({"DATABASE_URL": DB_URL, "OMNICARE_TESTING": "1", "OMNICARE_DB_POOL": "0",
                       "DJANGO_SETTINGS_MODULE": "omnicare.settings", "OMNICARE_AUDIT_CHECKPOINT_LOG": "",
                       "REDIS_URL": ""})
    os.environ.setdefault("OMNICARE_MASTER_KEY", "YmVuY2gtb25seS1tYXN0ZXIta2V5LW5vdC1zZWNyZXQ=")
    if not reuse:
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0", "--noinput"], cwd=REPO, check=True,
                       env=os.environ.copy())
    import django

    django.setup()


def _ref(t: str, i: str) -> dict[str, str]:
    return {"reference": f"{t}/{i}"}


def build(patients: int) -> dict[str, int]:
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from omnicare.access.roles import PHYSICIAN, role_assign
    from omnicare.audit.services import audit_record
    from omnicare.fhir.services import resources_import

    rnd = random.Random(13)
    now = timezone.now()
    imp = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"}
    amb = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}
    u, _ = get_user_model().objects.get_or_create(username="dr.bench")
    role_assign(user=u, role=PHYSICIAN)
    colleague, _ = get_user_model().objects.get_or_create(username="dr.colleague")
    head: list[dict[str, Any]] = [
        {"resourceType": "Practitioner", "id": "pr-dr-bench", "name": [{"family": "Bench"}],
         "identifier": [{"system": "urn:omnicare:user", "value": "dr.bench"}]},
        {"resourceType": "PractitionerRole", "id": "role-bench", "active": True,
         "practitioner": _ref("Practitioner", "pr-dr-bench"), "location": [_ref("Location", "ward-0")]},
        *({"resourceType": "Location", "id": f"ward-{w}", "name": f"Ward {w}", "status": "active"}
          for w in range(WARDS)),
        *({"resourceType": "Practitioner", "id": f"pr-{c}", "name": [{"family": f"Doc{c}"}]}
          for c in range(CLINICIANS)),
    ]
    resources_import(resources=head)
    counts = {"resources": len(head)}
    batch: list[dict[str, Any]] = []

    def add(r: dict[str, Any]) -> None:
        batch.append(r)
        counts[r["resourceType"]] = counts.get(r["resourceType"], 0) + 1
        if len(batch) >= 5000:
            flush()

    def flush() -> None:
        if batch:
            resources_import(resources=list(batch))
            counts["resources"] += len(batch)
            batch.clear()

    current = WARDS * 30
    for i in range(patients):
        pid = f"p{i:06d}"
        add({"resourceType": "Patient", "id": pid, "name": [{"family": f"Pat{i:06d}"}], "birthDate": "1960-01-01"})
        for k in range(3):
            end = now - timedelta(days=rnd.randint(1, 730))
            add({"resourceType": "Encounter", "id": f"e{i}-{k}", "status": "finished", "class": imp,
                 "subject": _ref("Patient", pid), "period": {"start": (end - timedelta(days=4)).isoformat(),
                                                             "end": end.isoformat()},
                 "participant": [{"individual": _ref("Practitioner", f"pr-{rnd.randrange(CLINICIANS)}")}],
                 "location": [{"location": _ref("Location", f"ward-{rnd.randrange(WARDS)}"), "status": "completed"}]})
        visit = now - timedelta(days=rnd.randint(1, 700))
        add({"resourceType": "Encounter", "id": f"v{i}", "status": "finished", "class": amb,
             "subject": _ref("Patient", pid), "period": {"start": visit.isoformat(),
                                                         "end": (visit + timedelta(minutes=30)).isoformat()}})
        if i < current:
            add({"resourceType": "Encounter", "id": f"c{i}", "status": "in-progress", "class": imp,
                 "subject": _ref("Patient", pid), "period": {"start": (now - timedelta(days=2)).isoformat()},
                 "location": [{"location": _ref("Location", f"ward-{i % WARDS}"), "status": "active"}]})
        if i < 40:
            add({"resourceType": "CareTeam", "id": f"ct{i}", "status": "active", "subject": _ref("Patient", pid),
                 "participant": [{"member": _ref("Practitioner", "pr-dr-bench")}]})
        if rnd.random() < 0.15:
            add({"resourceType": "Observation", "id": f"o{i}", "status": "final", "subject": _ref("Patient", pid),
                 "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                 "effectiveDateTime": now.isoformat(), "valueQuantity": {"value": 70, "unit": "/min"}})
    # A year of appointments for every clinician (ten every sixth day); dr.bench: ten a day, +-60 days.
    day0 = now.replace(hour=8, minute=0, second=0, microsecond=0)
    n = 0
    for c in [*(f"pr-{c}" for c in range(CLINICIANS)), "pr-dr-bench"]:
        days = range(-60, 61) if c == "pr-dr-bench" else range(-300, 60, 6)
        for d in days:
            for slot in range(10):
                start = day0 + timedelta(days=d, minutes=30 * slot)
                n += 1
                add({"resourceType": "Appointment", "id": f"a{n}", "status": "booked", "start": start.isoformat(),
                     "end": (start + timedelta(minutes=20)).isoformat(),
                     "participant": [{"actor": _ref("Patient", f"p{rnd.randrange(patients):06d}"), "status": "accepted"},
                                     {"actor": _ref("Practitioner", c), "status": "accepted"}]})
    flush()
    for k in range(3000):  # colleagues' chart opens, and dr.bench's own, over the last week
        who = u if k % 10 == 0 else colleague
        pid = f"p{rnd.randrange(patients):06d}"
        at = now - timedelta(minutes=rnd.randint(1, 7 * 24 * 60))
        audit_record(user=who, action="read", resource_type="Patient", resource_id=pid, patient_ids=[pid],
                     device_time=at, detail={"view": "chart"}, now=at)
    return counts


def measure(runs: int, dump: Path | None = None) -> dict[str, Any]:
    from django.contrib.auth import get_user_model
    from django.db import connection, reset_queries
    from django.test.utils import CaptureQueriesContext

    from omnicare.access import services as access
    from omnicare.sync.device_sets import device_set_offer
    from omnicare.sync.models import Device

    user = get_user_model().objects.get(username="dr.bench")
    Device.objects.get_or_create(user=user, device_id="dev-offerbench1")
    times, queries, sql_ms = [], [], []
    offer = None
    for _ in range(runs + 1):  # the first run warms the model row and Django's caches; not counted
        for clear in ("visible_patients_cache_clear", "grants_preload_clear"):
            fn = getattr(access, clear, None)
            if fn is not None:
                fn(user) if clear == "grants_preload_clear" else fn()
        for name in ("_WARD_SCOPE_CACHE", "_CARE_TEAM_CACHE"):
            cache = getattr(access, name, None)
            if isinstance(cache, dict):
                cache.clear()
        reset_queries()
        with CaptureQueriesContext(connection) as ctx:
            t0 = time.perf_counter()
            offer = device_set_offer(user=user, device_id="dev-offerbench1")
            times.append(time.perf_counter() - t0)
        queries.append(len(ctx.captured_queries))
        sql_ms.append(sum(float(q.get("time") or 0) for q in ctx.captured_queries) * 1000)
    assert offer is not None
    if dump is not None:  # to compare two versions of the code: the same offer, or not
        dump.write_text(json.dumps(offer.to_json(), indent=1, sort_keys=True))
    times, queries, sql_ms = times[1:], queries[1:], sql_ms[1:]
    pinned = sum(1 for c in offer.candidates if any(r.split(":")[0] in (
        "care-team", "ward", "appointment-today", "appointment-tomorrow") for r in c.reasons))
    return {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
            "queries": int(statistics.median(queries)), "sql_ms": round(statistics.median(sql_ms), 1),
            "scope_patients": len(offer.candidates), "pinned": pinned, "runs": runs,
            "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def report(detail: dict[str, Any]) -> None:
    rows = []
    for label in sorted(detail["runs"], key=lambda k: (k != "before", k)):
        r = detail["runs"][label]
        rows.append(f"| {label} | {r['scope_patients']:,} ({r['pinned']:,} pinned) | {r['queries']} | {r['sql_ms']} ms "
                    f"| **{r['median_s']} s** (min {r['min_s']} s) | {r['loadavg']} |")
    c = detail["hospital"]
    body = (f"{SECTION}\n\n`.venv/bin/python bench/device_set_offer_bench.py` — the server's work for one "
            "`GET /api/sync/device-set` (scope with reasons, ranking features, compartment sizes) for a physician "
            f"on one ward of {WARDS}, on PostgreSQL with {c['resources']:,} resources ({c.get('Patient', 0):,} "
            f"patients, {c.get('Encounter', 0):,} encounters, {c.get('Appointment', 0):,} appointments of "
            f"{CLINICIANS} clinicians), scope caches cleared before each of the runs (median). `before` (main at 4455d9c) read every "
            "Encounter and Appointment body of the site to rank (and every encounter ever on the user's wards, "
            "every appointment ever of the user, for the scope); `after` finds them in the search index: current "
            "or recent inpatient stays, the user's appointments of the coming days, the scope's results and "
            "opens only.\n\n| code | scope | SQL queries | SQL time | offer time | load average |\n"
            "|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
            "The machine was shared with other agents (2 cores; load average in the table): times are noisy, "
            "the ratio between the rows is what matters. `--dump FILE` writes the offer: the two codes' offers on "
            "this hospital were byte-identical (same patients, reasons, scores and sizes; 2026-12-01), as "
            "tests/omnicare/prefetch/test_rank_history.py checks on a small one.\n")
    section_write(REPO / "BENCHMARKS.md", SECTION, body)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--reuse", action="store_true", help="measure the database a previous run built")
    ap.add_argument("--label", default="after")
    ap.add_argument("--results", type=Path, default=REPO / "bench" / "results.json")
    ap.add_argument("--no-report", action="store_true", help="do not rewrite BENCHMARKS.md")
    ap.add_argument("--dump", type=Path, help="write the offer (JSON) here")
    args = ap.parse_args()
    _setup(args.reuse)
    results = json.loads(args.results.read_text()) if args.results.exists() else {}
    detail = results.setdefault("detail", {}).setdefault("device_set_offer", {"runs": {}})
    if not args.reuse:
        t0 = time.monotonic()
        detail["hospital"] = build(args.patients)
        print(json.dumps({"built": detail["hospital"], "s": round(time.monotonic() - t0)}), flush=True)
    r = measure(args.runs, args.dump)
    detail["runs"][args.label] = r
    print(json.dumps({args.label: r}), flush=True)
    args.results.write_text(json.dumps(results, indent=2) + "\n")
    if not args.no_report and "hospital" in detail:
        report(detail)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
