"""Is the search p95 tail Python's cyclic GC? Sync, grow the store to 50,000, then alternate search rounds
with the collector as is and after ``gc.freeze()`` (moves every live object to the permanent generation, so
later collections do not traverse the app's long-lived state).

    .venv/bin/python bench/experiments/search_gc.py --database-url postgres://.../omnicare_bench
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import run  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--database-url", default=run.DEFAULT_DB)
    ap.add_argument("--grow-to", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    proc, url = run.start_server(args.database_url)
    out: dict[str, list[float]] = {"gc as is": [], "gc.freeze()": []}
    try:
        with sync_playwright() as pw:
            br = run.Browser(pw)
            ctx, page = br.bench_page(url, "app.html")
            page.evaluate("() => bench.boot()")
            ctx.unroute_all(behavior="wait")
            page.evaluate("([u, p]) => bench.login(u, p)", [run.USER, run.PASSWORD])
            page.evaluate("([pin, u]) => bench.call('setup_pin', {pin, username: u})", [run.PIN, run.USER])
            page.evaluate("() => bench.call('sync_once', {first: true})")
            page.evaluate("(t) => bench.helper('synth', {target: t})", args.grow_to)
            queries = page.evaluate("() => bench.helper('queries', {n: 100})")["queries"]
            page.evaluate("(qs) => bench.searchLatencies(qs)", queries[:10])
            for _ in range(args.rounds):
                for label, code in (
                    ("gc as is", "import gc; gc.unfreeze()"),
                    ("gc.freeze()", "import gc; gc.freeze()"),
                ):
                    page.evaluate("(c) => bench.helper('exec', {code: c})", code)
                    ms = [x[0] for x in page.evaluate("(qs) => bench.searchLatencies(qs)", queries)]
                    out[label].append(run.p95(ms))
                    print(
                        f"{label:<12} p95 {out[label][-1]:6.2f} ms  p50 {statistics.median(ms):5.2f} ms",
                        file=sys.stderr,
                    )
            ctx.close()
    finally:
        run.stop(proc)
    print(
        json.dumps({k: {"median_p95_ms": round(statistics.median(v), 2), "runs": v} for k, v in out.items()})
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
