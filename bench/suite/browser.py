"""The browser half of ``make bench``: headless Chromium via Playwright, a fresh context per run, and each
client measured in its own page (the PWA's Python, PouchDB, RxDB, the raw IndexedDB floor, the offline reload)."""

from __future__ import annotations

import json
import re
import shutil
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.suite.common import (
    BENCH,
    BROWSER_DIR,
    CHROMIUM,
    CHROMIUM_ARGS,
    OUT,
    PASSWORD,
    PIN,
    REPO,
    USER,
    log,
    p95,
    summary,
)

CONTENT_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".py": "text/x-python",
    ".json": "application/json",
}


WHEEL_SNAPSHOT = OUT / "wheels"


def snapshot_wheel() -> dict[str, Any]:
    """Copy the pyclient wheel the PWA serves (pwa/wheels, built by `make deps`) for this run: the bench pages
    load the copy, so a rebuild by someone else mid-run cannot mix two versions of the code in one result."""
    src = REPO / "pwa" / "wheels"
    name = json.loads((src / "wheels.json").read_text())["pyclient"]
    shutil.rmtree(WHEEL_SNAPSHOT, ignore_errors=True)
    WHEEL_SNAPSHOT.mkdir(parents=True)
    shutil.copy2(src / name, WHEEL_SNAPSHOT / name)
    (WHEEL_SNAPSHOT / "wheels.json").write_text(json.dumps({"pyclient": name}))
    built = (src / name).stat().st_mtime
    newest = max(p.stat().st_mtime for p in (REPO / "pyclient").rglob("*.py") if "build" not in p.parts)
    if newest > built:
        log("  WARNING: pwa/wheels is older than pyclient/ sources: run `make deps` (make bench does)")
    return {
        "wheel": name,
        "wheel_stale": newest > built,
        "wheel_built": datetime.fromtimestamp(built, UTC).strftime("%H:%M:%S UTC"),
    }


def _route_wheel(route: Any) -> None:
    name = route.request.url.split("/wheels/", 1)[1].split("?", 1)[0]
    path = WHEEL_SNAPSHOT / name
    if "/" in name or not path.is_file():
        route.continue_()  # no snapshot (an experiment script): the server's pwa/wheels
        return
    ctype = "application/json" if name.endswith(".json") else "application/zip"
    route.fulfill(
        status=200, body=path.read_bytes(), headers={"Content-Type": ctype, "Cache-Control": "no-store"}
    )


def _bench_file(name: str) -> Path | None:
    if name == "demo.py":
        return REPO / "omnicare" / "fhir" / "demo.py"
    if name in ("pouchdb.min.js", "pouchdb.indexeddb.min.js"):
        return BENCH / "node_modules" / "pouchdb" / "dist" / name
    if name == "rxdb.bundle.js":
        return OUT / name
    if name == "docs.json":
        return OUT / "docs.json"
    path = BROWSER_DIR / name
    return path if path.is_file() and path.parent == BROWSER_DIR else None


def _console(message: Any) -> None:
    """Page errors go to the log (a PouchDB checkpoint 404 and the favicon are expected, not errors)."""
    url = message.location.get("url", "")
    if message.type == "error" and not re.search(r"favicon|/_local/", url):
        log(f"  console: {message.text[:300]} ({url})")


def _route(route: Any) -> None:
    """Serve bench/browser/* at /__bench/* on whatever origin the page is on (same origin as what it measures).
    Routes are removed before anything is timed: interception adds latency to every request."""
    name = route.request.url.split("/__bench/", 1)[1].split("?", 1)[0]
    path = _bench_file(name)
    if path is None or not path.exists():
        route.fulfill(status=404, body=f"no bench file {name}")
        return
    route.fulfill(
        status=200,
        body=path.read_bytes(),
        headers={
            "Content-Type": CONTENT_TYPES.get(path.suffix, "application/octet-stream"),
            "Cache-Control": "no-store",
        },
    )


