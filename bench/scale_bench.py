"""Scale: FHIR REST with 1 and 2 uvicorn workers under wrk, beside a floor app; 100 sync devices; a push job
beside FHIR creates. PostgreSQL + Redis + a real Celery worker, all on 127.0.0.1.

    .venv/bin/python -m bench.scale_bench [--seconds 10] [--patients 150] [--quick]

1. Database ``scale_bench`` (``SCALE_BENCH_DATABASE_URL``), dropped and recreated, migrated, seeded with
   ``seed_demo --patients N``; a front-desk user (Patient read/search/create everywhere) and a physician
   on the care team of 20 bench patients, each with a bearer token.
2. FHIR REST: ``wrk`` (the field's HTTP load generator) for ``--seconds`` per figure against
   ``uvicorn omnicare.asgi:application --workers 2`` at 16 and 64 connections: GET Patient/<id> (read),
   GET Patient?name=<prefix>&_count=20 (search), POST Patient (create). The floor: the same wrk scripts
   against ``bench/floor_app.py`` on the same uvicorn, database and pool size (one primary-key SELECT /
   one JSONB INSERT). Read and create again with ``--workers 1`` for ``fhir_scale_2w_vs_1w``.
3. Sync: 100 devices (asyncio + httpx, one connection each) pushing batches of 10 new Observations for
   ``--seconds``: mutations/s and push p95.
4. A 5,000-mutation push job on a real Celery worker while 4 clients POST Patients: their p95.
Every figure is recorded with the machine's 1-minute load average before and after it. Merges its keys into
``bench/results.json`` ``metrics`` and writes its own section of ``BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.fhir_rest import SEARCH_TERMS, ensure_database, manage  # noqa: E402
from bench.machine import busy_pct, cpu_seconds, cpu_times, process_split, roles_cpu  # noqa: E402
from bench.sections import section_write  # noqa: E402

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/scale_bench"
SECTION = "## Scale: FHIR REST with 1 and 2 workers, 100 sync devices, push jobs (bench/scale_bench.py)"


def load() -> float:
    return round(os.getloadavg()[0], 2)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def drop_database(url: str) -> None:
    import dj_database_url
    import psycopg
    from psycopg import sql

    cfg = dj_database_url.parse(url)
    with psycopg.connect(host=cfg["HOST"] or "127.0.0.1", port=int(cfg["PORT"] or 5432), user=cfg["USER"] or "postgres",
                         dbname="postgres", autocommit=True) as admin:  # fmt: skip
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(cfg["NAME"])))


def child_env(db_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "OMNICARE_TEST_"))}
    env.update({
        "DATABASE_URL": db_url, "OMNICARE_DEBUG": "0", "OMNICARE_SECRET_KEY": "scale-bench", "OMNICARE_SECURE": "0",
        "OMNICARE_TESTING": "1", "OMNICARE_LOG_LEVEL": "WARNING", "PYTHONPATH": str(REPO),
        "DJANGO_SETTINGS_MODULE": "omnicare.settings",
    })  # fmt: skip
    return env


class Server:
    def __init__(self, app: str, workers: int, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix="scale-bench-", suffix=".log", delete=False)  # noqa: SIM115
        argv = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(self.port),
                "--workers", str(workers), "--no-access-log", "--log-level", "warning", "--lifespan", "off"]  # fmt: skip
        self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT)  # noqa: S603
        health = "/health" if "floor" in app else "/api/health"
        import httpx

        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + health, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise SystemExit(f"{app} did not start: {Path(self.log.name).read_text()[-2000:]}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        Path(self.log.name).unlink(missing_ok=True)


def setup(env: dict[str, str], patients: int) -> dict[str, Any]:
    manage(env, "migrate", "--noinput")
    manage(env, "seed_demo", "--patients", str(patients), "--seed", "7")
    code = """
