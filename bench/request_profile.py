"""Per-request overhead of FHIR REST and sync push, in-process on PostgreSQL: SQL queries per request and where the
time goes (pyinstrument, grouped by layer). Deterministic enough to compare before/after on a loaded machine:
the query count is exact and the layer shares are ratios, not wall-clock figures.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/omnicare_reqprof .venv/bin/python -m bench.request_profile
    ... --rounds 200 --fresh          # drop/migrate/seed first (default when the database has no bench user)
    ... --json out.json               # machine-readable
    ... --cpu --rounds 300            # CPU ms per request through the real ASGI stack (see measure_cpu)
    ... --cprofile read               # cProfile's top functions of one scenario (test client, one thread)

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
        for i in range(10):  # Observation?patient=rp1 finds these (the search scenario of a clinician)
            res.append({"resourceType": "Observation", "id": f"rpobs{i}", "status": "final",
                        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                        "subject": {"reference": "Patient/rp1"}, "valueQuantity": {"value": 60 + i, "unit": "/min"}})
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

    def search_obs() -> int:  # a care-team physician's chart query
        return int(doc.get("/fhir/R4/Observation", {"patient": "rp1"}).status_code)

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

    return {"read": read, "read_doc": read_doc, "search": search, "search_obs": search_obs, "create": create,
            "push": push, "pull": pull}


# The same requests as raw ASGI calls (method, path, query, token key, body) for measure_cpu.
ASGI_REQUESTS: dict[str, tuple[str, str, str, str, bytes]] = {
    "read": ("GET", "/fhir/R4/Patient/rp1", "", "frontdesk", b""),
    "read_doc": ("GET", "/fhir/R4/Patient/rp1", "", "doc", b""),
    "search": ("GET", "/fhir/R4/Patient", "name=Reqprof&_count=20", "frontdesk", b""),
    "search_obs": ("GET", "/fhir/R4/Observation", "patient=rp1", "doc", b""),
    "create": ("POST", "/fhir/R4/Patient", "", "frontdesk", json.dumps(
        {"resourceType": "Patient", "name": [{"family": "Benchmark", "given": ["Req"]}], "gender": "female",
         "birthDate": "1980-01-01"}).encode()),
}


def measure_cpu(tokens: dict[str, str], name: str, *, warmup: int, rounds: int, blocks: int = 5) -> dict[str, Any]:
    """CPU ms per request through ``omnicare.asgi.application`` as uvicorn calls it (admission line, Django's
    ASGI handler and its thread hop, every middleware, ninja, auth, the audit sink), one request at a time in
    one event loop. ``time.process_time`` counts every thread of this process (the sync views run in asgiref's
    thread) and not the PostgreSQL backend's: on a loaded machine it is the figure that stays put, where
    wall-clock req/s does not. The median of ``blocks`` blocks of ``rounds`` requests."""
    import asyncio
    import statistics

    one = asgi_request(tokens, name)

    import psycopg

    from bench.machine import processes

    def backends_cpu() -> float:
        """CPU seconds so far of the PostgreSQL backends serving this database (this process's pool: nothing else
        uses the profile's database), not the rest of the server, which other work on the machine shares."""
        with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as c:
            pids = [r[0] for r in c.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                            "AND pid <> pg_backend_pid()")]
        procs = processes()
        return sum(procs[pid][2] for pid in pids if pid in procs)

    async def run(n: int) -> tuple[float, float, float]:
        c0, w0, pg0 = time.process_time(), time.perf_counter(), backends_cpu()
        for _ in range(n):
            status = await one()
            assert status in (200, 201), f"{name}: status {status}"
        pg = (backends_cpu() - pg0) * 1000 / n
        return (time.process_time() - c0) * 1000 / n, (time.perf_counter() - w0) * 1000 / n, pg

    async def all_blocks() -> list[tuple[float, float, float]]:
        await run(warmup)
        return [await run(rounds) for _ in range(blocks)]

    res = asyncio.run(all_blocks())
    cpu = sorted(r[0] for r in res)
    return {"cpu_ms": round(statistics.median(cpu), 3), "cpu_ms_min": round(cpu[0], 3),
            "wall_ms": round(statistics.median(r[1] for r in res), 3),
            "postgres_cpu_ms": round(statistics.median(r[2] for r in res), 3)}


