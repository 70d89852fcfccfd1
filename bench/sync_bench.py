"""Sync benchmarks: pull throughput and push latency, on whatever DATABASE_URL names (SQLite by default).

    .venv/bin/python bench/sync_bench.py                       # SQLite (a temp file database)
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python bench/sync_bench.py

It creates a throw-away database (``test_<name>`` on PostgreSQL, a temp file for SQLite), loads N
Observations over 100 patients on the bench user's care team, then measures, in this one process:

* pull, first sync: pages of 1,000 from no cursor (the scope fill), serialised to wire JSON;
* pull, incremental: every resource updated once, then pages of 1,000 through the change feed;
* push: 1,000 mutations as 10 pushes of 100 (the protocol's batch limit), each checked for idempotency,
  scope and version — (a) fresh base (applied), (b) stale base with a disjoint edit (three-way merge via
  pyclient, new version), (c) stale base with a clashing edit (stored Conflict).

Wall-clock figures on a shared machine swing with its load, so the CPU time of this process is printed
too (on SQLite that includes the database work; on PostgreSQL the server's share is not in it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "omnicare.settings")
os.environ.setdefault("OMNICARE_TESTING", "1")
os.environ.setdefault("OMNICARE_LOG_LEVEL", "WARNING")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=20000, help="resources in scope (default 20000)")
    parser.add_argument("--push", type=int, default=1000, help="mutations to push (default 1000)")
    parser.add_argument("--profile", action="store_true", help="cProfile the pushes; print the top functions")
    parser.add_argument("--sql", action="store_true", help="time every SQL statement of the first push phase")
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.db import connection

    db = settings.DATABASES["default"]
    tmp = None
    if db["ENGINE"].endswith("sqlite3"):
        tmp = tempfile.mkdtemp(prefix="sync-bench-")
        db.setdefault("TEST", {})["NAME"] = str(Path(tmp) / "bench.sqlite3")
    else:
        db.setdefault("TEST", {})["NAME"] = os.environ.get("OMNICARE_BENCH_DB", "test_omnicare_sync_bench")
    name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    try:
        run(args.n, args.push, vendor=connection.vendor, dbname=name, profile=args.profile, sql=args.sql)
    finally:
        connection.creation.destroy_test_db(name, verbosity=0)


def run(n: int, n_push: int, *, vendor: str, dbname: str, profile: bool = False, sql: bool = False) -> None:
    from django.contrib.auth import get_user_model

    from omnicare.access.roles import PHYSICIAN, role_assign
    from omnicare.access.services import device_check
    from omnicare.fhir.services import resources_import
    from omnicare.fhir.trail import audited
    from omnicare.sync import services
    from pyclient.protocol import loads

    user = get_user_model().objects.create_user(username="bench.doc")
    role_assign(user=user, role=PHYSICIAN)
    patients = [f"bp{i}" for i in range(100)]
    base: list[dict[str, Any]] = [
        {
            "resourceType": "Practitioner",
            "id": "pr-bench",
            "identifier": [{"system": "urn:omnicare:user", "value": "bench.doc"}],
        }
    ]
    for pid in patients:
        base.append({"resourceType": "Patient", "id": pid, "name": [{"family": "Bench", "given": [pid]}]})
        base.append(
            {
                "resourceType": "CareTeam",
                "id": f"ct-{pid}",
                "status": "active",
                "subject": {"reference": f"Patient/{pid}"},
                "participant": [{"member": {"reference": "Practitioner/pr-bench"}}],
            }
        )
    resources_import(resources=base)

    def obs(i: int, value: float, status: str = "final") -> dict[str, Any]:
        return {
            "resourceType": "Observation",
            "id": f"bo{i}",
            "status": status,
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
            "subject": {"reference": f"Patient/{patients[i % len(patients)]}"},
            "effectiveDateTime": "2026-01-01T10:00:00Z",
            "valueQuantity": {
                "value": value,
                "unit": "beats/minute",
                "system": "http://unitsofmeasure.org",
                "code": "/min",
            },
        }

    t = time.perf_counter()
    for start in range(0, n, 2000):
        resources_import(resources=[obs(i, 60.0 + i % 40) for i in range(start, min(n, start + 2000))])
    load_s = time.perf_counter() - t
    print(f"# sync bench on {vendor} ({dbname}); {n} Observations + {len(base)} others; load {load_s:.1f}s")

    def pull_all(cursor: str | None) -> tuple[int, float, float, str]:
        count, t0, c0 = 0, time.perf_counter(), time.process_time()
        while True:
            raw = services.pull_json(user=user, cursor=cursor, limit=1000)
            page = loads(raw)
            count += len(page["changes"])
            cursor = page["cursor"]
            if not page["hasMore"]:
                return count, time.perf_counter() - t0, time.process_time() - c0, cursor

    def show(label: str, got: int, secs: float, cpu: float) -> None:
        print(
            f"{label:<26}{got:>6} resources in {secs:6.2f}s = {got / secs:>8,.0f} resources/s "
            f"(this process's CPU: {cpu:5.2f}s = {got / max(cpu, 1e-9):>8,.0f}/s)"
        )

    got, secs, cpu, cursor = pull_all(None)
    show("pull first sync (fill):", got, secs, cpu)
    for start in range(0, n, 2000):
        resources_import(resources=[obs(i, 61.0 + i % 40) for i in range(start, min(n, start + 2000))])
    got, secs, cpu, cursor = pull_all(cursor)
    show("pull incremental (feed):", got, secs, cpu)

    def push(label: str, mutations: list[dict[str, Any]]) -> None:
        t0, c0 = time.perf_counter(), time.process_time()
        statuses: dict[str, int] = {}
        for start in range(0, len(mutations), services.MAX_PUSH_MUTATIONS):
            batch = mutations[start : start + services.MAX_PUSH_MUTATIONS]
            req = services.parse_push({"deviceId": "bench", "mutations": batch})
            # What POST /api/sync/push does: device check, then the batch and its audit event in one transaction.
            device_check(user=user, device_id=req.device_id)
            with audited(user=user, action="sync-push", device_id=req.device_id) as note:
                response = services.push(user=user, request=req)
                services.push_audit(note=note, request=req, response=response)
            for r in response.results:
                statuses[r.status] = statuses.get(r.status, 0) + 1
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(
            f"push {len(mutations)} {label:<30} {secs:6.2f}s ({secs / len(mutations) * 1000:5.2f} ms/mutation; "
            f"CPU {cpu:5.2f}s) {json.dumps(statuses)}"
        )

    k = min(n_push, n)

    def mut(i: int, base_v: int, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "mutationId": str(uuid.uuid4()),
            "op": "put",
            "resourceType": "Observation",
            "id": f"bo{i}",
            "baseVersion": base_v,
            "resource": body,
        }

    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    if sql:
        from django.db import connection

        spent: dict[str, list[float]] = {}

        def timed(execute: Any, statement: str, params: Any, many: bool, context: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return execute(statement, params, many, context)
            finally:
                key = " ".join(statement.split())[:70]
                spent.setdefault(key, []).append(time.perf_counter() - t0)

        with connection.execute_wrapper(timed):
            push("fresh base (applied)", [mut(i, 2, obs(i, 70.0)) for i in range(k)])
        for key, times in sorted(spent.items(), key=lambda kv: -sum(kv[1]))[:15]:
            print(f"  {sum(times):6.3f}s {len(times):5d}x  {key}")
    else:
        push("fresh base (applied)", [mut(i, 2, obs(i, 70.0)) for i in range(k)])
    # Now at v3; edit from v2 touching another field than the server's v3 edit: clean three-way merge.
    push("stale base, disjoint (merged)", [mut(i, 2, obs(i, 61.0 + i % 40, "amended")) for i in range(k)])
    push("stale base, clash (conflict)", [mut(i, 2, obs(i, 99.0)) for i in range(k)])
    same = [mut(i, 1, obs(i, 1.0)) for i in range(min(k, 100))]
    push("new ids (creates)", [{**mut(n + i, 1, obs(n + i, 1.0)), "baseVersion": None} for i in range(k)])
    if prof is not None:
        import pstats

        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    req = services.parse_push({"deviceId": "bench", "mutations": same})
    services.push(user=user, request=req)
    t0 = time.perf_counter()
    services.push(user=user, request=req)
    print(f"replay of 100 already-applied mutations: {time.perf_counter() - t0:6.3f}s")


if __name__ == "__main__":
    main()