class Browser:
    def __init__(self, pw: Any) -> None:
        self.browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        self.version = self.browser.version

    def context(self, base_url: str, *, service_workers: str = "block") -> Any:
        ctx = self.browser.new_context(
            base_url=base_url, service_workers=service_workers, viewport={"width": 1180, "height": 820}
        )
        ctx.set_default_timeout(300_000)
        return ctx

    def bench_page(self, base_url: str, page_name: str) -> tuple[Any, Any]:
        ctx = self.context(base_url)
        ctx.route(re.compile(r".*/__bench/.*"), _route)
        ctx.route(re.compile(r".*/wheels/[^/]+$"), _route_wheel)
        page = ctx.new_page()
        page.on("console", _console)
        page.goto(f"{base_url}/__bench/{page_name}")
        return ctx, page


def one_sync(br: Browser, url: str, *, n_docs: int, trace: bool = False) -> tuple[Any, Any, dict[str, Any]]:
    """A fresh device: boot, sign in, set the PIN, then time the first sync. Returns (context, page, figures);
    the caller closes the context. The page also records every main-thread long task (> 50 ms,
    PerformanceObserver ``longtask``) while the sync runs: what a clinician tapping the UI would feel."""
    ctx = br.context(url)
    ctx.route(re.compile(r".*/__bench/.*"), _route)
    ctx.route(re.compile(r".*/wheels/[^/]+$"), _route_wheel)
    page = ctx.new_page()
    page.on("console", _console)
    page.goto(f"{url}/__bench/app.html")
    boot_s = page.evaluate("() => bench.boot()") / 1000
    if page.evaluate("() => bench.helper('ping')") != "pong":
        raise RuntimeError("bench_helpers.py did not load")
    ctx.unroute_all(behavior="wait")
    status = page.evaluate("([u, p]) => bench.login(u, p)", [USER, PASSWORD])
    if status != 200:
        raise RuntimeError(f"login as {USER} failed: HTTP {status}")
    page.evaluate("([pin, u]) => bench.call('setup_pin', {pin, username: u})", [PIN, USER])
    if trace:
        br.browser.start_tracing(page=page, path=str(OUT / "initial-sync-trace.json"), screenshots=False)
    r = page.evaluate("() => bench.timeCall('sync_once', {first: true})")
    if trace:
        br.browser.stop_tracing()
    count = page.evaluate("() => bench.count()")
    if count < n_docs:
        raise RuntimeError(f"initial sync stored {count} records, expected {n_docs}: {r['result']}")
    long_ms = [float(x) for x in r.get("longtasks", [])]
    return (
        ctx,
        page,
        {
            "sync_s": r["ms"] / 1000,
            "boot_s": boot_s,
            "records": count,
            "last_error": r["result"].get("lastError"),
            "longtask_max_ms": max(long_ms, default=0.0),
            "longtask_count": len(long_ms),
            "longtask_total_ms": sum(long_ms),
        },
    )


def app_runs(br: Browser, url: str, *, runs: int, n_docs: int, grow_to: int, trace: bool) -> dict[str, Any]:
    """Initial sync, each run from an empty device; on the last run also crypto and search at N and grow_to."""
    out: dict[str, Any] = {"sync_s": [], "boot_s": [], "records": [], "longtask_max_ms": [], "longtasks": []}
    for run in range(runs):
        last = run == runs - 1
        ctx, page, f = one_sync(br, url, n_docs=n_docs, trace=trace and last)
        try:
            out["sync_s"].append(f["sync_s"])
            out["boot_s"].append(f["boot_s"])
            out["records"].append(f["records"])
            out["longtask_max_ms"].append(f["longtask_max_ms"])
            out["longtasks"].append(
                {k: round(f[k], 1) for k in ("longtask_max_ms", "longtask_count", "longtask_total_ms")}
            )
            log(
                f"  initial sync run {run + 1}/{runs}: {f['sync_s']:.2f} s, {f['records']} records, "
                f"longest main-thread task {f['longtask_max_ms']:.0f} ms of {f['longtask_count']} "
                f"(lastError={f['last_error']!r})"
            )
            if last:
                out.update(extras(page, runs=runs, grow_to=grow_to))
        finally:
            ctx.close()
    return out


