"""Before/after for the initial-sync findings, measured without touching the app's files.

    .venv/bin/python bench/experiments/sync_variants.py --database-url postgres://... [--runs 2] [variants...]

Variants (combinable with '+'): ``base`` (as shipped), ``pull1000`` (the sync machine asks for 1,000 per page
instead of 200), ``idbpipe`` (idb.js apply() issues puts without awaiting each one's success event:
a patched copy of the shipped /app/idb.js, see
``run.pipelined_idb_js``, is served in its place), ``refmemo`` (BrowserApp._ref_token
memoised per patient). Runs alternate between variants so machine load hits all alike.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import run  # noqa: E402

REFMEMO = """
import functools, bench_helpers
app = bench_helpers.APP
app._ref_token = functools.lru_cache(maxsize=None)(app._ref_token)
"""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--database-url", default=run.DEFAULT_DB)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument(
        "variants", nargs="*", default=["base", "pull1000", "idbpipe", "pull1000+idbpipe+refmemo"]
    )
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    proc, url = run.start_server(args.database_url)
    times: dict[str, list[float]] = {v: [] for v in args.variants}
    try:
        with sync_playwright() as pw:
            br = run.Browser(pw)
            for _ in range(args.runs):
                for variant in args.variants:
                    flags = set(variant.split("+"))
                    ctx = br.context(url)
                    ctx.route(re.compile(r".*/__bench/.*"), run._route)
                    patched = run.pipelined_idb_js() if "idbpipe" in flags else None
                    if patched is not None:
                        ctx.route(
                            re.compile(r".*/app/idb\.js$"),
                            lambda r, body=patched: r.fulfill(
                                status=200, body=body, headers={"Content-Type": "text/javascript"}
                            ),
                        )
                    page = ctx.new_page()
                    page.goto(f"{url}/__bench/app.html")
                    page.evaluate("() => bench.boot()")
                    ctx.unroute_all(behavior="wait")
                    page.evaluate("([u, p]) => bench.login(u, p)", [run.USER, run.PASSWORD])
                    page.evaluate(
                        "([pin, u]) => bench.call('setup_pin', {pin, username: u})", [run.PIN, run.USER]
                    )
                    if "pull1000" in flags:
                        page.evaluate("() => bench.helper('set_pull_limit', {limit: 1000})")
                    if "refmemo" in flags:
                        page.evaluate("(c) => bench.helper('exec', {code: c})", REFMEMO)
                    r = page.evaluate("() => bench.timeCall('sync_once', {first: true})")
                    n = page.evaluate("() => bench.count()")
                    times[variant].append(r["ms"] / 1000)
                    print(f"{variant:<28} {r['ms'] / 1000:6.2f} s  {n} records", file=sys.stderr, flush=True)
                    ctx.close()
    finally:
        run.stop(proc)
    out = {
        v: {"median_s": round(statistics.median(t), 2), "runs": [round(x, 2) for x in t]}
        for v, t in times.items()
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
