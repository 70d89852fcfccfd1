"""``make bench``: OmniCare measured side by side with PouchDB and a raw IndexedDB floor, in one run.

    .venv/bin/python bench/run.py                      # full run (BENCH_PATIENTS=246 -> ~10,000 resources)
    .venv/bin/python bench/run.py --smoke              # ~200 resources, 1 run each, < 2 min
    BENCH_PATIENTS=480 BENCH_RUNS=7 .venv/bin/python bench/run.py

Everything runs on 127.0.0.1 and is bounded (timeouts on every wait, fixed run counts):

1. PostgreSQL database ``omnicare_bench`` (``BENCH_DATABASE_URL`` overrides) is dropped, created, migrated,
   seeded with ``seed_demo --patients BENCH_PATIENTS --seed 1`` and given the demo users.
2. ``uvicorn omnicare.asgi:application`` (1 worker, DEBUG off) serves the API and the PWA (WhiteNoise).
3. The documents the demo physician ``dr.adams`` may sync are pulled once over HTTP; they are THE data set:
   N = their count. The same N documents are loaded into ``pouchdb-server`` (npm, in memory, 127.0.0.1)
   and written to ``bench/out/docs.json`` for the raw IndexedDB floor.
4. Headless Chromium (Debian ``/usr/bin/chromium`` via Playwright), a fresh browser context per run:
   * ``initial_sync_s``: the PWA's own Python (``B.BrowserApp.sync_once(first=True)``: pull -> seal -> IndexedDB,
     page by page, through ``/app/net.js``, ``/app/crypto.js``, ``/app/idb.js``) from an empty device;
   * ``pouchdb_initial_sync_s``: ``PouchDB.replicate(remote, local)`` (IndexedDB adapter, defaults);
   * ``pouchdb_tuned_initial_sync_s``: the same with the ``indexeddb`` adapter and ``batch_size`` 1,000;
   * ``rxdb_initial_sync_s``: RxDB (Dexie.js storage) with its CouchDB HTTP replication from the same server;
   * ``sync_longtask_max_ms``: the longest main-thread task (Long Tasks API) during ``initial_sync_s``;
   * ``raw_idb_put_s``: the N plaintext documents put in one IndexedDB transaction from JS;
   * ``encrypt_decrypt_ms``: seal + open of 1,000 real records from Python, one WebCrypto batch each;
   * ``search_p95_ms_10k`` / ``_50k``: ``BrowserApp.call("search")`` over the encrypted store after the
     sync, then after growing the store to 50,000 records (smoke: 5 x N) with more demo patients through
     the same sealing path;
   * ``offline_reload_s``: the real app (index.html + service worker), network off, reload -> unlock screen
     -> PIN -> patient list.
5. Server: ``bench/fhir_rest.py`` (FHIR create/search through uvicorn) and ``bench/sync_bench.py`` (pull
   throughput, push of 1,000) as subprocesses on the same PostgreSQL; compression over the N documents.

Layout: this file orchestrates (database, servers, the data set, the run order); ``bench/suite/browser.py`` drives
Chromium, ``bench/suite/measures.py`` runs the server-side measures, ``bench/suite/report.py`` writes the report.
Merges its keys into ``bench/results.json`` and its sections into ``BENCHMARKS.md`` (other scripts' stay). Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/run.py`: make `bench.suite` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.suite import browser as B  # noqa: E402
from bench.suite import measures as M  # noqa: E402
from bench.suite import report as R  # noqa: E402
from bench.suite.common import (  # noqa: E402
    BENCH,
    DEFAULT_DB,
    OUT,
    PASSWORD,
    REPO,
    T0,
    USER,
    base_env,
    free_port,
    log,
    stop,
    summary,
    wait_http,
)


def manage(env: dict[str, str], *args: str, timeout: float = 900) -> str:
    out = subprocess.run(  # noqa: S603 (fixed argv)
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,  # noqa: S603
        timeout=timeout,
        check=False,
    )
    if out.returncode:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return out.stdout


def setup_database(db_url: str, patients: int, *, fresh: bool) -> dict[str, Any]:
    """Drop/create (PostgreSQL), migrate, seed the demo patients and users; returns timings."""
    import dj_database_url
    import psycopg
    from psycopg import sql

    cfg = dj_database_url.parse(db_url)
    t0 = time.perf_counter()
    with psycopg.connect(
        host=cfg["HOST"] or "127.0.0.1",
        port=int(cfg["PORT"] or 5432),
        user=cfg["USER"] or "postgres",
        password=cfg["PASSWORD"] or None,
        dbname="postgres",
        autocommit=True,
    ) as admin:
        name = sql.Identifier(cfg["NAME"])
        if fresh:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (cfg["NAME"],)).fetchone():
            admin.execute(sql.SQL("CREATE DATABASE {}").format(name))
        row = admin.execute("SHOW server_version").fetchone()
        version = row[0] if row else "?"
    env = base_env(db_url)
    manage(env, "migrate", "--noinput")
    t1 = time.perf_counter()
    manage(env, "seed_demo", "--patients", str(patients), "--seed", "1")
    t2 = time.perf_counter()
    manage(env, "create_demo_users")
    return {"postgres": version, "migrate_s": round(t1 - t0, 1), "seed_s": round(t2 - t1, 1)}


def start_server(db_url: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = base_env(db_url)
    env.update({"OMNICARE_ALLOWED_HOSTS": "127.0.0.1,localhost", "OMNICARE_CSRF_TRUSTED_ORIGINS": url})
    log_file = (OUT / "server.log").open("wb")
    proc = subprocess.Popen(  # noqa: S603 (fixed argv)
        [
            sys.executable,
            "-m",
            "uvicorn",
            "omnicare.asgi:application",
            "--host",
            "127.0.0.1",  # noqa: S603
            "--port",
            str(port),
            "--workers",
            "1",
            "--no-access-log",
            "--log-level",
            "warning",
            "--lifespan",
            "off",
        ],
        cwd=REPO,
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    wait_http(url + "/api/health", proc, 60, "uvicorn")
    return proc, url


def pull_scope(url: str, *, limit: int = 1000) -> tuple[list[dict[str, Any]], float, int]:
    """Every resource ``dr.adams`` syncs, pulled over the real API; returns (docs, seconds pulling, pages)."""
    import httpx

    with httpx.Client(base_url=url, timeout=60) as client:
        token = client.get("/api/auth/csrf").json()["csrfToken"]
        headers = {"X-CSRFToken": token, "Referer": url + "/"}
        r = client.post("/api/auth/login", json={"username": USER, "password": PASSWORD}, headers=headers)
        r.raise_for_status()
        headers["X-CSRFToken"] = client.cookies.get("csrftoken") or token
        # A session is bound to its device and then must name it on every call (issue 10, item 15).
        headers["OmniCare-Device-Id"] = "bench-tablet"
        # Pulls need a registered device (issue 10): register this bench "tablet" once.
        client.post(
            "/api/sync/devices", json={"deviceId": "bench-tablet"}, headers=headers
        ).raise_for_status()
        docs: list[dict[str, Any]] = []
        cursor = None
        t0 = time.perf_counter()
        pages = 0
        while pages < 10_000:
            pages += 1
            r = client.post(
                "/api/sync/pull?deviceId=bench-tablet",
                json={"cursor": cursor, "limit": limit},
                headers=headers,
            )
            r.raise_for_status()
            page = r.json()
            docs += [c["resource"] for c in page["changes"] if not c.get("deleted")]
            cursor = page["cursor"]
            if not page["hasMore"]:
                break
        seconds = time.perf_counter() - t0
    return docs, seconds, pages


def start_pouchdb_server(docs: list[dict[str, Any]]) -> tuple[subprocess.Popen[bytes], str]:
    """pouchdb-server in memory on 127.0.0.1 with the same documents in database ``omnicare``."""
    import httpx

    binary = BENCH / "node_modules" / ".bin" / "pouchdb-server"
    if not binary.exists():
        raise RuntimeError("bench/node_modules is missing: run `make bench` (it runs npm install in bench/)")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    workdir = OUT / "pouchdb-server"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    log_file = (OUT / "pouchdb-server.log").open("wb")
    proc = subprocess.Popen(  # noqa: S603 (fixed argv)
        [str(binary), "--in-memory", "--host", "127.0.0.1", "--port", str(port)],  # noqa: S603
        cwd=workdir,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    wait_http(url + "/", proc, 60, "pouchdb-server")
    with httpx.Client(base_url=url, timeout=120) as client:
        client.put("/omnicare").raise_for_status()
        for start in range(0, len(docs), 1000):
            batch = [{**d, "_id": f"{d['resourceType']}/{d['id']}"} for d in docs[start : start + 1000]]
            client.post("/omnicare/_bulk_docs", json={"docs": batch}).raise_for_status()
        count = client.get("/omnicare").json()["doc_count"]
    if count != len(docs):
        raise RuntimeError(f"pouchdb-server holds {count} documents, expected {len(docs)}")
    return proc, url


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="~200 resources, 1 run each (for the test suite)")
    ap.add_argument("--patients", type=int, default=int(os.environ.get("BENCH_PATIENTS", "246")))
    ap.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", "5")))
    ap.add_argument(
        "--grow-to",
        type=int,
        default=int(os.environ.get("BENCH_GROW_TO", "50000")),
        help="records in the store for search_p95_ms_50k (smoke: 5 x N)",
    )
    ap.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB))
    ap.add_argument("--keep-db", action="store_true", help="reuse the database (skip drop/create)")
    ap.add_argument(
        "--only", default="", help="comma list of parts: browser,pouch,rxdb,raw,offline,server,compression"
    )
    ap.add_argument(
        "--trace", action="store_true", help="Chrome trace of the last initial sync run -> bench/out/"
    )
    ap.add_argument("--results", default=str(BENCH / "results.json"))
    ap.add_argument("--report", default=str(REPO / "BENCHMARKS.md"))
    ap.add_argument("--report-only", action="store_true", help="rewrite the report from the results file")
    args = ap.parse_args()
    if args.report_only:
        results = json.loads(Path(args.results).read_text())
        R.merge_report(Path(args.report), R.write_report(results, BENCH / "PROFILING.md"))
        return 0
    if args.smoke:
        args.patients, args.runs = int(os.environ.get("BENCH_PATIENTS", "5")), 1
        if args.database_url == DEFAULT_DB:
            args.database_url = DEFAULT_DB + "_smoke"
    parts = set(filter(None, args.only.split(","))) or {
        "browser",
        "pouch",
        "rxdb",
        "raw",
        "offline",
        "server",
        "compression",
    }
    OUT.mkdir(parents=True, exist_ok=True)
    command = "make bench-smoke" if args.smoke else "make bench"
    if os.environ.get("BENCH_PATIENTS") and not args.smoke:
        command = f"BENCH_PATIENTS={args.patients} {command}"

    log(f"database {args.database_url}: {args.patients} demo patients")
    setup: dict[str, Any] = {"patients": args.patients}
    setup.update(B.snapshot_wheel())
    if not args.keep_db:
        setup.update(setup_database(args.database_url, args.patients, fresh=True))
    log(f"  setup {setup}")
    server: subprocess.Popen[bytes] | None
    server, url = start_server(args.database_url)
    pouch: subprocess.Popen[bytes] | None = None
    metrics: dict[str, Any] = {}
    spread: dict[str, Any] = {}
    detail: dict[str, Any] = {"notes": []}

    def put(key: str, values: Sequence[float], digits: int = 3) -> None:
        s = summary(values, digits)
        metrics[key], spread[key] = s["median"], s

    try:
        docs, _, _ = pull_scope(url)
        n = len(docs)
        for limit in (
            200,
            1000,
        ):  # the PWA asks for 200 per page (pyclient.sync default); the server allows 1000
            rates = []
            for _ in range(1 if args.smoke else max(5, args.runs)):
                got, secs, pages = pull_scope(url, limit=limit)
                rates.append(len(got) / secs)
            put(f"pull_http_per_s_limit{limit}", rates, 0)
            detail[f"pull_http_limit{limit}_pages"] = pages
            log(
                f"  pull over HTTP, {limit}/page: {statistics.median(rates):,.0f} resources/s ({pages} pages)"
            )
        metrics["initial_sync_resources"] = n
        (OUT / "docs.json").write_text(json.dumps(docs, separators=(",", ":")))
        log(f"data set: {n} resources in {USER}'s scope")
        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            br = B.Browser(pw)
            if "raw" in parts:
                log("raw IndexedDB floor")
                put("raw_idb_put_s", B.raw_idb_runs(br, url, runs=args.runs, n_docs=n))
            if "browser" in parts:
                log("initial sync through the PWA's Python (BrowserApp.sync_once)")
                a = B.app_runs(
                    br,
                    url,
                    runs=args.runs,
                    n_docs=n,
                    grow_to=5 * n if args.smoke else max(args.grow_to, n),
                    trace=args.trace,
                )
                put("initial_sync_s", a["sync_s"])
                put("sync_longtask_max_ms", a["longtask_max_ms"], 1)
                detail["sync_longtasks"] = a["longtasks"]
                detail["boot_s"] = a["boot_s"]
                c = a["crypto"]
                put("encrypt_decrypt_ms", c["ms_both"], 4)
                detail["crypto"] = c
                metrics["search_p95_ms_10k"] = a["search_small"]["p95_ms"]["median"]
                spread["search_p95_ms_10k"] = a["search_small"]["p95_ms"]
                metrics["search_p95_ms_50k"] = a["search_large"]["p95_ms"]["median"]
                spread["search_p95_ms_50k"] = a["search_large"]["p95_ms"]
                metrics["search_store_records_10k"] = a["search_small"]["store_records"]
                metrics["search_store_records_50k"] = a["search_large"]["store_records"]
                detail["search_small"], detail["search_large"], detail["grow"] = (
                    a["search_small"],
                    a["search_large"],
                    a["grow"],
                )
            if parts & {"pouch", "rxdb"}:
                pouch, pouch_url = start_pouchdb_server(docs)
            if "pouch" in parts:
                log("PouchDB replication from pouchdb-server: defaults, then tuned")
                times, adapter = B.pouch_runs(br, pouch_url, runs=args.runs, n_docs=n)
                put("pouchdb_initial_sync_s", times)
                detail["pouchdb_adapter"] = adapter
                times, adapter = B.pouch_runs(
                    br, pouch_url, runs=args.runs, n_docs=n, label="PouchDB tuned", **B.POUCH_TUNED
                )
                put("pouchdb_tuned_initial_sync_s", times)
                detail["pouchdb_tuned"] = {**B.POUCH_TUNED, "adapter_used": adapter}
            if "rxdb" in parts:
                log("RxDB (Dexie.js storage) replication over HTTP from pouchdb-server")
                B.rxdb_bundle()
                put(
                    "rxdb_initial_sync_s",
                    B.rxdb_runs(br, pouch_url, runs=args.runs, n_docs=n, batch_size=1000),
                )
                detail["rxdb"] = {
                    "storage": "dexie (IndexedDB)",
                    "replication": "couchdb (HTTP)",
                    "batch_size": 1000,
                }
            stop(pouch)
            pouch = None
            if "offline" in parts:
                log("offline reload of the real app")
                o = B.offline_runs(br, url, runs=args.runs)
                put("offline_reload_s", o["to_patient_list_s"])
                put("offline_reload_to_unlock_s", o["to_unlock_screen_s"])
            chromium = br.version
            br.browser.close()
        stop(server)
        server = None
        if "initial_sync_s" in metrics and "pouchdb_initial_sync_s" in metrics:
            metrics["sync_speedup_vs_pouchdb"] = round(
                metrics["pouchdb_initial_sync_s"] / metrics["initial_sync_s"], 2
            )
        for peer in ("pouchdb_tuned", "rxdb"):  # > 1: we are faster than that peer's best configuration
            if "initial_sync_s" in metrics and f"{peer}_initial_sync_s" in metrics:
                metrics[f"sync_speedup_vs_{peer}"] = round(
                    metrics[f"{peer}_initial_sync_s"] / metrics["initial_sync_s"], 2
                )
        if "initial_sync_s" in metrics and "raw_idb_put_s" in metrics:
            metrics["sync_vs_raw_idb_floor"] = round(metrics["initial_sync_s"] / metrics["raw_idb_put_s"], 2)
        if "compression" in parts:
            c = M.compression(docs)
            detail["compression"] = c
            metrics["compression_reduction"] = round(c["reduction_at_rest"], 4)
            metrics["compression_reduction_plain_zlib"] = round(c["reduction_plain_zlib"], 4)
        if "server" in parts:
            log("server: FHIR REST through uvicorn on PostgreSQL")
            f = M.fhir_rest(
                args.database_url, args.patients, max(5, args.runs) if not args.smoke else 1, args.smoke
            )
            put("fhir_create_per_s", f["create"]["runs_rps"], 1)
            put("fhir_search_per_s", f["search"]["runs_rps"], 1)
            detail["fhir_rest"] = {k: f[k] for k in ("create", "search")}
            log("server: sync pull/push on PostgreSQL")
            s = M.sync_bench(
                args.database_url,
                200 if args.smoke else max(n, 10_000),
                100 if args.smoke else 1000,
                1 if args.smoke else int(os.environ.get("BENCH_SYNC_REPEATS", "5")),
            )
            put("pull_resources_per_s", s["pull_per_s"], 0)
            put("push_1000_s", s["push_s"], 3)
            detail["sync_bench"] = s["raw"]
    finally:
        stop(pouch)
        stop(server)

    results = {
        "command": command,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "elapsed_s": round(time.perf_counter() - T0, 1),
        "runs": args.runs,
        "machine": R.machine_info(locals().get("chromium", "?")),
        "setup": setup,
        "metrics": metrics,
        "spread": spread,
        "goals": {k: g for k, _, _, g, _ in R.GOALS},
        "passed": {k: t(metrics) for k, _, _, _, t in R.GOALS if t is not None and k in metrics},
        "detail": detail,
    }
    R.merge_results(Path(args.results), results)
    R.merge_report(Path(args.report), R.write_report(results, BENCH / "PROFILING.md"))
    log(f"wrote {args.results} and {args.report}")
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
