"""One measurement of ``pyclient.cds.check``, the same code on CPython, in Pyodide under Node and in Chromium.

``probe(chart_json, draft_json, rounds, batch)`` -> JSON text: per-call wall times (``time.perf_counter``),
the batch mean, the Python function calls one ``check`` makes (``sys.setprofile`` count: deterministic, the
same on every machine and at any load), the garbage collections during the timed calls, and the knowledge
base load + index time, the warm-up the device runs when it loads a base, and the first check after it. Warm-up is by time (at least 1 s and 200 calls) so a WebAssembly runtime has
tiered up its hot code before the timed calls: a device checks orders long after Pyodide started.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from typing import Any

NOW = "2026-12-01T10:00:00Z"


def probe(chart_json: str, draft_json: str, rounds: int, batch: int, warmup_s: float = 1.0) -> str:
    t0 = time.perf_counter()
    from pyclient.cds import Context, check, default_kb, warm

    kb = default_kb()
    load_ms = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    warm(kb)  # what the device does when it loads a base (chart opening), before any order
    warm_ms = (time.perf_counter() - t0) * 1000
    chart, draft = json.loads(chart_json), json.loads(draft_json)
    first_t = time.perf_counter()
    check([draft], Context(chart, now=NOW), kb=kb)
    first_ms = (time.perf_counter() - first_t) * 1000
    warm_end, warm = time.perf_counter() + warmup_s, 0
    while warm < 200 or time.perf_counter() < warm_end:
        check([draft], Context(chart, now=NOW), kb=kb)
        warm += 1
    calls = 0

    def count(frame: Any, event: str, arg: Any) -> None:
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    sys.setprofile(count)
    check([draft], Context(chart, now=NOW), kb=kb)
    sys.setprofile(None)
    gc0 = [s["collections"] for s in gc.get_stats()]
    per: list[float] = []
    cards: list[Any] = []
    for _ in range(rounds):
        t = time.perf_counter()
        cards = check([draft], Context(chart, now=NOW), kb=kb)
        per.append((time.perf_counter() - t) * 1000)
    gcs = [s["collections"] - a for s, a in zip(gc.get_stats(), gc0, strict=True)]
    t = time.perf_counter()
    for _ in range(batch):
        check([draft], Context(chart, now=NOW), kb=kb)
    mean = (time.perf_counter() - t) * 1000 / batch
    return json.dumps({"per": per, "mean_batch": mean, "load_ms": load_ms, "warm_ms": warm_ms, "first_ms": first_ms,
                       "warmup_calls": warm, "python_calls_per_check": calls, "gc_collections": gcs,
                       "cards": [c.rule_id for c in cards], "python": sys.version.split()[0]})