import json
from django.contrib.auth import get_user_model
from omnicare.access.roles import PHYSICIAN, role_assign
from omnicare.access.services import token_create
from omnicare.fhir.models import Resource
from omnicare.fhir.services import resources_import
U = get_user_model()
fd, _ = U.objects.get_or_create(username="bench.frontdesk"); role_assign(user=fd, role="front_desk")
doc, _ = U.objects.get_or_create(username="bench.scale.doc"); role_assign(user=doc, role=PHYSICIAN)
res = [{"resourceType": "Practitioner", "id": "pr-scale", "name": [{"family": "Scale"}],
        "identifier": [{"system": "urn:omnicare:user", "value": "bench.scale.doc"}]}]
for i in range(20):
    res += [{"resourceType": "Patient", "id": f"sb{i}", "name": [{"family": f"Scale{i}"}]},
            {"resourceType": "CareTeam", "id": f"ct-sb{i}", "status": "active", "subject": {"reference": f"Patient/sb{i}"},
             "participant": [{"member": {"reference": "Practitioner/pr-scale"}}]}]
resources_import(resources=res)
pats = list(Resource.objects.filter(resource_type="Patient", deleted=False).values_list("pk", "resource_id"))
print(json.dumps({"frontdesk": token_create(user=fd, name="scale"), "doc": token_create(user=doc, name="scale"),
                  # a token belongs to one device: one per sync device, one for the push job
                  "docs": [token_create(user=doc, name=f"scale-{i}") for i in range(101)], "patients": pats}))
