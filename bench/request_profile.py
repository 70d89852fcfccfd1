"""Per-request overhead of FHIR REST and sync push, in-process on PostgreSQL: SQL queries per request and where the
time goes (pyinstrument, grouped by layer). Deterministic enough to compare before/after on a loaded machine:
the query count is exact and the layer shares are ratios, not wall-clock figures.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/omnicare_reqprof .venv/bin/python -m bench.request_profile
    ... --rounds 200 --fresh          # drop/migrate/seed first (default when the database has no bench user)
    ... --json out.json               # machine-readable

Each scenario runs ``--warmup`` times, then ``--rounds`` times under CaptureQueriesContext (the count is per
request, the same every round) and again under pyinstrument. Requests go through Django's full handler
(``django.test.Client``: every middleware, ninja routing, bearer auth, the audit sink) with a bearer token, as
API clients and wrk do. Scenarios: read (GET Patient/<id>), search (GET Patient?name=), create (POST Patient),
push (POST /api/sync/push, 10 new Observations on a care-team patient), pull (a physician's first pull page of 50).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# Layers by where a frame's code lives; a frame's self time is charged to the first match (order matters).
LAYERS = [
    ("database (psycopg, SQL compiler)", ("psycopg", "django/db/")),
    ("audit sink", ("omnicare/audit/",)),
    ("access control", ("omnicare/access/",)),
    ("FHIR store", ("omnicare/fhir/",)),
    ("sync", ("omnicare/sync/", "pyclient/")),
    ("validation (fhir.resources, pydantic)", ("fhir/resources", "pydantic")),
    ("ninja (routing, schema)", ("ninja/",)),
    ("middleware + handler", ("django/middleware", "django/contrib", "django/core/handlers", "whitenoise",
                              "omnicare/core/", "django/utils/deprecation")),  # fmt: skip
    ("json", ("json/", "orjson")),
    ("django other", ("django/",)),
    ("test client (harness)", ("django/test/",)),
]


def layer_of(path: str) -> str:
    for name, needles in LAYERS:
        if any(n in path for n in needles):
            return name
    return "other"


def create_database(url: str, *, fresh: bool) -> None:
    import dj_database_url
    import psycopg
    from psycopg import sql

    cfg = dj_database_url.parse(url)
    with psycopg.connect(host=cfg["HOST"] or "127.0.0.1", port=int(cfg["PORT"] or 5432), user=cfg["USER"] or "postgres",
                         dbname="postgres", autocommit=True) as admin:  # fmt: skip
        name = sql.Identifier(cfg["NAME"])
        if fresh:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (cfg["NAME"],)).fetchone():
            admin.execute(sql.SQL("CREATE DATABASE {}").format(name))


def setup(fresh: bool) -> dict[str, Any]:
    import django
    from django.core.management import call_command

    django.setup()
    from django.contrib.auth import get_user_model

    U = get_user_model()
    call_command("migrate", verbosity=0)
    if fresh or not U.objects.filter(username="reqprof.doc").exists():
        call_command("seed_demo", patients=5, seed=7, verbosity=0)
        from omnicare.access.roles import PHYSICIAN, role_assign
        from omnicare.fhir.services import resources_import

        doc, _ = U.objects.get_or_create(username="reqprof.doc")
        role_assign(user=doc, role=PHYSICIAN)
        fd, _ = U.objects.get_or_create(username="reqprof.frontdesk")
        role_assign(user=fd, role="front_desk")
        res: list[dict[str, Any]] = [
            {"resourceType": "Practitioner", "id": "pr-reqprof", "name": [{"family": "Prof"}],
             "identifier": [{"system": "urn:omnicare:user", "value": "reqprof.doc"}]}]  # fmt: skip
        for i in range(5):
            res += [{"resourceType": "Patient", "id": f"rp{i}", "name": [{"family": f"Reqprof{i}"}]},
                    {"resourceType": "CareTeam", "id": f"ct-rp{i}", "status": "active",
                     "subject": {"reference": f"Patient/rp{i}"},
                     "participant": [{"member": {"reference": "Practitioner/pr-reqprof"}}]}]  # fmt: skip
        resources_import(resources=res)
    from omnicare.access.services import token_create

    doc = U.objects.get(username="reqprof.doc")
    fd = U.objects.get(username="reqprof.frontdesk")
    return {"doc": token_create(user=doc, name="reqprof"), "frontdesk": token_create(user=fd, name="reqprof")}


def scenarios(tokens: dict[str, str]) -> dict[str, Any]:
    from django.test import Client

    doc = Client(HTTP_AUTHORIZATION=f"Bearer {tokens['doc']}")
    fd = Client(HTTP_AUTHORIZATION=f"Bearer {tokens['frontdesk']}")
    r = doc.post("/api/sync/devices", data={"deviceId": "reqprof-tab"}, content_type="application/json")
    assert r.status_code == 200, r.content[:300]
    patient = {"resourceType": "Patient", "name": [{"family": "Benchmark", "given": ["Req"]}], "gender": "female",
               "birthDate": "1980-01-01"}  # fmt: skip

    def read() -> int:
        return int(fd.get("/fhir/R4/Patient/rp1").status_code)

    def read_doc() -> int:  # a care-team physician: the scope and grant checks run too
        return int(doc.get("/fhir/R4/Patient/rp1").status_code)

    def search() -> int:
        return int(fd.get("/fhir/R4/Patient", {"name": "Reqprof", "_count": "20"}).status_code)

    def create() -> int:
        return int(fd.post("/fhir/R4/Patient", data=json.dumps(patient), content_type="application/fhir+json").status_code)

    def push() -> int:
        muts = []
        for i in range(10):
            rid = "rpo-" + uuid.uuid4().hex[:12]
            muts.append({"mutationId": rid, "op": "put", "resourceType": "Observation", "id": rid, "baseVersion": None,
                         "resource": {"resourceType": "Observation", "id": rid, "status": "final",
                                      "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                                      "subject": {"reference": f"Patient/rp{i % 5}"},
                                      "valueQuantity": {"value": 70, "unit": "/min"}}})  # fmt: skip
        body = {"deviceId": "reqprof-tab", "mutations": muts}
        r = doc.post("/api/sync/push?deviceId=reqprof-tab", data=body, content_type="application/json")
        ok = r.status_code == 200 and all(x["status"] == "applied" for x in r.json()["results"])
        return 200 if ok else int(r.status_code) or 599

    def pull() -> int:  # one page of the physician's first sync (the scope check runs on every page)
        r = doc.post("/api/sync/pull?deviceId=reqprof-tab", data={"cursor": None, "limit": 50},
                     content_type="application/json")  # fmt: skip
        return int(r.status_code)

    return {"read": read, "read_doc": read_doc, "search": search, "create": create, "push": push, "pull": pull}


def measure(fn: Any, *, warmup: int, rounds: int) -> dict[str, Any]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from pyinstrument import Profiler

    for _ in range(warmup):
        status = fn()
        assert status in (200, 201), f"status {status}"
    with CaptureQueriesContext(connection) as ctx:
        fn()
    queries = [q["sql"] for q in ctx.captured_queries]
    kinds = Counter(q.split()[0].upper() for q in queries)
    prof = Profiler(interval=0.0005)
    t0 = time.perf_counter()
    prof.start()
    for _ in range(rounds):
        fn()
    prof.stop()
    ms = (time.perf_counter() - t0) * 1000 / rounds
    shares: Counter[str] = Counter()
    others: Counter[str] = Counter()
    root = prof.last_session.root_frame() if prof.last_session else None  # type: ignore[union-attr]
    # Built-ins and pyinstrument's [self]/[await] frames have no file of their own: charged to the caller's layer.
    stack = [(root, "other")] if root else []
    while stack:
        f, parent = stack.pop()
        path = f.file_path or ""
        layer = layer_of(path) if path and not path.startswith("<") else parent
        shares[layer] += f.total_self_time
        if layer == "other":
            others[f"{f.function} {path}"] += f.total_self_time
        stack.extend((c, layer) for c in f.children)
    total = sum(shares.values()) or 1.0
    return {
        "queries": len(queries),
        "query_kinds": dict(kinds),
        "queries_sql": [q[:160] for q in queries],
        "ms_per_request_profiled": round(ms, 2),
        "layer_share_pct": {k: round(100 * v / total, 1) for k, v in shares.most_common()},
        "other_top": [[k, round(v, 3)] for k, v in others.most_common(8)],
        "profile_text": prof.output_text(unicode=False, color=False, show_all=False),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--only", default="read,read_doc,search,create,push,pull")
    ap.add_argument("--json", default="")
    ap.add_argument("--sql", action="store_true", help="print every query of one request")
    ap.add_argument("--tree", default="", help="print the pyinstrument tree of this scenario")
    args = ap.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "omnicare.settings")
    os.environ.setdefault("OMNICARE_SECRET_KEY", "reqprof")
    os.environ.setdefault("OMNICARE_DEBUG", "0")
    os.environ.setdefault("OMNICARE_SECURE", "0")
    os.environ.setdefault("OMNICARE_TESTING", "1")
    os.environ.setdefault("OMNICARE_ALLOWED_HOSTS", "testserver,127.0.0.1")
    if "postgres" not in os.environ.get("DATABASE_URL", ""):
        print("set DATABASE_URL=postgres://... (the figures are for PostgreSQL)", file=sys.stderr)
        return 2
    create_database(os.environ["DATABASE_URL"], fresh=args.fresh)
    tokens = setup(args.fresh)
    fns = scenarios(tokens)
    out: dict[str, Any] = {"loadavg": Path("/proc/loadavg").read_text().split()[:3], "rounds": args.rounds}
    for name in filter(None, args.only.split(",")):
        r = measure(fns[name], warmup=args.warmup, rounds=args.rounds)
        top = ", ".join(f"{k} {v}%" for k, v in list(r["layer_share_pct"].items())[:6])
        print(f"{name:7s} {r['queries']:3d} queries {r['query_kinds']}  {r['ms_per_request_profiled']:7.2f} ms  | {top}")
        if args.sql:
            for q in r["queries_sql"]:
                print("      ", q)
        if args.tree == name:
            print(r["profile_text"])
        out[name] = {k: v for k, v in r.items() if k != "profile_text"}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
