"""CPU time and SQL statements per sync push, in-process on PostgreSQL: what a push costs the server, as
opposed to how fast it answers on a machine shared with others (wall clock is meaningless there).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/omnicare_pushcost .venv/bin/python -m bench.push_cost
    ... --rounds 40 --fresh                 # drop/migrate/seed first (default when the database has no bench user)
    ... --sql push50                        # print every statement of one push of that scenario
    ... --profile push50                    # cProfile (cumulative) of that scenario's rounds

Each push goes through Django's full handler (``django.test.Client``: middleware, ninja, bearer auth, the audit
sink), as ``bench/request_profile.py`` does. Scenarios: ``push1`` / ``push10`` / ``push50`` (1, 10 or 50 new Observations
on care-team patients; 10 is scale_bench's batch) and ``update50`` (50 edits of existing Observations against their current version).
Reported per push: statements (exact), savepoints among them, Python function calls (exact, cProfile: the
load-independent stand-in for CPU), and CPU ms of this process
(``time.process_time``: the Python side; PostgreSQL's own work is what the statement count stands for), plus
CPU ms per mutation. Run it on two checkouts side by side to compare a change.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import logging
import os
import pstats
import statistics
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.request_profile import create_database, setup  # noqa: E402


def _obs(rid: str, patient: str, value: int) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": rid, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": f"Patient/{patient}"}, "valueQuantity": {"value": value, "unit": "/min"}}  # fmt: skip


def scenarios(tokens: dict[str, str]) -> dict[str, Any]:
    from django.test import Client

    doc = Client(HTTP_AUTHORIZATION=f"Bearer {tokens['doc']}")
    r = doc.post("/api/sync/devices", data={"deviceId": "pushcost-tab"}, content_type="application/json")
    assert r.status_code == 200, r.content[:300]

    def send(muts: list[dict[str, Any]], want: str = "applied") -> list[dict[str, Any]]:
        r = doc.post("/api/sync/push", data={"deviceId": "pushcost-tab", "mutations": muts},
                     content_type="application/json")  # fmt: skip
        assert r.status_code == 200, r.content[:300]
        results: list[dict[str, Any]] = r.json()["results"]
        assert all(x["status"] == want for x in results), results[:2]
        return results

    def new(n: int) -> list[dict[str, Any]]:
        out = []
        for i in range(n):
            rid = "pc-" + uuid.uuid4().hex[:16]
            out.append({"mutationId": uuid.uuid4().hex, "op": "put", "resourceType": "Observation", "id": rid,
                        "baseVersion": None, "resource": _obs(rid, f"rp{i % 5}", 70)})  # fmt: skip
        return out

    # update50: the same 50 Observations edited again and again, each against the version it has now.
    mine = new(50)
    versions = {x["mutationId"]: x["versionId"] for x in send(mine)}
    current = {m["id"]: int(versions[m["mutationId"]]) for m in mine}
    tick = [0]

    def update50() -> None:
        tick[0] += 1
        muts = [{"mutationId": uuid.uuid4().hex, "op": "put", "resourceType": "Observation", "id": m["id"],
                 "baseVersion": current[m["id"]], "resource": _obs(m["id"], m["resource"]["subject"]["reference"][8:],
                                                                   60 + tick[0] % 50)} for m in mine]  # fmt: skip
        for m, x in zip(muts, send(muts), strict=True):
            current[m["id"]] = int(x["versionId"])

    return {"push1": lambda: send(new(1)), "push10": lambda: send(new(10)), "push50": lambda: send(new(50)),
            "update50": update50}


def mutations_of(name: str) -> int:
    return {"push1": 1, "push10": 10}.get(name, 50)


def measure(name: str, fn: Any, *, warmup: int, rounds: int, profile: bool) -> dict[str, Any]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(warmup):
        fn()
    with CaptureQueriesContext(connection) as ctx:
        fn()
    queries = [q["sql"] for q in ctx.captured_queries]
    kinds = Counter(q.split()[0].upper() for q in queries)
    # Python function calls of one push: exact and independent of the machine's load (CPU ms are not).
    calls = cProfile.Profile()
    calls.enable()
    fn()
    calls.disable()
    py_calls = pstats.Stats(calls).total_calls  # type: ignore[attr-defined]
    cpu: list[float] = []
    prof = cProfile.Profile(time.process_time) if profile else None  # CPU, not waits on the database
    for _ in range(rounds):
        if prof:
            prof.enable()
        t0 = time.process_time()
        fn()
        cpu.append((time.process_time() - t0) * 1000)
        if prof:
            prof.disable()
    n = mutations_of(name)
    out: dict[str, Any] = {
        "queries": len(queries),
        "savepoints": kinds.get("SAVEPOINT", 0),
        "python_calls": py_calls,
        "query_kinds": dict(kinds),
        "queries_sql": [q[:200] for q in queries],
        "cpu_ms_median": round(statistics.median(cpu), 2),
        "cpu_ms_min": round(min(cpu), 2),
        "cpu_ms_per_mutation": round(statistics.median(cpu) / n, 3),
    }
    if prof:
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(70)
        out["profile_text"] = s.getvalue()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--only", default="push1,push10,push50,update50")
    ap.add_argument("--json", default="")
    ap.add_argument("--sql", default="", help="print every statement of one push of this scenario")
    ap.add_argument("--profile", default="", help="print the cProfile of this scenario")
    args = ap.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "omnicare.settings")
    os.environ.setdefault("OMNICARE_SECRET_KEY", "pushcost")
    os.environ.setdefault("OMNICARE_DEBUG", "0")
    os.environ.setdefault("OMNICARE_SECURE", "0")
    os.environ.setdefault("OMNICARE_TESTING", "1")
    os.environ.setdefault("OMNICARE_ALLOWED_HOSTS", "testserver,127.0.0.1")
    # As deployed (and as bench/scale_bench.py runs with REDIS_URL): the beat sequencer chains the audit events,
    # not the request that stored them.
    os.environ.setdefault("OMNICARE_AUDIT_SEQUENCE_INLINE", "0")
    os.environ.setdefault("OMNICARE_AUDIT_CHECKPOINT_LOG", "")
    if "postgres" not in os.environ.get("DATABASE_URL", ""):
        print("set DATABASE_URL=postgres://... (the figures are for PostgreSQL)", file=sys.stderr)
        return 2
    create_database(os.environ["DATABASE_URL"], fresh=args.fresh)
    tokens = setup(args.fresh)
    logging.disable(logging.INFO)  # one access-log line per push would drown the figures
    fns = scenarios(tokens)
    out: dict[str, Any] = {"loadavg": Path("/proc/loadavg").read_text().split()[:3], "rounds": args.rounds}
    for name in filter(None, args.only.split(",")):
        r = measure(name, fns[name], warmup=args.warmup, rounds=args.rounds, profile=args.profile == name)
        print(f"{name:9s} {r['queries']:3d} statements ({r['savepoints']} savepoints), {r['python_calls']:6d} Python calls,"
              f" CPU {r['cpu_ms_median']:7.2f} ms median ({r['cpu_ms_min']:.2f} min), {r['cpu_ms_per_mutation']:.3f} ms/mutation"
              f"  {r['query_kinds']}")  # fmt: skip
        if args.sql == name:
            for q in r["queries_sql"]:
                print("      ", q)
        if "profile_text" in r:
            print(r.pop("profile_text"))
        out[name] = r
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