"""
    return json.loads(manage(env, "shell", "-c", code).strip().splitlines()[-1])


PATIENT = {"resourceType": "Patient", "name": [{"family": "Benchmark", "given": ["Scale"]}], "gender": "female",
           "birthDate": "1980-01-01"}  # fmt: skip


def wrk_script(kind: str, paths: list[str], token: str) -> str:
    body = json.dumps(PATIENT).replace("\\", "\\\\").replace('"', '\\"')
    lua_paths = ",".join(f'"{p}"' for p in paths) if paths else ""
    header = (
        f'wrk.headers["Authorization"] = "Bearer {token}"\n'
        'wrk.headers["Accept"] = "application/fhir+json"\n'
        'wrk.headers["Content-Type"] = "application/fhir+json"\n'
    )
    if kind == "create":
        return header + f'wrk.method = "POST"\nwrk.body = "{body}"\n'
    return header + (
        f"local paths = {{{lua_paths}}}\n"
        "request = function()\n  return wrk.format(\"GET\", paths[math.random(#paths)])\nend\n"
    )


class LockSampler:
    """Samples pg_stat_activity every 100 ms during a figure: how many of the bench database's active
    backends wait on a lock, and on which contention point (the issue's diagnosis, repeated after the fix)."""

    def __init__(self, db_url: str | None) -> None:
        self.db_url, self.samples = db_url, []  # type: ignore[var-annotated]
        self._stop = False
        self._thread: Any = None

    def __enter__(self) -> LockSampler:
        if self.db_url:
            import threading

            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        import dj_database_url
        import psycopg

        cfg = dj_database_url.parse(self.db_url or "")
        with psycopg.connect(host=cfg["HOST"] or "127.0.0.1", port=int(cfg["PORT"] or 5432),
                             user=cfg["USER"] or "postgres", dbname=cfg["NAME"], autocommit=True) as conn:  # fmt: skip
            while not self._stop:
                rows = conn.execute(
                    "SELECT state, wait_event_type, query FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ).fetchall()
                active = [r for r in rows if r[0] == "active"]
                locked = [r for r in active if r[1] == "Lock"]
                self.samples.append((len(active), len(locked),
                                     sum("fhir_feedcounter" in (r[2] or "") for r in locked),
                                     sum("audit_chainhead" in (r[2] or "") for r in locked)))  # fmt: skip
                time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        if self._thread is not None:
            self._thread.join(5)

    def summary(self) -> dict[str, float]:
        if not self.samples:
            return {}
        n = len(self.samples)
        return {"active_backends": round(sum(s[0] for s in self.samples) / n, 1),
                "waiting_on_lock": round(sum(s[1] for s in self.samples) / n, 1),
                "waiting_on_feed_counter": round(sum(s[2] for s in self.samples) / n, 2),
                "waiting_on_audit_head": round(sum(s[3] for s in self.samples) / n, 1)}  # fmt: skip


def wrk(server: Server, path: str, script: str, *, conns: int, seconds: int, db_url: str | None = None) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    before = load()
    with LockSampler(db_url) as sampler:
        return _wrk(server, path, f.name, conns=conns, seconds=seconds, before=before) | {"locks": sampler.summary()}


def _wrk(server: Server, path: str, script_path: str, *, conns: int, seconds: int, before: float) -> dict[str, Any]:
    class _F:
        name = script_path

    f = _F()
    cpu0, roles0 = cpu_times(), roles_cpu({"app": server.proc.pid})
    out = subprocess.run(  # noqa: S603 (fixed argv)
        [shutil.which("wrk") or "wrk", "-t2", f"-c{conns}", f"-d{seconds}s", "--timeout", "10s", "--latency", "-s", f.name,
         server.url + path],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    cpu1, roles1 = cpu_times(), roles_cpu({"app": server.proc.pid})
    cpu = busy_pct(cpu0, cpu1)
    os.unlink(f.name)
    text = out.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors:.*", text)

    def pct(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        if not m:
            return float("nan")
        value, unit = float(m.group(1)), m.group(2)
        return round(value / 1000 if unit == "us" else value * 1000 if unit == "s" else value, 2)

    # Who used the CPU, and how much of it one request cost each of them (the app's workers, PostgreSQL, Redis,
    # wrk itself, and "other": the kernel and anything else running): the part a change to the app can move.
    done = re.search(r"(\d+) requests in", text)
    requests = int(done.group(1)) if done else 0
    split = process_split(roles0, roles1, cpu_seconds(cpu0, cpu1))
    busy_s = cpu_seconds(cpu0, cpu1)
    per_request = {k: round(10 * v * busy_s / requests, 3) if requests else float("nan") for k, v in split.items()}
    return {"per_s": round(rps, 1), "p50_ms": pct("50"), "p99_ms": pct("99"), "non_2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": errors.group(0) if errors else "", "load_before": before, "load_after": load(),
            "cpu_busy_pct": cpu, "cpu_split_pct": split, "cpu_ms_per_request": per_request}  # fmt: skip


async def sync_devices(url: str, tokens: list[str], *, devices: int, seconds: float) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    mutations = 0
    bad = 0
    stop = time.monotonic() + seconds

    async def device(d: int) -> None:
        nonlocal mutations, bad
        rng = random.Random(d)
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {tokens[d]}"}, timeout=60) as c:
            while time.monotonic() < stop:
                muts = []
                for _ in range(10):
                    oid = uuid.uuid4().hex
                    muts.append({"mutationId": oid, "op": "put", "resourceType": "Observation", "id": oid,
                                 "baseVersion": None, "resource": {
                                     "resourceType": "Observation", "id": oid, "status": "final",
                                     "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                                     "subject": {"reference": f"Patient/sb{rng.randrange(20)}"},
                                     "valueQuantity": {"value": rng.randrange(50, 120), "unit": "/min"}}})  # fmt: skip
                t0 = time.perf_counter()
                r = await c.post(url + "/api/sync/push", json={"deviceId": f"scale-{d}", "mutations": muts})
                latencies.append((time.perf_counter() - t0) * 1000)
                if r.status_code == 200:
                    mutations += sum(x["status"] == "applied" for x in r.json()["results"])
                else:
                    bad += 1

    before = load()
    t0 = time.monotonic()
    await asyncio.gather(*(device(d) for d in range(devices)))
    took = time.monotonic() - t0
    latencies.sort()
    return {"mutations_per_s": round(mutations / took, 1), "push_p95_ms": round(latencies[int(len(latencies) * 0.95)], 1),
            "pushes": len(latencies), "non_200": bad, "load_before": before, "load_after": load()}  # fmt: skip


async def job_beside_creates(url: str, doc: str, frontdesk: str, *, n: int) -> dict[str, Any]:
    import httpx

    muts = [{"mutationId": f"job-{i}-{uuid.uuid4().hex[:6]}", "op": "put", "resourceType": "Observation",
             "id": f"job{i}-{uuid.uuid4().hex[:6]}", "baseVersion": None, "resource": None} for i in range(n)]  # fmt: skip
    for i, m in enumerate(muts):
        m["resource"] = {"resourceType": "Observation", "id": m["id"], "status": "final",
                         "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                         "subject": {"reference": f"Patient/sb{i % 20}"}, "valueQuantity": {"value": 70, "unit": "/min"}}  # fmt: skip
    latencies: list[float] = []
    before = load()
    async with httpx.AsyncClient(timeout=120) as c:
        r = await c.post(url + "/api/sync/push/jobs", json={"deviceId": "scale-job", "mutations": muts},
                         headers={"Authorization": f"Bearer {doc}"})  # fmt: skip
        assert r.status_code == 202, r.text
        job = r.json()["id"]
        done = asyncio.Event()
        state: dict[str, Any] = {}

        async def creator() -> None:
            h = {"Authorization": f"Bearer {frontdesk}", "Content-Type": "application/fhir+json"}
            while not done.is_set():
                t0 = time.perf_counter()
                r = await c.post(url + "/fhir/R4/Patient", content=json.dumps(PATIENT), headers=h)
                if state.get("status") == "running":
                    latencies.append((time.perf_counter() - t0) * 1000)
                assert r.status_code == 201, r.text

        async def poll() -> None:
            t0 = time.monotonic()
            while time.monotonic() - t0 < 300:
                s = (await c.get(url + f"/api/sync/jobs/{job}", headers={"Authorization": f"Bearer {doc}"})).json()
                state.update(s)
                if s["status"] in ("done", "failed"):
                    break
                await asyncio.sleep(0.2)
            state["seconds"] = round(time.monotonic() - t0, 1)
            done.set()

        await asyncio.gather(poll(), *(creator() for _ in range(4)))
    latencies.sort()
    p95 = round(latencies[int(len(latencies) * 0.95)], 1) if latencies else None
    return {"job_status": state.get("status"), "job_seconds": state.get("seconds"), "creates_during_job": len(latencies),
            "create_p95_ms": p95, "load_before": before, "load_after": load()}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--patients", type=int, default=150)
    ap.add_argument("--job", type=int, default=5000)
    ap.add_argument("--quick", action="store_true", help="3 s per figure, 16 clients only, 1,000-mutation job")
    ap.add_argument("--no-write", action="store_true", help="print only; leave results.json and BENCHMARKS.md")
    ap.add_argument("--sync-only", action="store_true",
                    help="only the 100-device sync figure (2 workers); writes just its two metrics to results.json")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.job = 3, 1000
    if args.sync_only:
        return sync_only(args)
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install -y wrk")
    db = os.environ.get("SCALE_BENCH_DATABASE_URL", DEFAULT_DB)
    drop_database(db)
    ensure_database(db)
    env = child_env(db)
    started = time.time()
    data = setup(env, args.patients)
    tok = data["frontdesk"]
    pks = [pk for pk, _ in data["patients"]]
    reads = [f"/fhir/R4/Patient/{rid}" for _, rid in data["patients"]][:500]
    searches = [f"/fhir/R4/Patient?name={quote(t)}&_count=20" for t in SEARCH_TERMS]
    floor_reads = [f"/floor/read/{pk}" for pk in pks[:500]]
    conns = [16] if args.quick else [16, 64]
    fig: dict[str, Any] = {}

    floor = Server("bench.floor_app:app", 2, env)
    try:
        for c in conns:
            fig[f"floor_read_{c}"] = wrk(floor, floor_reads[0], wrk_script("read", floor_reads, ""), conns=c, seconds=args.seconds)
            fig[f"floor_create_{c}"] = wrk(floor, "/floor/create", wrk_script("create", [], ""), conns=c, seconds=args.seconds)
    finally:
        floor.stop()
    # The framework's own floor (bench/django_floor.py): Django + ninja doing the same one statement.
    dj = Server("bench.django_floor:app", 2, env)
    try:
        for c in conns:
            fig[f"django_read_{c}"] = wrk(dj, floor_reads[0], wrk_script("read", floor_reads, ""), conns=c, seconds=args.seconds)
            fig[f"django_create_{c}"] = wrk(dj, "/floor/create", wrk_script("create", [], ""), conns=c, seconds=args.seconds)
    finally:
        dj.stop()
    one = Server("omnicare.asgi:application", 1, env)
    try:
        fig["read_1w_16"] = wrk(one, reads[0], wrk_script("read", reads, tok), conns=16, seconds=args.seconds)
        fig["create_1w_16"] = wrk(one, "/fhir/R4/Patient", wrk_script("create", [], tok), conns=16, seconds=args.seconds)
    finally:
        one.stop()
    two = Server("omnicare.asgi:application", 2, env)
    worker = None
    try:
        for c in conns:
            fig[f"read_2w_{c}"] = wrk(two, reads[0], wrk_script("read", reads, tok), conns=c, seconds=args.seconds, db_url=db)
            fig[f"search_2w_{c}"] = wrk(two, searches[0], wrk_script("read", searches, tok), conns=c, seconds=args.seconds)
            fig[f"create_2w_{c}"] = wrk(two, "/fhir/R4/Patient", wrk_script("create", [], tok), conns=c, seconds=args.seconds, db_url=db)
        fig["sync_100dev"] = asyncio.run(sync_devices(two.url, data["docs"], devices=100, seconds=args.seconds * 1.5))
        if os.environ.get("REDIS_URL"):
            queue = f"scale-bench-{uuid.uuid4().hex[:8]}"
            wenv = {**env, "OMNICARE_JOBS_QUEUE": queue, "CELERY_TASK_ALWAYS_EAGER": "0"}
            worker = subprocess.Popen(  # noqa: S603 (fixed argv)
                [sys.executable, "-m", "celery", "-A", "omnicare", "worker", "--pool=solo", "-Q", queue,
                 "--loglevel=WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"],
                cwd=REPO, env=wenv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            two.stop()
            two = Server("omnicare.asgi:application", 2, {**env, "OMNICARE_JOBS_QUEUE": queue, "CELERY_TASK_ALWAYS_EAGER": "0"})
            fig["push_job"] = asyncio.run(job_beside_creates(two.url, data["docs"][100], tok, n=args.job))
    finally:
        two.stop()
        if worker is not None:
            worker.terminate()
            worker.wait(30)
    drop_database(db)

    c0 = conns[0]
    metrics = {
        "fhir_read_per_s": fig[f"read_2w_{c0}"]["per_s"],
        "fhir_search_per_s": fig[f"search_2w_{c0}"]["per_s"],
        "fhir_create_per_s": fig[f"create_2w_{c0}"]["per_s"],
        "fhir_read_floor_per_s": fig[f"floor_read_{c0}"]["per_s"],
        "fhir_search_floor_per_s": fig[f"floor_read_{c0}"]["per_s"],  # the floor of a search is one indexed read
        "fhir_create_floor_per_s": fig[f"floor_create_{c0}"]["per_s"],
        "fhir_read_django_floor_per_s": fig[f"django_read_{c0}"]["per_s"],
        "fhir_create_django_floor_per_s": fig[f"django_create_{c0}"]["per_s"],
        "fhir_scale_2w_vs_1w": round(
            (fig["read_2w_16"]["per_s"] + fig["create_2w_16"]["per_s"])
            / max(fig["read_1w_16"]["per_s"] + fig["create_1w_16"]["per_s"], 0.1), 2
        ),
        # The machine's busy share while one worker served (read and create): a second worker can only use what
        # is left, so 100 / busy is the most two workers could give on this machine.
        "fhir_1w_cpu_busy_pct": round((fig["read_1w_16"]["cpu_busy_pct"] + fig["create_1w_16"]["cpu_busy_pct"]) / 2, 1),
        "sync_mutations_per_s_100dev": fig["sync_100dev"]["mutations_per_s"],
        "push_p95_ms_100dev": fig["sync_100dev"]["push_p95_ms"],
    }
    if "push_job" in fig:
        metrics["push_job_concurrent_create_p95_ms"] = fig["push_job"]["create_p95_ms"]
    if 64 in conns:
        metrics.update({"fhir_read_per_s_64c": fig["read_2w_64"]["per_s"], "fhir_search_per_s_64c": fig["search_2w_64"]["per_s"],
                        "fhir_create_per_s_64c": fig["create_2w_64"]["per_s"]})  # fmt: skip
    report = {"metrics": metrics, "figures": fig, "seconds_per_figure": args.seconds, "seeded_patients": args.patients,
              "elapsed_s": round(time.time() - started), "cpus": os.cpu_count()}  # fmt: skip
    print(json.dumps(report, indent=1))
    bad = sum(f.get("non_2xx", 0) + f.get("non_200", 0) for f in fig.values())
    if not args.no_write:
        write_results(report)
    return 1 if bad else 0


def sync_only(args: argparse.Namespace) -> int:
    """The sync part alone (same seed, same 2 uvicorn workers, same devices and batches as the full run)."""
    db = os.environ.get("SCALE_BENCH_DATABASE_URL", DEFAULT_DB)
    drop_database(db)
    ensure_database(db)
    env = child_env(db)
    data = setup(env, args.patients)
    two = Server("omnicare.asgi:application", 2, env)
    try:
        fig = asyncio.run(sync_devices(two.url, data["docs"], devices=100, seconds=args.seconds * 1.5))
    finally:
        two.stop()
    drop_database(db)
    metrics = {"sync_mutations_per_s_100dev": fig["mutations_per_s"], "push_p95_ms_100dev": fig["push_p95_ms"]}
    print(json.dumps({"metrics": metrics, "sync_100dev": fig, "cpus": os.cpu_count()}, indent=1))
    if not args.no_write:
        path = REPO / "bench" / "results.json"
        data = json.loads(path.read_text()) if path.exists() else {"metrics": {}}
        data.setdefault("metrics", {}).update(metrics)
        data.setdefault("detail", {}).setdefault("scale", {}).setdefault("figures", {})["sync_100dev"] = fig
        path.write_text(json.dumps(data, indent=2) + "\n")
    return 1 if fig["non_200"] else 0


def write_results(report: dict[str, Any]) -> None:
    path = REPO / "bench" / "results.json"
    data = json.loads(path.read_text()) if path.exists() else {"metrics": {}}
    data.setdefault("metrics", {}).update(report["metrics"])
    data.setdefault("detail", {})["scale"] = {k: v for k, v in report.items() if k != "metrics"}
    path.write_text(json.dumps(data, indent=2) + "\n")
    md = REPO / "BENCHMARKS.md"
    m, f = report["metrics"], report["figures"]
    rows = [
        ("read GET Patient/<id>", "read", "floor_read", "django_read"),
        ("search Patient?name=&_count=20", "search", "floor_read", "django_read"),
        ("create POST Patient", "create", "floor_create", "django_create"),
    ]  # fmt: skip
    lines = [SECTION, "",
             f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on a 2-core machine (the load average "
             "is beside every figure: wrk, two uvicorn workers and PostgreSQL share the cores, and anything else running "
             "shows there; ratios are the point). wrk -t2, "
             f"{report['seconds_per_figure']} s per figure, PostgreSQL 15, `{report['seeded_patients']}` demo patients.", "",
             "| scenario | clients | 2 workers req/s | p50 / p99 ms | floor req/s | app/floor | Django + ninja floor req/s "
             "(÷ floor) | load before→after |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for label, kind, floor, djf in rows:
        for c in (16, 64):
            a, fl, d = f.get(f"{kind}_2w_{c}"), f.get(f"{floor}_{c}"), f.get(f"{djf}_{c}")
            if not a or not fl:
                continue
            dcell = f"{d['per_s']} ({d['per_s'] / max(fl['per_s'], 0.1):.0%})" if d else "-"
            lines.append(f"| {label} | {c} | {a['per_s']} | {a['p50_ms']} / {a['p99_ms']} | {fl['per_s']} | "
                         f"{a['per_s'] / max(fl['per_s'], 0.1):.0%} | {dcell} | {a['load_before']}→{a['load_after']} |")  # fmt: skip
    lines.append("")
    if f.get("django_read_16") and f.get("floor_read_16"):
        dr, dc = f["django_read_16"]["per_s"], f.get("django_create_16", {}).get("per_s", 0)
        fr, fc = f["floor_read_16"]["per_s"], f.get("floor_create_16", {}).get("per_s", 0)
        lines.append(
            f"- The framework alone (`bench/django_floor.py`: Django + django-ninja on OmniCare's ASGI handler, no "
            f"middleware, auth, access check, audit or validation, the same one statement): read {dr} req/s = "
            f"{dr / max(fr, 0.1):.0%} of the bare floor, create {dc} = {dc / max(fc, 0.1):.0%}. Every OmniCare "
            "request also authenticates, checks access and writes its audit record (a read is a SELECT, an INSERT "
            "and a COMMIT), so its share of the floor is below the framework's.")
    lines.append("")
    cost = [(label, f[key]["cpu_ms_per_request"]) for key, label in (
        ("read_2w_16", "read"), ("django_read_16", "Django + ninja floor read"), ("floor_read_16", "bare floor read"),
        ("create_2w_16", "create"), ("django_create_16", "Django + ninja floor create"),
        ("floor_create_16", "bare floor create"), ("search_2w_16", "search"))
        if "cpu_ms_per_request" in f.get(key, {})]  # fmt: skip
    if cost:
        lines += ["CPU per request, 16 clients (ms of one core, from /proc: the server's processes, PostgreSQL, Redis, "
                  "wrk, and the rest of the machine — the kernel's network stack and anything else running):", "",
                  "| request | server | PostgreSQL | Redis | wrk | other | all |", "|---|---:|---:|---:|---:|---:|---:|"]
        for label, c in cost:
            lines.append(f"| {label} | {c['app']} | {c['postgres']} | {c['redis']} | {c['load_generator']} | {c['other']} | "
                         f"{round(sum(c.values()), 3)} |")
        lines.append("")
    for key, label in (("create_2w_64", "creates, 64 clients"), ("read_2w_64", "reads, 64 clients"),
                       ("create_2w_16", "creates, 16 clients"), ("read_2w_16", "reads, 16 clients")):  # fmt: skip
        lk = (f.get(key) or {}).get("locks")
        if lk:
            lines.append(f"- pg_stat_activity during {label}: {lk['active_backends']} active backends, "
                         f"{lk['waiting_on_lock']} waiting on a lock — {lk['waiting_on_feed_counter']} on the feed counter, "
                         f"{lk['waiting_on_audit_head']} on the audit chain head.")  # fmt: skip
    s = f["sync_100dev"]
    lines += [
              f"- 1 vs 2 workers (read + create, 16 clients): {f['read_1w_16']['per_s']} + {f['create_1w_16']['per_s']} vs "
              f"{f['read_2w_16']['per_s']} + {f['create_2w_16']['per_s']} req/s: **fhir_scale_2w_vs_1w = {m['fhir_scale_2w_vs_1w']}** "
              f"(load {f['read_1w_16']['load_before']}→{f['create_2w_16']['load_after']}). With one worker the machine was "
              f"already **{m['fhir_1w_cpu_busy_pct']} % busy** (both cores, from /proc/stat: the worker, wrk and PostgreSQL), "
              f"so two workers could give at most {round(100 / max(m['fhir_1w_cpu_busy_pct'], 1), 2)}× on this machine; "
              f"with two: {f['read_2w_16']['cpu_busy_pct']} % (read) and {f['create_2w_16']['cpu_busy_pct']} % (create).",
              f"- 100 devices pushing 10 new Observations each, 2 workers: **{s['mutations_per_s']} mutations/s**, push p95 "
              f"**{s['push_p95_ms']} ms** ({s['pushes']} pushes; load {s['load_before']}→{s['load_after']})."]  # fmt: skip
    if "push_job" in f:
        j = f["push_job"]
        lines.append(f"- A {j.get('creates_during_job')}-create sample while a push job ran ({j['job_status']} in "
                     f"{j['job_seconds']} s on one solo Celery worker, committed in chunks of 100): create p95 "
                     f"**{j['create_p95_ms']} ms**, no worse than creates with no job running (load {j['load_before']}→{j['load_after']}).")  # fmt: skip
    lines += ["", "Command: `.venv/bin/python -m bench.scale_bench` (needs `wrk`, PostgreSQL, REDIS_URL for the job figure).", ""]
    # Only this section is replaced: the sections after it (HL7, CDS, bulk, ...) belong to other scripts and
    # stay (this used to truncate the file at its heading and drop them).
    section_write(md, SECTION, "\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
