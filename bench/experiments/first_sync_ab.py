"""First sync only, A/B across worktrees in alternating runs (issue 16 item 6): each tree's own server, PWA
files and pyclient wheel, the same PostgreSQL database (seeded once, e.g. by ``bench/run.py --keep-db``).

    .venv/bin/python bench/experiments/first_sync_ab.py --db postgres://.../omnicare_bench_x \
        --tree /work/wt-base --tree . --runs 3 [--profile]

Per run: sync seconds, longest main-thread long task, the integrity share, the load average. ``--profile``
adds a cProfile of the last run per tree (Python CPU only; wall - Python = waiting on JS/network).
Each tree is driven in a subprocess that imports that tree's ``bench.suite`` (so its REPO is that tree).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve()


def child(tree: Path, db: str, runs: int, profile: bool) -> list[dict[str, object]]:
    sys.path.insert(0, str(tree))
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    from bench import run  # noqa: PLC0415
    from bench.suite import browser as B  # noqa: PLC0415
    from bench.suite.common import loadavg  # noqa: PLC0415

    B.snapshot_wheel()
    proc, url = run.start_server(db)
    SERVER_PID[0] = proc.pid
    out: list[dict[str, object]] = []
    try:
        with sync_playwright() as pw:
            br = B.Browser(pw)
            for i in range(runs):
                load = loadavg()
                if profile and i == runs - 1:
                    ctx, page, f = _profiled(br, url, B, run)
                else:
                    ctx, page, f = _sync(br, url, B)
                f["integrity_s"] = page.evaluate("() => bench.helper('integrity_time', {})")
                f["load"] = load
                ctx.close()
                out.append(f)
            br.browser.close()
    finally:
        run.stop(proc)
    return out


ATTRIB = """
import json as _json, time as _time
_T = {}
def _wrap(obj, name, label):
    f = getattr(obj, name)
    async def w(*a, **k):
        t0 = _time.perf_counter()
        try:
            return await f(*a, **k)
        finally:
            _T[label] = _T.get(label, 0.0) + _time.perf_counter() - t0
    setattr(obj, name, w)
for _n in ("apply", "row_meta", "get_records"):
    _wrap(APP.store, _n, "idb_" + _n)
_wrap(APP, "_pull_fetch", "fetch (overlapped)")
_wrap(APP._cipher, "gcm_seal", "webcrypto_seal")
async def attrib(args_json):
    return _json.dumps({k: round(v, 3) for k, v in _T.items()})