def extras(page: Any, *, runs: int, grow_to: int) -> dict[str, Any]:
    res: dict[str, Any] = {}
    c = page.evaluate("(r) => bench.helper('crypto', {n: 1000, rounds: r})", max(5, runs))
    res["crypto"] = c
    log(f"  seal+open: {statistics.median(c['ms_both']):.3f} ms/resource over {c['n']} records")
    res["search_small"] = search_rounds(page, runs)
    log(f"  search p95 at {res['search_small']['store_records']} records: {res['search_small']['p95_ms']}")
    g = page.evaluate("(t) => bench.helper('synth', {target: t})", grow_to)
    res["grow"] = g
    log(f"  grew the encrypted store to {g['records']} records in {g['seconds']:.1f} s")
    res["search_large"] = search_rounds(page, runs)
    log(f"  search p95 at {res['search_large']['store_records']} records: {res['search_large']['p95_ms']}")
    return res


def search_rounds(page: Any, runs: int) -> dict[str, Any]:
    # Let the browser settle first (IndexedDB's LevelDB compacts after bulk writes on the other core): a
    # clinician searches seconds after a sync, not within the same millisecond.
    time.sleep(3)
    q = page.evaluate("() => bench.helper('queries', {n: 100})")
    queries = q["queries"]
    page.evaluate("(qs) => bench.searchLatencies(qs)", queries[:10])  # warm-up (first-call imports, JIT)
    p95s, p50s, hits = [], [], []
    for _ in range(max(5, runs)):
        lat = page.evaluate("(qs) => bench.searchLatencies(qs)", queries)
        ms = [x[0] for x in lat]
        p95s.append(p95(ms))
        p50s.append(statistics.median(ms))
        hits = [x[1] for x in lat]
        slowest = sorted(zip(queries, ms, hits, strict=True), key=lambda x: -x[1])[:5]
    return {
        "slowest_last_round": [{"query": q_, "ms": round(m_, 2), "hits": h_} for q_, m_, h_ in slowest],
        "store_records": page.evaluate("() => bench.count()"),
        "patients": q["patients"],
        "queries": len(queries),
        "p95_ms": summary(p95s, 2),
        "p50_ms": summary(p50s, 2),
        "mean_hits": round(statistics.mean(hits), 1) if hits else 0,
        "examples": queries[:8],
    }


def raw_idb_runs(br: Browser, url: str, *, runs: int, n_docs: int) -> list[float]:
    times = []
    for run in range(runs):
        ctx, page = br.bench_page(url, "rawidb.html")
        try:
            page.evaluate("(u) => loadDocs(u)", "/__bench/docs.json")
            ctx.unroute_all(behavior="wait")
            r = page.evaluate("(n) => rawPut(n)", f"raw{run}")
            if r["count"] != n_docs:
                raise RuntimeError(f"raw IndexedDB holds {r['count']} docs, expected {n_docs}")
            times.append(r["ms"] / 1000)
            log(f"  raw IndexedDB put run {run + 1}/{runs}: {r['ms'] / 1000:.3f} s")
        finally:
            ctx.close()
    return times


POUCH_TUNED = {"opts": {"batch_size": 1000}, "adapter": "indexeddb"}


def pouch_runs(
    br: Browser,
    pouch_url: str,
    *,
    runs: int,
    n_docs: int,
    opts: dict[str, Any] | None = None,
    adapter: str | None = None,
    label: str = "PouchDB",
) -> tuple[list[float], str]:
    """PouchDB replication of the data set from pouchdb-server; ``opts``/``adapter`` None = PouchDB's defaults."""
    times, used = [], ""
    for run in range(runs):
        ctx, page = br.bench_page(pouch_url, "pouch.html")
        try:
            page.evaluate("() => typeof PouchDB")
            ctx.unroute_all(behavior="wait")
            r = page.evaluate(
                "([n, u, o, a]) => pouchReplicate(n, u, o, a)",
                [f"pouch{run}", pouch_url + "/omnicare", opts or {}, adapter],
            )
            if r["docs"] != n_docs:
                raise RuntimeError(f"{label} replicated {r['docs']} docs, expected {n_docs}")
            times.append(r["ms"] / 1000)
            used = r["adapter"]
            log(f"  {label} replication run {run + 1}/{runs}: {r['ms'] / 1000:.2f} s ({used})")
        finally:
            ctx.close()
    return times, used


