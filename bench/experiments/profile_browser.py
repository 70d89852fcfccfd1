"""Python-side profiles inside Pyodide in Chromium (cProfile): one first sync, then the search query mix.

    .venv/bin/python bench/experiments/profile_browser.py --database-url postgres://... [--sort tottime]

cProfile only sees Python CPU: time the coroutine spends awaiting JS (fetch, IndexedDB, WebCrypto) is not
attributed, so "wall - python" is the JS/network share. For the JS side use ``bench/run.py --trace``
(a Chrome trace of the last initial sync in bench/out/initial-sync-trace.json).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import run  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--database-url", default=run.DEFAULT_DB)
    ap.add_argument("--sort", default="tottime")
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    proc, url = run.start_server(args.database_url)
    try:
        with sync_playwright() as pw:
            br = run.Browser(pw)
            ctx, page = br.bench_page(url, "app.html")
            page.evaluate("() => bench.boot()")
            ctx.unroute_all(behavior="wait")
            page.evaluate("([u, p]) => bench.login(u, p)", [run.USER, run.PASSWORD])
            page.evaluate("([pin, u]) => bench.call('setup_pin', {pin, username: u})", [run.PIN, run.USER])
            r = page.evaluate("(a) => bench.helper('profile_sync', a)", {"sort": args.sort, "top": args.top})
            print(
                f"== first sync: wall {r['wall_s']:.2f} s, Python CPU {r['python_tottime_s']:.2f} s\n{r['report']}"
            )
            q = page.evaluate("() => bench.helper('queries', {n: 100})")["queries"]
            s = page.evaluate(
                "(a) => bench.helper('profile_search', a)",
                {"queries": q, "rounds": 3, "sort": args.sort, "top": args.top},
            )
            print(
                f"== search: {s['searches']} searches, wall {s['wall_ms_total']:.0f} ms, Python CPU "
                f"{s['python_ms_total']:.0f} ms, p50 {s['p50']:.2f} ms, p95 {s['p95']:.2f} ms\n{s['report']}"
            )
            ctx.close()
    finally:
        run.stop(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