"""


def _cpu_s(root: int) -> dict[int, float]:
    """CPU seconds (user + system) of every live descendant of ``root``: on a machine shared by many, wall
    time measures the neighbours; the CPU our processes burn for a sync does not (much)."""
    import os  # noqa: PLC0415

    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            f = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(d)] = int(f[1])
        cpu[int(d)] = (int(f[11]) + int(f[12])) / tick
    out = {}
    for pid in cpu:
        p = pid
        while p > 1:
            if p == root:
                out[pid] = cpu[pid]
                break
            p = parent.get(p, 0)
    return out


SERVER_PID = [0]


def _cpu_delta(before: dict[int, float], after: dict[int, float]) -> tuple[float, float]:
    """(all our processes, the server alone) CPU seconds between two snapshots."""
    total = sum(v - before.get(pid, 0.0) for pid, v in after.items())
    server = after.get(SERVER_PID[0], 0.0) - before.get(SERVER_PID[0], 0.0)
    return round(total, 2), round(server, 2)


def _sync(br, url, B):  # type: ignore[no-untyped-def]
    """B.one_sync with await-time attribution (IndexedDB, WebCrypto, fetch) patched in before the timed call."""
    import re  # noqa: PLC0415

    from bench.suite.common import PASSWORD, PIN, USER  # noqa: PLC0415

    ctx = br.context(url)
    ctx.route(re.compile(r".*/__bench/.*"), B._route)
    ctx.route(re.compile(r".*/wheels/[^/]+$"), B._route_wheel)
    page = ctx.new_page()
    page.goto(f"{url}/__bench/app.html")
    page.evaluate("() => bench.boot()")
    ctx.unroute_all(behavior="wait")
    page.evaluate("([u, p]) => bench.login(u, p)", [USER, PASSWORD])
    page.evaluate("([pin, u]) => bench.call('setup_pin', {pin, username: u})", [PIN, USER])
    page.evaluate("(c) => bench.helper('exec', {code: c})", ATTRIB)
    import os  # noqa: PLC0415

    c0 = _cpu_s(os.getpid())
    r = page.evaluate("() => bench.timeCall('sync_once', {first: true})")
    cpu_all, cpu_server = _cpu_delta(c0, _cpu_s(os.getpid()))
    count = page.evaluate("() => bench.count()")
    att = page.evaluate("() => bench.helper('attrib', {})")
    return ctx, page, {"sync_s": r["ms"] / 1000, "records": count, "attrib": att,
                       "cpu_client_s": round(cpu_all - cpu_server, 2), "cpu_server_s": cpu_server,
                       "longtask_max_ms": max((float(x) for x in r.get("longtasks", [])), default=0.0),
                       "longtask_count": len(r.get("longtasks", []))}


def _profiled(br, url, B, run):  # type: ignore[no-untyped-def]
    ctx = br.context(url)
    import re  # noqa: PLC0415

    ctx.route(re.compile(r".*/__bench/.*"), B._route)
    ctx.route(re.compile(r".*/wheels/[^/]+$"), B._route_wheel)
    page = ctx.new_page()
    page.goto(f"{url}/__bench/app.html")
    page.evaluate("() => bench.boot()")
    ctx.unroute_all(behavior="wait")
    from bench.suite.common import PASSWORD, PIN, USER  # noqa: PLC0415

    page.evaluate("([u, p]) => bench.login(u, p)", [USER, PASSWORD])
    page.evaluate("([pin, u]) => bench.call('setup_pin', {pin, username: u})", [PIN, USER])
    r = page.evaluate("(a) => bench.helper('profile_sync', a)", {"sort": "tottime", "top": 35})
    print(f"== profile: wall {r['wall_s']:.2f} s, Python CPU {r['python_tottime_s']:.2f} s\n{r['report']}",
          file=sys.stderr)
    return ctx, page, {"sync_s": r["wall_s"], "longtask_max_ms": -1, "profiled": True}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True)
    ap.add_argument("--tree", action="append", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--child", action="store_true")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.tree[0]).resolve(), args.db, args.runs, args.profile)))
        return 0
    results: dict[str, list[dict[str, object]]] = {t: [] for t in args.tree}
    for i in range(args.runs):
        for t in args.tree:
            last = args.profile and i == args.runs - 1
            p = subprocess.run(  # noqa: S603
                [sys.executable, str(HERE), "--child", "--db", args.db, "--tree", t, "--runs", "1",
                 *(["--profile"] if last else [])],
                capture_output=True, text=True, check=False, timeout=900)
            if p.returncode:
                print(p.stderr[-4000:], file=sys.stderr)
                return 1
            if last:
                print(f"### {t}\n" + "\n".join(ln for ln in p.stderr.splitlines() if not ln.startswith("[bench")),
                      file=sys.stderr)
            (f,) = json.loads(p.stdout.splitlines()[-1])
            results[t].append(f)
            print(f"{t}: {f['sync_s']:.2f} s, longest task {f['longtask_max_ms']:.0f} ms, "
                  f"CPU client {f.get('cpu_client_s')} s server {f.get('cpu_server_s')} s, "
                  f"integrity {float(f['integrity_s']):.2f} s, {f.get('records')} records, {f.get('attrib')}, "
                  f"load {f['load']}", flush=True)  # type: ignore[arg-type]
    for t, fs in results.items():
        print(f"{t}: median {statistics.median(float(f['sync_s']) for f in fs):.2f} s "  # type: ignore[arg-type]
              f"of {[round(float(f['sync_s']), 2) for f in fs]}, client CPU median "  # type: ignore[arg-type]
              f"{statistics.median(float(f.get('cpu_client_s', 0)) for f in fs):.2f} s "  # type: ignore[arg-type]
              f"of {[f.get('cpu_client_s') for f in fs]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
