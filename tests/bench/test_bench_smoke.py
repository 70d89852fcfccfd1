"""`make bench` in miniature: ~200 resources through every part, one run each.

Proves the harness still runs end to end (server on PostgreSQL, PWA sync in Chromium, PouchDB peer, raw
IndexedDB floor, offline reload, server benchmarks) and that the results file carries every figure the
report promises, as a number. The figures themselves are not judged here: 200 resources say nothing about
10,000. Marker ``slow``; needs PostgreSQL, /usr/bin/chromium, the Pyodide runtime and bench/node_modules.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

REQUIRED = [
    "initial_sync_s", "initial_sync_resources", "pouchdb_initial_sync_s", "raw_idb_put_s", "offline_reload_s",
    "search_p95_ms_10k", "search_p95_ms_50k", "encrypt_decrypt_ms", "compression_reduction",
    "compression_reduction_plain_zlib", "pull_resources_per_s", "push_1000_s", "fhir_create_per_s",
    "fhir_search_per_s", "pouchdb_tuned_initial_sync_s", "rxdb_initial_sync_s", "sync_longtask_max_ms",
]  # fmt: skip


def _postgres_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=2):
            return True
    except OSError:
        return False


def _missing() -> str | None:
    if not Path(os.environ.get("OMNICARE_CHROMIUM", "/usr/bin/chromium")).exists():
        return "Chromium not found (apt-get install chromium)"
    if not (REPO / "pwa" / "vendor" / "pyodide" / "pyodide.asm.wasm").exists():
        return "Pyodide runtime missing: make deps"
    if not (REPO / "pwa" / "wheels" / "wheels.json").exists():
        return "pyclient wheel missing: make deps"
    if not (REPO / "bench" / "node_modules" / "pouchdb" / "dist" / "pouchdb.min.js").exists():
        return "bench/node_modules missing: make bench-deps"
    if not _postgres_up():
        return "PostgreSQL is not listening on 127.0.0.1:5432"
    if shutil.which("node") is None:
        return "node not found"
    return None


def test_smoke_run_writes_every_metric_as_a_number(tmp_path: Path) -> None:
    reason = _missing()
    if reason:
        pytest.skip(reason)
    results, report = tmp_path / "results.json", tmp_path / "BENCHMARKS.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.pop("BENCH_PATIENTS", None)
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--smoke", "--results", str(results), "--report", str(report)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads(results.read_text())
    metrics = data["metrics"]
    bad = {k: metrics.get(k) for k in REQUIRED
           if not isinstance(metrics.get(k), (int, float)) or not math.isfinite(metrics[k])}  # fmt: skip
    assert not bad, f"missing or non-numeric metrics: {bad}"
    assert metrics["initial_sync_resources"] >= 150, "the smoke data set should be ~200 resources"
    assert metrics["initial_sync_s"] > 0 and metrics["pouchdb_initial_sync_s"] > 0
    assert 0 < metrics["compression_reduction"] < 1
    text = report.read_text()
    assert "initial_sync_s" in text and "Machine" in text and "make bench-smoke" in text
