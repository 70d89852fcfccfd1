"""Where the tab's memory goes during a first sync (issue 13: is peak memory flat in the scope size?).

    .venv/bin/python bench/experiments/first_sync_memory_probe.py --resources 20000 [--tracemalloc]

The scope and the sign-in of ``bench/first_sync_budget_bench.py``; every second it samples the JS heap
(CDP), the Pyodide WebAssembly memory and, inside Pyodide, the sizes of BrowserApp's long-lived maps (the
manifest cache, the row -> patient-token index, the outbox machine). With ``--tracemalloc`` Python's own
allocations are traced from boot (slower, and the traces themselves take wasm memory) and the top
allocation sites still alive at the end are printed. Diagnostic only: writes nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(REPO))

from bench.first_sync_budget_bench import BUILD, LAUNCH_ARGS, _sign_in  # noqa: E402
from tests.e2e.conftest import CHROMIUM, _ensure_assets, server_start, server_stop  # noqa: E402

FIND = """
import gc, builtins as __main__
if getattr(__main__, "_probe_app", None) is None:
    __main__._probe_app = next((o for o in gc.get_objects() if type(o).__name__ == "BrowserApp"), None)
    if {trace}:
        import tracemalloc; tracemalloc.start(1)
__main__._probe_app is not None
"""

SIZES = """
import json, sys, gc, builtins as __main__
a = getattr(__main__, "_probe_app", None)
if a is None:  # the sign-in started a new runtime, or the heap was frozen (gc.freeze hides it from get_objects)
    gc.unfreeze(); a = __main__._probe_app = next((o for o in gc.get_objects() if type(o).__name__ == "BrowserApp"), None); gc.freeze()
    if {trace}:
        import tracemalloc; tracemalloc.start(1)
mc = a._mcache  # a dict before the bounded cache (pyclient.integrity_cache), a ManifestCache after
rows = mc.rows if hasattr(mc, "rows") else sum(len(m.entries) for m, _ in mc.values() if m is not None)
out = {"mwhere": len(getattr(a, "_mwhere", None) or {}), "seen": getattr(getattr(a, "_seen", None), "added", None),
       "mcache": len(mc), "mcache_entries": rows,
       "outbox": len(a.machine.entries) if a.machine else 0, "quarantine": len(a._quarantine)}
try:
    import tracemalloc
    if tracemalloc.is_tracing():
        cur, peak = tracemalloc.get_traced_memory(); out["py_mb"] = round(cur / 1e6, 1); out["py_peak_mb"] = round(peak / 1e6, 1)
except Exception:
    pass
json.dumps(out)
"""

TOP = """
import tracemalloc, json
snap = tracemalloc.take_snapshot()
json.dumps([(str(s.traceback[0]), round(s.size / 1e6, 2), s.count) for s in snap.statistics("lineno")[:25]])
"""


def main() -> int:
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resources", type=int, default=20_000)
    ap.add_argument("--tracemalloc", action="store_true")
    ap.add_argument("--budget-mb", type=int, default=500)
    ap.add_argument("--per-patient", type=int, default=20, help="Observations per patient")
    ap.add_argument("--list", action="store_true", help="then open the patient list and say what it shows")
    args = ap.parse_args()
    _ensure_assets()
    with tempfile.TemporaryDirectory(prefix="fs-probe-") as tmp:
        srv = server_start(Path(tmp), {"OMNICARE_BUDGET_WEB_BYTES": str(args.budget_mb * 1_000_000)})
        try:
            built = json.loads(srv.manage("shell", "-c", BUILD.format(
                resources=args.resources, pinned=20, per_patient=args.per_patient)).strip().splitlines()[-1])
            print(json.dumps({"repo": str(REPO), "scope": built}), flush=True)
            with sync_playwright() as pw:
                profile = tempfile.mkdtemp(prefix="fs-probe-profile-")
                ctx = pw.chromium.launch_persistent_context(
                    profile, executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS, base_url=srv.url,
                    viewport={"width": 1024, "height": 768}, service_workers="allow")
                try:
                    _probe(ctx, args, built)
                finally:
                    ctx.close()
                    shutil.rmtree(profile, ignore_errors=True)
        finally:
            server_stop(srv)
    return 0


def _py(page: Any, code: str) -> Any:
    return page.evaluate("(c) => window.omnicare.py.pyodide.runPython(c)", code)


def _probe(ctx: Any, args: Any, built: dict[str, Any]) -> None:
    page = ctx.new_page()
    cdp = ctx.new_cdp_session(page)
    cdp.send("Performance.enable")
    page.on("console", lambda m: print("console:", m.type, m.text[:3000]) if m.type in ("error", "warning") and "Failed to load resource" not in m.text else None)
    page.goto("/")
    page.wait_for_function("() => !!window.omnicare?.py?.pyodide", timeout=180_000)
    found = _py(page, FIND.format(trace=bool(args.tracemalloc)))
    print(json.dumps({"app_found": found}), flush=True)
    t0 = _sign_in(page)
    peak = 0.0
    last = 0.0
    while time.monotonic() - t0 < 3600:
        m = {x["name"]: x["value"] for x in cdp.send("Performance.getMetrics")["metrics"]}
        wasm = page.evaluate("() => window.omnicare?.py?.pyodide?._module?.HEAP8?.length || 0")
        js = float(m.get("JSHeapUsedSize", 0))
        peak = max(peak, (js + wasm) / 1e6)
        done = page.evaluate("""async () => {
            const o = window.omnicare; if (!o.unlocked || o.firstSync) return null;
            const db = await new Promise((ok, ko) => { const r = indexedDB.open('omnicare');
                r.onsuccess = () => ok(r.result); r.onerror = () => ko(r.error); });
            const n = await new Promise((ok) => { const r = db.transaction('records').objectStore('records')
                .index('t').count('Patient'); r.onsuccess = () => ok(r.result); });
            db.close(); const s = await o.py.call('status'); return { n, syncing: !!s.syncing };
        }""")
        if time.monotonic() - last >= 2:
            last = time.monotonic()
            sizes = json.loads(_py(page, SIZES.replace('{trace}', str(bool(args.tracemalloc)))))
            print(json.dumps({"t": round(last - t0, 1), "js_mb": round(js / 1e6, 1), "wasm_mb": round(wasm / 1e6, 1),
                              "peak_mb": round(peak, 1), "held": done, **sizes}), flush=True)
        if done and done["n"] >= built["patients"] and not done["syncing"]:
            break
        time.sleep(0.5)
    print(json.dumps({"end_peak_mb": round(peak, 1), "elapsed_s": round(time.monotonic() - t0, 1)}), flush=True)
    if args.list:
        # The patient list, asked for again and again while the round after the first sync runs (the bench's
        # old end-of-run call once answered "Something went wrong" here, at 9,090 patients).
        for k in range(8):
            r = page.evaluate("""async () => { try { const p = await window.omnicare.py.call('patients');
                return { n: p.length }; } catch (e) { return { error: String(e.message), kind: e.kind }; } }""")
            print(json.dumps({"patients_call": k, **r}), flush=True)
            time.sleep(3)
        t1 = time.monotonic()
        page.goto("/#/patients")
        page.wait_for_selector("#patients, .banner", timeout=600_000)
        page.wait_for_timeout(1000)
        print(json.dumps({"list_s": round(time.monotonic() - t1, 1),
                          "shows": page.locator("#main").inner_text()[:300],
                          "banner": page.locator(".banner").all_inner_texts()[:3]}), flush=True)
    if args.tracemalloc:
        for row in json.loads(_py(page, TOP)):
            print(row)


if __name__ == "__main__":
    raise SystemExit(main())
