"""FHIR REST throughput: POST Patient (create) and GET Patient?name=...&_count=20 (search) against a real server.

    .venv/bin/python -m bench.fhir_rest [--patients 500] [--concurrency 16] [--runs 5] [--requests 400]

What it does, all on 127.0.0.1:
1. DATABASE_URL from the environment, default ``postgres://postgres@127.0.0.1:5432/omnicare_bench``; the
   database is created if missing (PostgreSQL) and migrated.
2. Seeds the deterministic demo data (``seed_demo --patients N``; skipped when already there) so searches
   run over realistic volume, and creates a bench user (role front_desk: Patient read/search/create on every
   patient) with a bearer token.
3. Starts ``uvicorn omnicare.asgi:application`` with ONE worker (``tests/live.py``), REDIS_URL passed through.
4. For each scenario: a warm-up, then ``--runs`` runs of ``--requests`` requests (bounded by ``--max-seconds``
   each) from ``--concurrency`` concurrent httpx clients; reports the median requests/s of the runs and the
   latency percentiles of the median run. Non-2xx responses are counted and make the exit status 1.
Prints one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/omnicare_bench"
BENCH_MASTER_KEY = "YmVuY2gtb25seS1tYXN0ZXIta2V5LW5vdC1zZWNyZXQ="  # bench only: DEBUG off needs a real-looking key
SEARCH_TERMS = [
    "smith",
    "garc",
    "müller",
    "nguy",
    "kow",
    "patel",
    "jo",
    "ma",
    "an",
    "le",
    "ro",
    "ki",
    "ol",
    "ch",
]


def ensure_database(url: str) -> None:
    """Create the PostgreSQL database named in ``url`` when it does not exist (SQLite needs nothing)."""
    if not url.startswith(("postgres://", "postgresql://")):
        return
    import dj_database_url
    import psycopg
    from psycopg import sql

    cfg = dj_database_url.parse(url)
    admin = psycopg.connect(
        host=cfg["HOST"] or "127.0.0.1", port=int(cfg["PORT"] or 5432), user=cfg["USER"] or "postgres",
        password=cfg["PASSWORD"] or None, dbname="postgres", autocommit=True,
    )  # fmt: skip
    with admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (cfg["NAME"],)).fetchone()
        if not exists:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(cfg["NAME"])))


def manage(env: dict[str, str], *args: str) -> str:
    out = subprocess.run(  # noqa: S603 (fixed argv)
        [sys.executable, "manage.py", *args], cwd=REPO, env=env, check=False, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise SystemExit(f"manage.py {args[0]} failed ({out.returncode}):\n{out.stderr[-4000:]}")
    return out.stdout


def bench_token(env: dict[str, str]) -> str:
    """A fresh bearer token for the bench user (role front_desk)."""
    code = (
        "from django.contrib.auth import get_user_model\n"
        "from omnicare.access.roles import role_assign\n"
        "from omnicare.access.services import token_create\n"
        "u, _ = get_user_model().objects.get_or_create(username='bench.frontdesk')\n"
        "role_assign(user=u, role='front_desk')\n"
        "print(token_create(user=u, name='bench'))\n"
    )
    return manage(env, "shell", "-c", code).strip().splitlines()[-1]


async def run_load(
    request: Callable[[Any, int], Awaitable[Any]], *, total: int, concurrency: int, max_seconds: float
) -> dict[str, Any]:
    """``total`` requests from ``concurrency`` workers (stops early after ``max_seconds``)."""
    import httpx

    latencies: list[float] = []
    errors = 0
    samples: list[str] = []
    counter = iter(range(total))
    deadline = time.perf_counter() + max_seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal errors
            for n in counter:
                if time.perf_counter() > deadline:
                    return
                t0 = time.perf_counter()
                response = await request(client, n)
                latencies.append(time.perf_counter() - t0)
                if not 200 <= response.status_code < 300:
                    errors += 1
                    if len(samples) < 3:  # synthetic bench data only: safe to show
                        samples.append(f"{response.status_code} {response.text[:300]}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return (
            round(1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))], 2) if latencies else 0.0
        )

    return {
        "requests": len(latencies),
        "errors": errors,
        "error_samples": samples,
        "seconds": round(elapsed, 3),
        "rps": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
    }


async def scenario(
    name: str, request: Callable[[Any, int], Awaitable[Any]], args: argparse.Namespace
) -> dict[str, Any]:
    await run_load(request, total=args.warmup, concurrency=args.concurrency, max_seconds=args.max_seconds)
    runs = [
        await run_load(
            request, total=args.requests, concurrency=args.concurrency, max_seconds=args.max_seconds
        )
        for _ in range(args.runs)
    ]
    median_rps = statistics.median(r["rps"] for r in runs)
    median_run = min(runs, key=lambda r: abs(r["rps"] - median_rps))
    return {
        "scenario": name,
        "median_rps": round(median_rps, 1),
        "runs_rps": [r["rps"] for r in runs],
        "p50_ms": median_run["p50_ms"],
        "p95_ms": median_run["p95_ms"],
        "p99_ms": median_run["p99_ms"],
        "requests_per_run": median_run["requests"],
        "errors": sum(r["errors"] for r in runs),
        "error_samples": [s for r in runs for s in r["error_samples"]][:3],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--patients", type=int, default=500, help="demo patients to seed (about 50 resources each)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--requests", type=int, default=400, help="requests per run")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument(
        "--settings",
        default="omnicare.settings",
        help="DJANGO_SETTINGS_MODULE for the server (to compare variants)",
    )
    parser.add_argument("--max-seconds", type=float, default=20.0, help="time bound per run")
    args = parser.parse_args()

    sys.path.insert(0, str(REPO))
    from tests.live import live_server_start, live_server_stop

    db_url = os.environ.get("DATABASE_URL") or DEFAULT_DB
    ensure_database(db_url)
    env = {**os.environ, "DATABASE_URL": db_url, "OMNICARE_SECRET_KEY": "bench", "OMNICARE_DEBUG": "0",
           "OMNICARE_MASTER_KEY": os.environ.get("OMNICARE_MASTER_KEY", BENCH_MASTER_KEY),
           "DJANGO_SETTINGS_MODULE": "omnicare.settings"}  # fmt: skip
    t0 = time.perf_counter()
    manage(env, "migrate", "--noinput")
    manage(env, "seed_demo", "--patients", str(args.patients), "--seed", str(args.seed))
    setup_seconds = time.perf_counter() - t0
    token = bench_token(env)

    import dj_database_url

    database = dict(dj_database_url.parse(db_url))
    server = live_server_start(
        database=database,
        extra_env={"OMNICARE_SECRET_KEY": "bench", "OMNICARE_MASTER_KEY": env["OMNICARE_MASTER_KEY"], "DJANGO_SETTINGS_MODULE": args.settings},
        workers=1,
    )
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json",
               "Content-Type": "application/fhir+json"}  # fmt: skip
    base = server.url + "/fhir/R4"

    async def create(client: Any, n: int) -> Any:
        body = {"resourceType": "Patient", "name": [{"family": f"Benchmark{n % 97}", "given": ["Load", "Test"]}],
                "gender": "unknown", "birthDate": f"19{50 + n % 50}-0{1 + n % 9}-1{n % 10}",
                "identifier": [{"system": "urn:omnicare:bench", "value": f"B-{n}"}]}  # fmt: skip
        return await client.post(f"{base}/Patient", content=json.dumps(body), headers=headers)

    async def search(client: Any, n: int) -> Any:
        term = SEARCH_TERMS[n % len(SEARCH_TERMS)]
        return await client.get(f"{base}/Patient", params={"name": term, "_count": "20"}, headers=headers)

    async def run_all() -> list[dict[str, Any]]:
        return [await scenario("create Patient (POST)", create, args),
                await scenario("search Patient?name=&_count=20 (GET)", search, args)]  # fmt: skip

    try:
        results = asyncio.run(run_all())
    finally:
        live_server_stop(server)
    engine = "postgresql" if db_url.startswith("postgres") else "sqlite"
    report = {
        "benchmark": "fhir_rest",
        "server": "uvicorn omnicare.asgi:application, 1 worker",
        "settings": args.settings,
        "database": engine,
        "redis": bool(os.environ.get("REDIS_URL")),
        "seeded_patients": args.patients,
        "concurrency": args.concurrency,
        "runs": args.runs,
        "setup_seconds": round(setup_seconds, 1),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "results": results,
    }
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return 1 if any(r["errors"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