def rxdb_bundle() -> Path:
    """bench/browser/rxdb-entry.js bundled for the browser by esbuild from bench/node_modules (npm; nothing is
    fetched at run time): RxDB core, its free Dexie.js (IndexedDB) storage and the CouchDB HTTP replication."""
    import subprocess  # noqa: PLC0415

    out = OUT / "rxdb.bundle.js"
    esbuild = BENCH / "node_modules" / ".bin" / "esbuild"
    if not esbuild.exists():
        raise RuntimeError("bench/node_modules has no esbuild: run `cd bench && npm install`")
    subprocess.run(  # noqa: S603 (fixed argv)
        [
            str(esbuild),
            str(BROWSER_DIR / "rxdb-entry.js"),
            "--bundle",
            "--format=iife",
            "--minify",
            "--platform=browser",
            '--define:process.env.NODE_ENV="production"',
            f"--outfile={out}",
        ],
        cwd=BENCH,
        check=True,
        capture_output=True,
        timeout=120,
    )
    return out


def rxdb_runs(br: Browser, pouch_url: str, *, runs: int, n_docs: int, batch_size: int) -> list[float]:
    """RxDB (Dexie.js storage over IndexedDB) replicating the data set over HTTP from the same pouchdb-server
    with its CouchDB replication (``_changes?include_docs``), pull only, one shot; timed to the last document."""
    times = []
    for run in range(runs):
        ctx, page = br.bench_page(pouch_url, "rxdb.html")
        try:
            page.wait_for_function("() => typeof window.rxdbReplicate === 'function'")
            ctx.unroute_all(behavior="wait")
            r = page.evaluate(
                "([n, u, b]) => rxdbReplicate(n, u, b)", [f"rx{run}", pouch_url + "/omnicare/", batch_size]
            )
            if r["docs"] != n_docs:
                raise RuntimeError(f"RxDB replicated {r['docs']} docs, expected {n_docs}")
            times.append(r["ms"] / 1000)
            log(f"  RxDB replication run {run + 1}/{runs}: {r['ms'] / 1000:.2f} s (batch {batch_size})")
        finally:
            ctx.close()
    return times


def offline_runs(br: Browser, url: str, *, runs: int) -> dict[str, Any]:
    """The real app: sign in, first sync, service worker cache; then network off and reload ``runs`` times."""
    ctx = br.context(url, service_workers="allow")
    try:
        page = ctx.new_page()
        page.goto("/")
        page.wait_for_selector("#signin")
        page.fill("#signin input[name=username]", USER)
        page.fill("#signin input[name=password]", PASSWORD)
        page.click("#signin button[type=submit]")
        page.wait_for_selector("#pin-setup")
        page.fill("#pin-setup input[name=pin]", PIN)
        page.fill("#pin-setup input[name=pin2]", PIN)
        page.click("#pin-setup button[type=submit]")
        page.wait_for_selector("#patients li", timeout=600_000)
        deadline = time.monotonic() + 180
        cached = False
        while time.monotonic() < deadline:
            cached = page.evaluate("""async () => {
                if (!navigator.serviceWorker.controller) return false;
                const names = (await caches.keys()).filter((n) => n.startsWith('omnicare-'));
                if (!names.length) return false;
                const c = await caches.open(names[0]);
                return !!(await c.match('/__version')) && !!(await c.match('/vendor/pyodide/pyodide.asm.wasm'));
            }""")
            if cached:
                break
            time.sleep(0.5)
        if not cached:
            raise RuntimeError("the service worker did not finish caching the app within 180 s")
        ctx.set_offline(True)
        to_unlock, to_list = [], []
        for run in range(runs):
            t0 = time.perf_counter()
            page.reload()
            page.wait_for_selector("#unlock input[name=pin]")
            t1 = time.perf_counter()
            page.fill("#unlock input[name=pin]", PIN)
            t2 = time.perf_counter()
            page.click("#unlock button[type=submit]")
            page.wait_for_selector("#patients li")
            t3 = time.perf_counter()
            to_unlock.append(t1 - t0)
            to_list.append((t1 - t0) + (t3 - t2))
            log(
                f"  offline reload run {run + 1}/{runs}: unlock screen {t1 - t0:.2f} s, patient list {to_list[-1]:.2f} s"
            )
        return {"to_unlock_screen_s": to_unlock, "to_patient_list_s": to_list}
    finally:
        ctx.close()
