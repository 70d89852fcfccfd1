"""Shared pieces of ``make bench`` (bench/run.py): paths, the browser's launch flags, logging, process helpers."""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent.parent
BENCH = REPO / "bench"
OUT = BENCH / "out"
BROWSER_DIR = BENCH / "browser"
CHROMIUM = os.environ.get("OMNICARE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
USER, PASSWORD, PIN = "dr.adams", "stethoscope-maple-42", "482916"
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/omnicare_bench"
T0 = time.perf_counter()


def loadavg() -> str:
    """1/5/15-minute load averages: on a shared machine they say how much the figures were disturbed."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


LOAD_START = loadavg()


def log(msg: str) -> None:
    print(f"[bench {time.perf_counter() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def summary(values: Sequence[float], digits: int = 3) -> dict[str, Any]:
    """Median with the run-to-run min/max and every run (rounded)."""
    vals = [float(v) for v in values]
    return {
        "median": round(statistics.median(vals), digits),
        "min": round(min(vals), digits),
        "max": round(max(vals), digits),
        "runs": [round(v, digits) for v in vals],
    }


def p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 (http://127.0.0.1)
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} did not answer {url} within {timeout:.0f}s")


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def base_env(db_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "OMNICARE_TEST"))}
    env.update(
        {
            "DATABASE_URL": db_url,
            "OMNICARE_SECRET_KEY": "bench",
            "OMNICARE_MASTER_KEY": env.get(
                "OMNICARE_MASTER_KEY", "YmVuY2gtb25seS1tYXN0ZXIta2V5LW5vdC1zZWNyZXQ="
            ),
            "OMNICARE_DEBUG": "0",
            "OMNICARE_SECURE": "0",
            "OMNICARE_LOG_LEVEL": "WARNING",
            "DJANGO_SETTINGS_MODULE": "omnicare.settings",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env
