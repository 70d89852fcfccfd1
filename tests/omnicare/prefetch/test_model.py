"""The prefetch ranking on the workload simulator: never widens scope, beats its baselines on held-out days."""

from __future__ import annotations

import os
import random

os.environ.setdefault("OMP_NUM_THREADS", "1")

from omnicare.prefetch.model import (  # noqa: E402
    MIN_TRAINING_OPENS,
    PrefetchModel,
    baseline_scores,
    feature_rows,
    heuristic_rank,
    hit_rate,
)
from omnicare.prefetch.workload import scope_of, simulate  # noqa: E402


def test_the_same_seed_gives_the_same_hospital() -> None:
    a, b, c = simulate(3, 10), simulate(3, 10), simulate(4, 10)
    assert a[3] == b[3] and a[3] != c[3]


def test_a_ranking_orders_the_scope_and_never_adds_a_patient() -> None:
    h, states, shifts, opens = simulate(5, 12)
    rows = feature_rows(h, states, shifts, opens, lambda u, d: scope_of(h, states, u, d), range(8, 12))
    assert rows
    for shift, pids, feats, labels in rows:
        assert set(pids) == scope_of(h, states, shift.user, shift.day)
        assert len(feats) == len(labels) == len(pids)
    # Every chart a user opened was within their scope (the server's rule), so a hit is possible.
    for o in opens:
        assert o.patient in scope_of(h, states, o.user, o.day)


def test_the_learned_model_beats_every_baseline_on_days_it_never_saw() -> None:
    h, states, shifts, opens = simulate(11, 30)
    scope = lambda u, d: scope_of(h, states, u, d)  # noqa: E731
    train = feature_rows(h, states, shifts, opens, scope, range(7, 22))
    test = feature_rows(h, states, shifts, opens, scope, range(22, 30))
    x = [r for *_s, rows, _l in train for r in rows]
    y = [v for *_s, labels in train for v in labels]
    assert sum(y) >= MIN_TRAINING_OPENS
    model = PrefetchModel.train(x, y, seed=1, version="test")
    rng = random.Random(1)

    def at(fraction: float, scorer: object) -> float:
        scored = [(s, p, scorer(rows)) for s, p, rows, _l in test]  # type: ignore[operator]
        return hit_rate(scored, opens, fraction)

    model_25 = at(0.25, model.scores)
    best_baseline = max(
        at(0.25, lambda r, n=n: baseline_scores(n, r, rng)) for n in ("care_team", "recency", "schedule")
    )
    assert model_25 >= best_baseline + 0.10, (model_25, best_baseline)
    # Issue 13's goal is 95 %; the simulator's unscheduled opens (which no feature predicts) bound every ranking
    # near 92 % (bench/prefetch_eval.py computes the bound; BENCHMARKS.md says so): a regression guard.
    assert model_25 >= 0.88
    # The fallback without history is far better than holding a random quarter of the scope.
    assert at(0.25, heuristic_rank) > at(0.25, lambda r: [rng.random() for _ in r]) + 0.2
