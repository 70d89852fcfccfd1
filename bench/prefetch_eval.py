"""Offline hit rate of the prefetch ranking vs its baselines, on held-out days of the workload simulator.

    .venv/bin/python bench/prefetch_eval.py [--days 42] [--train-days 28] [--seed 7]

Simulates a hospital (omnicare/prefetch/workload.py), trains the ranking on the chart opens of the
first days (after a one-week warm-up), then replays the held-out days: at the start of each shift the
device keeps the top ``budget`` share of its user's scope; a chart opened offline is a *hit* when its
patient was kept. Writes ``bench/prefetch_hit_rate.svg`` (the curves), merges the metrics
``prefetch_hit_rate_model_25pct`` and ``prefetch_hit_rate_best_baseline_25pct`` (plus the full table
under ``prefetch``) into ``bench/results.json`` and rewrites the "Prefetch" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core: the figure must not depend on the machine's load

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from omnicare.prefetch.model import (  # noqa: E402
    PrefetchModel,
    baseline_scores,
    feature_rows,
    heuristic_rank,
    hit_rate,
)
from omnicare.prefetch.workload import scope_of, simulate  # noqa: E402

BUDGETS = (0.05, 0.10, 0.15, 0.20, 0.25, 0.30, 0.40, 0.50, 0.75, 1.00)
RANKERS = ("model", "heuristic", "care_team", "recency", "schedule")
LABELS = {
    "model": "learned model",
    "heuristic": "heuristic (fallback)",
    "care_team": "care team only",
    "recency": "recency (LRU)",
    "schedule": "schedule only",
}
COLORS = {
    "model": "#1b5e20",
    "heuristic": "#1565c0",
    "care_team": "#ef6c00",
    "recency": "#6a1b9a",
    "schedule": "#c62828",
}


def evaluate(seed: int, days: int, train_days: int) -> dict[str, object]:
    t0 = time.perf_counter()
    h, states, shifts, opens = simulate(seed, days)
    scope = lambda u, d: scope_of(h, states, u, d)  # noqa: E731
    train = feature_rows(h, states, shifts, opens, scope, range(7, train_days))
    test = feature_rows(h, states, shifts, opens, scope, range(train_days, days))
    x = [r for _s, _p, rows, _l in train for r in rows]
    y = [v for _s, _p, _r, labels in train for v in labels]
    t1 = time.perf_counter()
    model = PrefetchModel.train(x, y, seed=seed, version=f"sim-{seed}")
    t2 = time.perf_counter()
    rng = random.Random(seed)
    curves: dict[str, list[float]] = {}
    for name in RANKERS:
        scored = []
        for shift, pids, rows, _labels in test:
            if name == "model":
                s = model.scores(rows)
            elif name == "heuristic":
                s = heuristic_rank(rows)
            else:
                s = baseline_scores(name, rows, rng)
            scored.append((shift, pids, s))
        curves[name] = [round(hit_rate(scored, opens, b), 4) for b in BUDGETS]
    scope_sizes = sorted(len(p) for _s, p, _r, _l in test)
    offline_test = sum(1 for o in opens if o.offline and o.day >= train_days)
    return {
        "seed": seed,
        "days": days,
        "train_days": f"7-{train_days - 1}",
        "test_days": f"{train_days}-{days - 1}",
        "training_rows": len(x),
        "training_opens": sum(y),
        "offline_opens_tested": offline_test,
        "median_scope": scope_sizes[len(scope_sizes) // 2],
        "budgets": list(BUDGETS),
        "curves": curves,
        "features_s": round(t1 - t0, 1),
        "train_s": round(t2 - t1, 1),
    }


def svg(result: dict[str, object]) -> str:
    """The hit-rate curves as a small, self-contained SVG (no plotting library, no CDN)."""
    w, hgt, left, bottom, top, right = 640, 400, 60, 50, 20, 190
    pw, ph = w - left - right, hgt - top - bottom
    budgets = result["budgets"]
    curves = result["curves"]
    assert isinstance(budgets, list) and isinstance(curves, dict)

    def xy(b: float, v: float) -> tuple[float, float]:
        return left + b * pw, top + (1 - v) * ph

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{hgt}" viewBox="0 0 {w} {hgt}" '
        'font-family="sans-serif" font-size="13">',
        f'<rect width="{w}" height="{hgt}" fill="white"/>',
        f'<text x="{left}" y="14" font-weight="bold">Offline hit rate by storage budget (held-out days)</text>',
    ]
    for i in range(0, 11, 2):
        v = i / 10
        _x, y = xy(0, v)
        parts.append(f'<line x1="{left}" y1="{y}" x2="{left + pw}" y2="{y}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 8}" y="{y + 4}" text-anchor="end">{int(v * 100)} %</text>')
    for b in (0, 0.25, 0.5, 0.75, 1.0):
        x, _y = xy(b, 0)
        parts.append(f'<line x1="{x}" y1="{top}" x2="{x}" y2="{top + ph}" stroke="#eee"/>')
        parts.append(f'<text x="{x}" y="{top + ph + 18}" text-anchor="middle">{int(b * 100)} %</text>')
    x25, _ = xy(0.25, 0)
    parts.append(
        f'<line x1="{x25}" y1="{top}" x2="{x25}" y2="{top + ph}" stroke="#999" stroke-dasharray="4 3"/>'
    )
    parts.append(
        f'<text x="{left + pw / 2}" y="{hgt - 10}" text-anchor="middle">'
        "share of the user's scope the device holds</text>"
    )
    for k, name in enumerate(RANKERS):
        pts = " ".join(
            f"{xy(b, v)[0]:.1f},{xy(b, v)[1]:.1f}" for b, v in zip(budgets, curves[name], strict=True)
        )
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{COLORS[name]}" stroke-width="2.5"/>')
        ly = top + 20 + 22 * k
        parts.append(
            f'<line x1="{left + pw + 15}" y1="{ly}" x2="{left + pw + 40}" y2="{ly}" '
            f'stroke="{COLORS[name]}" stroke-width="3"/>'
        )
        parts.append(f'<text x="{left + pw + 46}" y="{ly + 4}">{LABELS[name]}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def report(result: dict[str, object]) -> str:
    budgets = result["budgets"]
    curves = result["curves"]
    assert isinstance(budgets, list) and isinstance(curves, dict)
    head = "| ranking | " + " | ".join(f"{int(b * 100)} %" for b in budgets) + " |"
    sep = "|---|" + "---:|" * len(budgets)
    rows = [f"| {LABELS[n]} | " + " | ".join(f"{v * 100:.1f}" for v in curves[n]) + " |" for n in RANKERS]
    i25 = budgets.index(0.25)
    best = max((n for n in RANKERS if n not in ("model", "heuristic")), key=lambda n: curves[n][i25])
    return "\n".join(
        [
            "## Prefetch: offline hit rate by storage budget (issue 13)",
            "",
            "`.venv/bin/python bench/prefetch_eval.py` — the workload simulator (`omnicare/prefetch/workload.py`, seed "
            f"{result['seed']}: {result['days']} days, 4 wards of 22 beds, 12 physicians with ward rounds, clinics and "
            f"night cross-cover; 30 % of chart opens offline) trains the ranking on days {result['train_days']} "
            f"({result['training_rows']:,} user×patient×shift rows, {result['training_opens']:,} opens) and replays "
            f"days {result['test_days']} ({result['offline_opens_tested']:,} offline opens). At each shift start the "
            "device keeps the top share of its user's scope (median scope "
            f"{result['median_scope']} patients); a hit is an offline open of a kept patient.",
            "",
            "![hit rate curves](bench/prefetch_hit_rate.svg)",
            "",
            head,
            sep,
            *rows,
            "",
            f"At 25 %: learned model {curves['model'][i25] * 100:.1f} %, best baseline ({LABELS[best]}) "
            f"{curves[best][i25] * 100:.1f} %, hand-written heuristic {curves['heuristic'][i25] * 100:.1f} %.",
            "",
            "Honestly: the simulator was written by the same team as the features, so it rewards the signals the "
            "model sees (census, admissions, schedule, results, acuity, the user's recent opens). An earlier version "
            "scored the model 100 % at 25 %: every chart a shift opened was then fully determined by what was known "
            "at its start. The simulator now adds about three unscheduled opens per day shift (phone calls, "
            "follow-ups, readmissions: half of them a patient the user opened in the last week, the rest anyone in "
            "the scope) that no feature can pin down, and these are the model's misses. "
            + (
                "The issue's goal (at 25 %: ≥ 95 % and ≥ 10 points over the best baseline) is met."
                if curves["model"][i25] >= 0.95 and curves["model"][i25] >= curves[best][i25] + 0.10
                else "The issue's goal at 25 % is only partly met: the margin over the best baseline is well above "
                "10 points, but the hit rate is below 95 %."
            )
            + " The features are computed only from what is known at the start of a shift (state at the start of "
            "its day, opens on earlier days); training and test days do not overlap. The model has not been "
            "evaluated on a real site's audit trail.",
            f"Features {result['features_s']} s, training {result['train_s']} s (one core).",
            "",
        ]
    )


def merge_outputs(result: dict[str, object]) -> None:
    curves = result["curves"]
    budgets = result["budgets"]
    assert isinstance(curves, dict) and isinstance(budgets, list)
    i25 = budgets.index(0.25)
    baselines = [curves[n][i25] for n in ("care_team", "recency", "schedule")]
    path = ROOT / "bench" / "results.json"
    data = json.loads(path.read_text()) if path.exists() else {"metrics": {}}
    data.setdefault("metrics", {})
    data["metrics"]["prefetch_hit_rate_model_25pct"] = curves["model"][i25]
    data["metrics"]["prefetch_hit_rate_best_baseline_25pct"] = max(baselines)
    data["prefetch"] = result
    path.write_text(json.dumps(data, indent=2) + "\n")
    (ROOT / "bench" / "prefetch_hit_rate.svg").write_text(svg(result))
    md = ROOT / "BENCHMARKS.md"
    text = md.read_text() if md.exists() else ""
    section = report(result)
    marker = "## Prefetch: offline hit rate by storage budget (issue 13)"
    if marker in text:
        start = text.index(marker)
        nxt = text.find("\n## ", start + len(marker))
        text = text[:start] + section + (text[nxt + 1 :] if nxt != -1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    md.write_text(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--days", type=int, default=42)
    ap.add_argument("--train-days", type=int, default=28)
    ap.add_argument("--no-write", action="store_true", help="print the table only")
    args = ap.parse_args()
    result = evaluate(args.seed, args.days, args.train_days)
    print(report(result))
    if not args.no_write:
        merge_outputs(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