def asgi_request(tokens: dict[str, str], name: str) -> Any:
    """A coroutine function making one ``ASGI_REQUESTS[name]`` call into the app; it returns the status."""
    import asyncio

    from omnicare.asgi import application

    method, path, query, who, body = ASGI_REQUESTS[name]
    headers = [(b"host", b"testserver"), (b"authorization", f"Bearer {tokens[who]}".encode()),
               (b"accept", b"application/fhir+json")]  # fmt: skip
    if body:
        headers += [(b"content-type", b"application/fhir+json"), (b"content-length", str(len(body)).encode())]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
             "headers": headers, "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}  # fmt: skip

    async def one() -> int:
        done = asyncio.Event()
        state = {"status": 0, "sent": False}

        async def receive() -> dict[str, Any]:
            if not state["sent"]:
                state["sent"] = True
                return {"type": "http.request", "body": body, "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(msg: dict[str, Any]) -> None:
            if msg["type"] == "http.response.start":
                state["status"] = msg["status"]
            elif msg["type"] == "http.response.body" and not msg.get("more_body"):
                done.set()

        await application(dict(scope), receive, send)
        done.set()
        return int(state["status"])

    return one


def cprofile_asgi_text(tokens: dict[str, str], name: str, *, warmup: int, rounds: int, top: int = 400) -> str:
    """cProfile (CPU time) of ``rounds`` ASGI calls. Since Python 3.12 cProfile hooks sys.monitoring, which sees
    every thread: the event loop's and asgiref's sync thread (where the views run) are both in it."""
    import asyncio
    import cProfile
    import io
    import pstats

    one = asgi_request(tokens, name)
    prof = cProfile.Profile(time.process_time)

    async def go() -> None:
        for _ in range(warmup):
            await one()
        prof.enable()
        for _ in range(rounds):
            await one()
        prof.disable()

    asyncio.run(go())
    out = io.StringIO()
    st = pstats.Stats(prof, stream=out)
    st.sort_stats("tottime").print_stats(top)
    st.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def cprofile_text(fn: Any, *, warmup: int, rounds: int, top: int = 150) -> str:
    """cProfile of ``rounds`` calls (test client: one thread, so cProfile sees the whole request)."""
    import cProfile
    import io
    import pstats

    for _ in range(warmup):
        fn()
    prof = cProfile.Profile(time.process_time)  # CPU, not wall: waits on PostgreSQL are not charged
    prof.enable()
    for _ in range(rounds):
        fn()
    prof.disable()
    out = io.StringIO()
    st = pstats.Stats(prof, stream=out)
    st.sort_stats("tottime").print_stats(top)
    st.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def measure(fn: Any, *, warmup: int, rounds: int, time_queries: bool = False) -> dict[str, Any]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from pyinstrument import Profiler

    for _ in range(warmup):
        status = fn()
        assert status in (200, 201), f"status {status}"
    # The SQL of one request and, with --sql, each statement's mean time (Django's wall clock around it,
    # network and PostgreSQL's execution) over ten more requests, so --sql shows where the database time is.
    with CaptureQueriesContext(connection) as ctx:
        fn()
    queries = [q["sql"] for q in ctx.captured_queries]
    per_ms = [0.0] * len(queries)
    for _ in range(10 if time_queries else 0):
        with CaptureQueriesContext(connection) as more:
            fn()
        for i, q in enumerate(more.captured_queries[: len(queries)]):
            per_ms[i] += float(q["time"]) * 100  # seconds over ten runs -> mean ms
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
        "queries_ms": [round(t, 3) for t in per_ms],
        "ms_per_request_profiled": round(ms, 2),
        "layer_share_pct": {k: round(100 * v / total, 1) for k, v in shares.most_common()},
        "other_top": [[k, round(v, 3)] for k, v in others.most_common(8)],
        "profile_text": prof.output_text(unicode=False, color=False, show_all=False),
    }


class CaptureQueries:
    """How many queries one call makes (the test client runs in this thread)."""

    def __enter__(self) -> CaptureQueries:
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        self._ctx = CaptureQueriesContext(connection)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)
        self.count = len(self._ctx.captured_queries)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--only", default="read,read_doc,search,search_obs,create,push,pull")
    ap.add_argument("--cpu", action="store_true", help="CPU ms per request through the ASGI app (measure_cpu)")
    ap.add_argument("--blocks", type=int, default=5, help="--cpu: blocks of --rounds, the median is reported")
    ap.add_argument("--cprofile", default="", help="print cProfile's top functions of this scenario")
    ap.add_argument("--cprofile-asgi", default="", help="the same through the ASGI app (both threads)")
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
    if args.cprofile_asgi:
        import logging

        logging.getLogger("omnicare.http").setLevel(logging.WARNING)
        print(cprofile_asgi_text(tokens, args.cprofile_asgi, warmup=args.warmup, rounds=args.rounds))
        return 0
    if args.cprofile:
        print(cprofile_text(fns[args.cprofile], warmup=args.warmup, rounds=args.rounds))
        return 0
    if args.cpu:
        import logging

        logging.getLogger("omnicare.http").setLevel(logging.WARNING)  # as scale_bench's servers run
        for name in filter(None, args.only.split(",")):
            if name not in ASGI_REQUESTS:
                continue
            r = measure_cpu(tokens, name, warmup=args.warmup, rounds=args.rounds, blocks=args.blocks)
            with CaptureQueries() as n:
                fns[name]()
            r["queries"] = n.count
            c0 = time.process_time()
            for _ in range(args.rounds):
                fns[name]()
            r["client_cpu_ms"] = round((time.process_time() - c0) * 1000 / args.rounds, 3)  # no ASGI, no thread hop
            print(f"{name:10s} {r['queries']:3d} queries  cpu {r['cpu_ms']:6.2f} ms/request (min block {r['cpu_ms_min']:.2f})"
                  f"  PostgreSQL {r['postgres_cpu_ms']:5.2f} ms  wall {r['wall_ms']:6.2f} ms  | test client cpu "
                  f"{r['client_cpu_ms']:6.2f} ms")
            out[name] = r
        print("loadavg", " ".join(Path("/proc/loadavg").read_text().split()[:3]))
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
        return 0
    for name in filter(None, args.only.split(",")):
        r = measure(fns[name], warmup=args.warmup, rounds=args.rounds, time_queries=args.sql)
        top = ", ".join(f"{k} {v}%" for k, v in list(r["layer_share_pct"].items())[:6])
        print(f"{name:7s} {r['queries']:3d} queries {r['query_kinds']}  {r['ms_per_request_profiled']:7.2f} ms  | {top}")
        if args.sql:
            for q, t in zip(r["queries_sql"], r["queries_ms"], strict=True):
                print(f"      {t:7.3f} ms  {q}")
        if args.tree == name:
            print(r["profile_text"])
        out[name] = {k: v for k, v in r.items() if k != "profile_text"}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
