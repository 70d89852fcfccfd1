"""Figures for the closing note / BENCHMARKS.md, measured in real Chromium (opt-in: OMNICARE_E2E_BENCH=1).

Prints one JSON line per figure; asserts only the goals the issue sets (search p95 < 10 ms is reported, and the
encrypt+decrypt goal < 0.5 ms per resource is asserted).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest

from .conftest import Server
from .helpers import sign_in_and_sync, unlock

pytestmark = pytest.mark.skipif(os.environ.get("OMNICARE_E2E_BENCH") != "1", reason="set OMNICARE_E2E_BENCH=1")


def _report(name: str, **values: Any) -> None:
    print(json.dumps({"figure": name, **values}))


def test_measure(new_context: Any, server: Server) -> None:
    ctx = new_context()
    t0 = time.monotonic()
    page = sign_in_and_sync(ctx, "dr.chen", path="/?bench=1")  # bench_* calls need the bench flag
    first_sync = time.monotonic() - t0
    records = page.evaluate("() => window.omnicare.makeIdb().countRecords()")
    _report("first_sync_incl_boot_and_pin", seconds=round(first_sync, 2), records=records)

    ctx.set_offline(True)
    for n in range(3):
        t = time.monotonic()
        page.reload()
        unlock(page)
        page.wait_for_selector("#patients li")
        _report("offline_reload_to_usable", run=n, seconds=round(time.monotonic() - t, 2),
                python_boot_ms=page.evaluate("() => Math.round(window.omnicare.bootMs)"))

    crypto = page.evaluate("() => window.omnicare.py.call('bench_crypto', {n: 500})")
    _report("seal_plus_open_per_resource", **crypto)
    assert crypto["msPerResource"] < 0.5

    # Specific queries (what a clinician types to find one patient) and broad ones (many candidates to decrypt).
    specific = ["BENCH-000123", "BENCH-004000", "1955-03-04", "kalomi", "Stodenva", "mikaner"]
    broad = ["kal", "Mina", "1980", "ri"]
    filled = 0
    for target in (10_000, 50_000):
        fill = page.evaluate("a => window.omnicare.py.call('bench_fill', {resources: a[0], start: a[1]})",
                             [target - filled, filled])
        filled = target
        for kind, queries in (("specific", specific), ("broad", broad)):
            stats = page.evaluate("q => window.omnicare.py.call('bench_search', {queries: q, rounds: 5})", queries)
            _report("search_latency", queries=kind, resources=fill["total"], fill_seconds=fill["seconds"], **stats)
