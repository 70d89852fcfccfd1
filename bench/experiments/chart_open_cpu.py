"""Chart-open cost, store v1 (the previous client) vs store v2 (this one), in main-thread CPU time.

    .venv/bin/python -m pytest -q -s bench/experiments/chart_open_cpu.py -p tests.e2e.conftest

Not a test (nothing is asserted about speed): it reuses the e2e fixtures (own server, Chromium). Two devices
sign in and sync the demo data, one running the v1 wheel built from git (``STORE_V1_COMMIT``), one this
checkout's. Both lock and unlock (cold caches), then open every chart ``ROUNDS`` times, the devices
alternating per round so machine load hits both alike; each round locks and unlocks first. Per chart open: the page's main-thread task time from
the DevTools ``Performance.getMetrics`` ``TaskDuration`` (CPU on the thread running Python and the IndexedDB/
WebCrypto glue; WebCrypto's own work runs off-thread in both), and wall time. The first pass after the unlock is
cold (v2 decrypts each manifest once), the second warm (v2 reuses the manifest when its row MAC is unchanged).

Measured 2026-12-02 00:20 UTC, load average 18 on 2 shared cores, dr.adams' 8 demo patients, 8 rounds
(64 opens per cell), medians: main-thread CPU per chart open v1 68.2 ms cold / 66.5 ms warm, v2 66.4 ms
cold / 71.4 ms warm (wall 116/124 vs 120/120 ms): no difference the load lets us see. By construction v2
does one more IndexedDB get (the manifest row, by key, instead of the token index lookup) and, cold, one
more decrypt crossing for one ~1 KB manifest; v1 decrypted the manifest inside the records' batch.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from tests.e2e.conftest import PIN, REPO, Server
from tests.e2e.helpers import sign_in_and_sync, wait_status
from tests.e2e.test_store_upgrade import _v1_wheel

ROUNDS = int(os.environ.get("CHART_ROUNDS", "6"))


def _task_s(cdp: Any) -> float:
    return next(m["value"] for m in cdp.send("Performance.getMetrics")["metrics"] if m["name"] == "TaskDuration")


def _open_all(page: Any, cdp: Any, ids: list[str]) -> tuple[list[float], list[float]]:
    cpu, wall = [], []
    for pid in ids:
        t0, w0 = _task_s(cdp), time.perf_counter()
        page.evaluate("(p) => window.omnicare.py.call('chart', {patient_id: p})", pid)
        wall.append((time.perf_counter() - w0) * 1000)
        cpu.append((_task_s(cdp) - t0) * 1000)
    return cpu, wall


def test_measure_chart_open(new_context: Any, server: Server, tmp_path: Path) -> None:
    old = _v1_wheel(tmp_path)
    current = json.loads((REPO / "pwa" / "wheels" / "wheels.json").read_text())["pyclient"]
    devices: dict[str, tuple[Any, Any]] = {}
    for name in ("v1", "v2"):
        ctx = new_context()
        if name == "v1":
            ctx.route(f"**/wheels/{current}", lambda route: route.fulfill(
                status=200, body=old.read_bytes(), headers={"Content-Type": "application/zip"}))
        page = sign_in_and_sync(ctx, "dr.adams")
        wait_status(page, "d.synced === 'true'")
        page.evaluate("() => window.omnicare.runner && (window.omnicare.runner.active = false)")
        cdp = ctx.new_cdp_session(page)
        cdp.send("Performance.enable")
        devices[name] = (page, cdp)
    ids = [p["id"] for p in devices["v2"][0].evaluate("() => window.omnicare.py.call('patients')")]
    out: dict[str, dict[str, list[float]]] = {n: {"cold_cpu": [], "warm_cpu": [], "cold_wall": [], "warm_wall": []}
                                              for n in devices}
    for r in range(ROUNDS):
        for name in (("v1", "v2") if r % 2 == 0 else ("v2", "v1")):
            page, cdp = devices[name]
            # Cold: right after an unlock every cache is empty (v2 decrypts each manifest once); warm: again.
            page.evaluate("() => window.omnicare.py.call('lock')")
            page.evaluate("(pin) => window.omnicare.py.call('unlock', {pin})", PIN)
            page.evaluate("() => window.omnicare.py.call('audit_flush')")
            page.wait_for_timeout(500)
            for kind in ("cold", "warm"):
                cpu, wall = _open_all(page, cdp, ids)
                out[name][f"{kind}_cpu"] += cpu
                out[name][f"{kind}_wall"] += wall
    summary = {n: {k: round(statistics.median(v), 2) for k, v in f.items() if v} for n, f in out.items()}
    summary["charts"] = {"patients": len(ids), "rounds": ROUNDS}  # type: ignore[assignment]
    summary["loadavg"] = os.getloadavg()  # type: ignore[assignment]
    print("\nCHART-OPEN", json.dumps(summary))
