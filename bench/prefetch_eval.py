"""Offline hit rate of the prefetch ranking vs its baselines, on held-out days of the workload simulator.

    .venv/bin/python bench/prefetch_eval.py [--days 42] [--train-days 28] [--seed 7]

Simulates a hospital (omnicare/prefetch/workload.py), trains the ranking on the chart opens of the
first days (after a one-week warm-up), then replays the held-out days: at the start of each shift the
device keeps the top ``budget`` share of its user's scope; a chart opened offline is a *hit* when its
patient was kept. The features are the server's own (``omnicare.prefetch.features.features_at``), fed the
simulation as a server History. A *bound* ranks by the simulator's own odds for each shift (re-drawn from
what is known at its start): no ranking that knows only the past beats it in expectation (~30 s of the run).
Writes ``bench/prefetch_hit_rate.svg`` (the curves), merges the metrics
``prefetch_hit_rate_model_25pct`` and ``prefetch_hit_rate_best_baseline_25pct`` (plus the full table
under ``prefetch``) into ``bench/results.json`` and rewrites the "Prefetch" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import math
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
from omnicare.prefetch.workload import (  # noqa: E402
    DayState,
    Hospital,
    Open,
    Shift,
    scope_of,
    simulate,
)
from omnicare.prefetch.workload import shift_opens as sim_opens  # noqa: E402 - the simulator's own law, bound only
from omnicare.prefetch.workload import unplanned_opens as sim_unplanned  # noqa: E402

BUDGETS = (0.05, 0.10, 0.15, 0.20, 0.25, 0.30, 0.40, 0.50, 0.75, 1.00)
RANKERS = ("bound", "model", "heuristic", "care_team", "recency", "schedule")
BASELINES = ("care_team", "recency", "schedule")
BOUND_REPS = 300  # re-draws of each held-out shift for the bound (two independent sets: rank, then judge)
LABELS = {
    "bound": "bound (best possible)",
    "model": "learned model",
    "heuristic": "heuristic (fallback)",
    "care_team": "care team only",
    "recency": "recency (LRU)",
    "schedule": "schedule only",
}
COLORS = {
    "bound": "#9e9e9e",
    "model": "#1b5e20",
    "heuristic": "#1565c0",
    "care_team": "#ef6c00",
    "recency": "#6a1b9a",
    "schedule": "#c62828",
}


def shift_odds(
    h: Hospital, states: list[DayState], opens: list[Open], test: list[tuple[Shift, list[str], object, object]],
    tag: str,
) -> list[list[float]]:
    """For each held-out shift, each scope patient's expected number of opens in it under the simulator's own
    law, given everything known at the shift's start (the day's state, the user's opens on earlier days):
    the shift is re-drawn ``BOUND_REPS`` times with the simulator's functions and a fresh seeded generator.
    Ranking by these is the best any ranking that knows only the past can do, in expectation."""
    past: dict[tuple[str, int], list[tuple[int, str]]] = {}
    out = []
    for shift, pids, _rows, _labels in test:
        key = (shift.user, shift.day)
        if key not in past:
            past[key] = [(o.day, o.patient) for o in opens if o.user == shift.user and o.day < shift.day]
        rng = random.Random(f"{tag}-{h.seed}-{shift.user}-{shift.day}-{shift.kind}")
        count: dict[str, int] = {}
        for _ in range(BOUND_REPS):
            drawn = list(sim_opens(rng, h, states[shift.day], shift.user, shift.kind))
            if shift.kind != "night":
                drawn += sim_unplanned(rng, h, states, shift.user, shift.day, past[key], set(drawn))
            for p in drawn:
                count[p] = count.get(p, 0) + 1
        out.append([count.get(p, 0) / BOUND_REPS for p in pids])
    return out


def expected_hit_rate(scored: list[tuple[Shift, list[str], list[float]]], odds: list[list[float]], b: float) -> float:
    """Share of the opens a ranking's device sets hold in expectation (offline or not: the outage is drawn
    independently of the patient), judged against independently estimated odds."""
    held = total = 0.0
    for (_shift, pids, scores), truth in zip(scored, odds, strict=True):
        k = max(1, math.ceil(b * len(pids)))
        held += sum(truth[i] for i in sorted(range(len(pids)), key=lambda i: -scores[i])[:k])
        total += sum(truth)
    return held / total


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
    t3 = time.perf_counter()
    rank_odds, judge_odds = shift_odds(h, states, opens, test, "rank"), shift_odds(h, states, opens, test, "judge")
    t4 = time.perf_counter()
    rng = random.Random(seed)
    curves: dict[str, list[float]] = {}
    expected: dict[str, list[float]] = {}
    for name in RANKERS:
        scored = []
        for k, (shift, pids, rows, _labels) in enumerate(test):
            if name == "bound":
                s = rank_odds[k]
            elif name == "model":
                s = model.scores(rows)
            elif name == "heuristic":
                s = heuristic_rank(rows)
            else:
                s = baseline_scores(name, rows, rng)
            scored.append((shift, pids, s))
        curves[name] = [round(hit_rate(scored, opens, b), 4) for b in BUDGETS]
        expected[name] = [round(expected_hit_rate(scored, judge_odds, b), 4) for b in BUDGETS]
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
        "expected": expected,
        "bound_reps": BOUND_REPS,
        "features_s": round(t1 - t0, 1),
        "train_s": round(t2 - t1, 1),
        "bound_s": round(t4 - t3, 1),
    }


def svg(result: dict[str, object]) -> str:
    """The hit-rate curves as a small, self-contained SVG (no plotting library, no CDN)."""
    w, hgt, left, bottom, top, right = 660, 400, 60, 50, 20, 210
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
    for k, name in sorted(enumerate(RANKERS), key=lambda kn: kn[1] == "bound"):  # the bound on top, dashed
        pts = " ".join(
            f"{xy(b, v)[0]:.1f},{xy(b, v)[1]:.1f}" for b, v in zip(budgets, curves[name], strict=True)
        )
        dash = ' stroke-dasharray="6 4"' if name == "bound" else ""
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{COLORS[name]}" stroke-width="2.5"{dash}/>')
        ly = top + 20 + 22 * k
        parts.append(
            f'<line x1="{left + pw + 15}" y1="{ly}" x2="{left + pw + 40}" y2="{ly}" '
            f'stroke="{COLORS[name]}" stroke-width="3"{dash}/>'
        )
        parts.append(f'<text x="{left + pw + 46}" y="{ly + 4}">{LABELS[name]}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def report(result: dict[str, object]) -> str:
    budgets = result["budgets"]
    curves = result["curves"]
    expected = result["expected"]
    assert isinstance(budgets, list) and isinstance(curves, dict) and isinstance(expected, dict)
    head = "| ranking | " + " | ".join(f"{int(b * 100)} %" for b in budgets) + " |"
    sep = "|---|" + "---:|" * len(budgets)
    rows = [f"| {LABELS[n]} | " + " | ".join(f"{v * 100:.1f}" for v in curves[n]) + " |" for n in RANKERS]
    i25 = budgets.index(0.25)
    best = max(BASELINES, key=lambda n: curves[n][i25])
    model, bound = curves["model"][i25], curves["bound"][i25]
    e_model, e_bound = expected["model"][i25], expected["bound"][i25]
    met = model >= 0.95 and model >= curves[best][i25] + 0.10
    exp_rows = [
        f"| {LABELS[n]} | " + " | ".join(f"{expected[n][budgets.index(b)] * 100:.1f}" for b in (0.1, 0.25, 0.5))
        + " |" for n in ("bound", "model", "heuristic", best)
    ]
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
            f"{result['median_scope']} patients); a hit is an offline open of a kept patient. The features are "
            "the server's own (`omnicare/prefetch/features.py`, `features_at`: the function the beat task trains on "
            "and the device-set offer ranks with), fed a History built from the simulation "
            "(`model.simulated_history`: chart opens as audit events with times, stays with ward periods, "
            "appointments, results).",
            "",
            "![hit rate curves](bench/prefetch_hit_rate.svg)",
            "",
            head,
            sep,
            *rows,
            "",
            f"At 25 %: learned model {model * 100:.1f} %, best baseline ({LABELS[best]}) "
            f"{curves[best][i25] * 100:.1f} %, hand-written heuristic {curves['heuristic'][i25] * 100:.1f} %, "
            f"bound {bound * 100:.1f} %.",
            "",
            "The bound row (best possible) ranks each shift's scope by the probabilities the simulator itself draws that shift's "
            "opens from, given everything known at its start (the day's state and the user's opens on earlier "
            f"days; estimated by re-drawing every held-out shift {result['bound_reps']} times with the simulator's "
            "own functions). In expectation no ranking that knows only the past can hold more. Because "
            f"{result['offline_opens_tested']:,} offline opens are a small sample (±1 point), the same rankings "
            "judged against a second, independent set of re-draws (share of all opens held, in expectation):",
            "",
            "| ranking | 10 % | 25 % | 50 % |",
            "|---|---:|---:|---:|",
            *exp_rows,
            "",
            "Honestly: "
            + (
                "the issue's goal (at 25 %: ≥ 95 % and ≥ 10 points over the best baseline) is met. "
                if met
                else f"the issue's goal at 25 % is only partly met: the margin over the best baseline is "
                f"{(model - curves[best][i25]) * 100:.0f} points, but {model * 100:.1f} % is below 95 %, and 95 % is "
                f"not reachable on this workload: the bound is {e_bound * 100:.1f} % in expectation "
                f"({bound * 100:.1f} % on these opens"
                + ("; that the model's figure on them is higher is the luck of a small sample" if model > bound else "")
                + "), and the model is within "
                f"{max(0.0, e_bound - e_model) * 100:.1f} points of it ({e_model * 100:.1f} %). "
            )
            + "What bounds it are the simulator's unscheduled opens (about three per day shift: phone calls, "
            "follow-ups, readmissions; half of them a patient the user opened in the last week, the rest anyone in "
            "the scope): which patient they pick is a fresh random draw, so a quarter of the scope holds them only "
            "by chance. More features cannot change that; only a workload with more regularity would, and "
            "making the simulator more regular to reach the goal would be grading our own homework. The simulator "
            "was written by the same team as the features, so it rewards the signals the model sees (census, "
            "admissions, schedule, results, acuity, the user's recent opens); the model has not been evaluated on "
            "a real site's audit trail. Features see only what is known before the shift's start "
            "(`tests/omnicare/prefetch/test_features.py` computes them from the whole simulated future and from a "
            "History cut at the shift's start and requires the same rows); training and test days do not overlap; "
            "the model's settings were compared on seeds 1-3, not on this seed, and left as they were (the "
            "differences were within noise).",
            "",
            "Found and fixed on the way (2026-12-01): the evaluation used to compute its own copy of the features "
            "from the simulator's day records, not the server's: the figure was that of features production did "
            "not run (no acuity or clinic-day signal there, colleagues' counts that included the user's own "
            "opens, a heuristic with other weights than the server's fallback). Both now call `features_at`; the "
            "heuristic row is now the server's fallback (86.4 % at 25 % before, with the other weights), and "
            "recency orders by the time of the last open (a true LRU), not by whole days (43.5 % before). "
            "The server's training replay counted a patient as admitted by the user at shift starts before that "
            "stay had begun (a look into the future); a stay now tells nothing before it begins. It also took the "
            "care team as it is now at every past shift start (patients who joined later looked like team "
            "patients then); it now replays the CareTeam versions. The features "
            "added (opens in 1/3/7/14 days, the user's last shift of the same kind, results since the user last "
            "looked and how many are flagged abnormal, days since admission and discharge, ward periods ended "
            "by a transfer, a clinic-day count, colleagues' opens in 7 days, a per-user count of recent charts) "
            "did not raise the figure: share of all held-out opens kept at 25 % on seeds 1, 2, 3 and 7, before → "
            "after: 92.4 → 91.8, 91.8 → 91.3, 90.7 → 90.4, 91.3 → 91.8 (mean 91.6 → 91.4, within noise). "
            "Neither could they: the earlier model was already within a few tenths of the bound. They stay "
            "because a real site's audit trail is not this simulator, and for the same reason the model was not "
            "pruned to the features that happen to matter here.",
            "",
            "Checked again (2026-12-02): do the features of a past shift use what was true at its start? In this "
            "evaluation they do, and did: a simulated user's care team on a day is their clinic panel and the "
            "patients they had admitted by then, their ward never changes, the candidates are that day's scope "
            "(`workload.scope_of`), a stay tells nothing before it begins and clinics are booked a week ahead "
            "(each booking now carries when it was made, as the server's do). So the figures above did not move "
            "with the fix below (model 92.3 %, care team only 56.6 % at 25 %, before and after). The server's "
            "training replay on a real site's data did not: besides the care team (fixed 2026-12-01) it took the "
            "candidates from today's scope plus every chart the user had opened, the wards from today's "
            "PractitionerRoles and the stays and bookings from today's Encounter and Appointment bodies. A patient "
            "who joined the team later was an example of every earlier shift, the census of a ward the user moved "
            "to was `ward_census` in shifts before they worked there, and an admission recorded or a slot booked "
            "during a shift counted at its start. It now replays each shift from the versions that stood then "
            "(`omnicare.prefetch.services.training_examples`: CareTeam, PractitionerRole, Encounter and "
            "Appointment versions, grants held then; the scope of that moment as the candidates); "
            "`test_the_training_replay_sees_each_past_shift_as_it_stood_then` fails on each old reading. What "
            "it still takes from today: the user's Practitioner link, and chart opens by their device time even "
            "if the device uploaded them after the shift began. A site whose history was imported in bulk trains "
            "only on what the store recorded from the import on (its version times; with too few opens in scope, "
            "the heuristic ranks).",
            f"Features {result['features_s']} s, training {result['train_s']} s, bound {result['bound_s']} s (one core).",
            "",
        ]
    )


def merge_outputs(result: dict[str, object]) -> None:
    curves = result["curves"]
    budgets = result["budgets"]
    assert isinstance(curves, dict) and isinstance(budgets, list)
    i25 = budgets.index(0.25)
    baselines = [curves[n][i25] for n in BASELINES]
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
