"""Start-up (issue 18 item 12): page open to a usable sign-in form, and to the Python runtime ready, cold.

    .venv/bin/python bench/startup_bench.py                 # 5 cold runs
    BENCH_RUNS=9 .venv/bin/python bench/startup_bench.py

Serves the app the way the e2e suite does (uvicorn on a fresh seeded SQLite file; `make node-deps wheel` first),
then opens it in Debian Chromium (Playwright) in a new browser context per run: no IndexedDB, no service worker,
no HTTP cache — a tablet opening OmniCare for the first time. Both figures are the page's own
``performance.now()`` (ms since navigation start) taken by the app: ``signinAt`` when the sign-in form is drawn
and its username field focused (auth.js), ``runtimeReadyAt`` when Pyodide, the pyclient wheel and the controller
are up (main.js). Medians are merged into ``bench/results.json`` ``metrics`` as ``app_signin_form_s`` and
``app_runtime_ready_s`` (other keys kept); the section of BENCHMARKS.md below is rewritten.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("OMNICARE_E2E_PATIENTS", "4")  # the sign-in screen needs no patients; seeding is not timed

from bench.sections import section_write  # noqa: E402
from tests.e2e.conftest import CHROMIUM, _ensure_assets, server_start, server_stop  # noqa: E402

SECTION = "## Start-up: sign-in form and runtime (issue 18)"
RESULTS = REPO / "bench" / "results.json"


def one(browser: Any, url: str) -> tuple[float, float]:
    """(sign-in form usable s, runtime ready s) for one cold page open."""
    ctx = browser.new_context(base_url=url, viewport={"width": 1024, "height": 768}, service_workers="allow")
    try:
        page = ctx.new_page()
        page.goto("/")
        page.wait_for_function("() => window.omnicare && window.omnicare.signinAt && window.omnicare.runtimeReadyAt",
                               timeout=180_000, polling=100)
        t = page.evaluate("() => [window.omnicare.signinAt, window.omnicare.runtimeReadyAt]")
        return round(t[0] / 1000, 3), round(t[1] / 1000, 3)
    finally:
        ctx.close()


def loadavg() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> int:
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    runs = int(os.environ.get("BENCH_RUNS", "5"))
    _ensure_assets()
    load_before = loadavg()
    signin: list[float] = []
    ready: list[float] = []
    with tempfile.TemporaryDirectory(prefix="startup-bench-") as tmp:
        srv = server_start(Path(tmp))
        try:
            with sync_playwright() as p:
                br = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
                    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run"])
                try:
                    one(br, srv.url)  # warm the server's own caches (WhiteNoise, Python imports); not counted
                    for _ in range(runs):
                        s, r = one(br, srv.url)
                        signin.append(s)
                        ready.append(r)
                        print(json.dumps({"signin_form_s": s, "runtime_ready_s": r}), flush=True)
                finally:
                    br.close()
        finally:
            server_stop(srv)
    metrics = {"app_signin_form_s": round(statistics.median(signin), 3),
               "app_runtime_ready_s": round(statistics.median(ready), 3)}
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results.setdefault("metrics", {}).update(metrics)
    results.setdefault("detail", {})["startup"] = {
        "runs": runs, "signin_form_s": signin, "runtime_ready_s": ready, "loadavg": f"{load_before} / {loadavg()}",
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    report = REPO / "BENCHMARKS.md"
    body = (f"{SECTION}\n\n`.venv/bin/python bench/startup_bench.py` (BENCH_RUNS={runs} cold opens: a new Chromium "
            f"context each, no IndexedDB, service worker or HTTP cache; local uvicorn; load {load_before}). Times are "
            f"the page's `performance.now()` from navigation start. The runtime (Pyodide + the pyclient wheel) now "
            f"loads in parallel with the sign-in form instead of before it; a sign-in submitted first waits for it "
            f"(the button says \"Starting…\"). Raw values in `bench/results.json` detail.startup.\n\n"
            f"| | median | min | max |\n|---|---|---|---|\n"
            f"| sign-in form usable (`app_signin_form_s`) | **{metrics['app_signin_form_s']:.2f} s** | "
            f"{min(signin):.2f} s | {max(signin):.2f} s |\n"
            f"| runtime ready (`app_runtime_ready_s`) | **{metrics['app_runtime_ready_s']:.2f} s** | "
            f"{min(ready):.2f} s | {max(ready):.2f} s |\n")
    section_write(report, SECTION, body)
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
