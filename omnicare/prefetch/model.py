"""Which patients a device should hold: a learned ranking within the user's scope, and its baselines.

The server decides what a user *may* see; this module only orders that scope by how likely the user
is to open each chart in the coming shift, so a device with a storage budget holds the most useful
part of it (DESIGN.md, "Scope vs device set"). A prediction never adds a patient: every ranking
function takes the scope and returns a permutation of it.

Features are what the server knows at the start of a shift (census, admissions, discharges, the
schedule, new results) plus the audit trail of chart opens before it — by this user and by
colleagues. The model is scikit-learn's ``HistGradientBoostingClassifier`` (interactions such as
"night shift × recently admitted" matter; it needs no scaling and handles counts), trained per site;
with too little history :func:`heuristic_rank` is used instead.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from .workload import DayState, Hospital, Open, Shift

FEATURES = (
    "home_ward_census",
    "any_census",
    "admitted_last_day",
    "discharged_recently",
    "admitted_by_user",
    "appointment_this_shift",
    "in_panel",
    "lab_result",
    "acuity",
    "user_opens_7d",
    "days_since_user_open",
    "colleague_opens_1d",
    "shift_ward",
    "shift_clinic",
    "shift_night",
)

#: The smallest history (chart opens) worth training on; below it the heuristic ranks.
MIN_TRAINING_OPENS = 500


def _features(
    h: Hospital,
    s: DayState,
    shift: Shift,
    pid: str,
    user_recent: dict[str, int],
    seen: dict[str, int],
    colleagues: dict[str, int],
) -> list[float]:
    ward = h.home_ward[shift.user]
    last = seen.get(pid)
    return [
        float(s.census.get(pid) == ward),
        float(pid in s.census),
        float(pid in s.admitted and s.day - s.admitted[pid] <= 1),
        float(pid in s.discharged),
        float(h.admitted_by.get(pid) == shift.user),
        float(pid in s.appointments.get(shift.user, ())),
        float(pid in h.panel[shift.user]),
        float(pid in s.lab_results),
        float(s.acuity.get(pid, 0)),
        float(user_recent.get(pid, 0)),
        float(min(30, s.day - last) if last is not None else 30),
        float(colleagues.get(pid, 0)),
        float(shift.kind == "ward"),
        float(shift.kind == "clinic"),
        float(shift.kind == "night"),
    ]


def feature_rows(
    h: Hospital,
    states: Sequence[DayState],
    shifts: Sequence[Shift],
    opens: Sequence[Open],
    scope: Callable[[str, int], set[str]],
    days: range,
) -> list[tuple[Shift, list[str], list[list[float]], list[int]]]:
    """For each shift on ``days``: the scope (sorted), its feature rows and labels (opened or not).

    Features use only what was known before the shift: states at the start of its day and opens on
    earlier days."""
    by_day: dict[int, list[Open]] = defaultdict(list)
    for o in opens:
        by_day[o.day].append(o)
    last_seen: dict[str, dict[str, int]] = defaultdict(dict)  # user -> patient -> last day opened
    out = []
    for day in range(max(days) + 1 if days else 0):
        if day in days:
            recent: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
            for d in range(max(0, day - 7), day):
                for o in by_day[d]:
                    recent[o.user][o.patient] += 1
            colleagues: dict[str, int] = defaultdict(int)
            for o in by_day.get(day - 1, []):
                colleagues[o.patient] += 1
            for shift in (x for x in shifts if x.day == day):
                pids = sorted(scope(shift.user, day))
                opened = {o.patient for o in by_day[day] if o.user == shift.user and o.kind == shift.kind}
                rows = [
                    _features(h, states[day], shift, p, recent[shift.user], last_seen[shift.user], colleagues)
                    for p in pids
                ]
                out.append((shift, pids, rows, [int(p in opened) for p in pids]))
        for o in by_day[day]:
            last_seen[o.user][o.patient] = day
    return out


class PrefetchModel:
    """A versioned, trained ranking. ``rank(rows)`` orders patients by probability of being opened."""

    def __init__(self, clf: Any, version: str) -> None:
        self._clf = clf
        self.version = version

    @classmethod
    def train(
        cls, rows: Sequence[list[float]], labels: Sequence[int], *, seed: int, version: str
    ) -> PrefetchModel:
        from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: PLC0415 - heavy, only for training

        clf = HistGradientBoostingClassifier(max_iter=150, learning_rate=0.1, random_state=seed)
        clf.fit(rows, labels)
        return cls(clf, version)

    def scores(self, rows: Sequence[list[float]]) -> list[float]:
        return [float(p) for p in self._clf.predict_proba(rows)[:, 1]]


def heuristic_rank(rows: Sequence[list[float]]) -> list[float]:
    """The fallback with too little history: schedule, new admissions and the home ward first."""
    ix = {f: i for i, f in enumerate(FEATURES)}
    return [
        4 * r[ix["appointment_this_shift"]]
        + 3 * r[ix["admitted_last_day"]]
        + 2 * r[ix["home_ward_census"]]
        + r[ix["lab_result"]]
        + 0.3 * r[ix["acuity"]]
        + 0.1 * r[ix["user_opens_7d"]]
        for r in rows
    ]


# --- baselines the model must beat (issue 13) -------------------------------------------------------------


def baseline_scores(name: str, rows: Sequence[list[float]], rng: random.Random) -> list[float]:
    """``care_team``: the user's care team (home-ward inpatients and patients they admitted) first;
    ``recency``: most recently opened by the user first (LRU); ``schedule``: today's appointments
    first. Ties are broken at random."""
    ix = {f: i for i, f in enumerate(FEATURES)}
    out = []
    for r in rows:
        if name == "care_team":
            key = r[ix["home_ward_census"]] + r[ix["admitted_by_user"]]
        elif name == "recency":
            key = -r[ix["days_since_user_open"]]
        elif name == "schedule":
            key = r[ix["appointment_this_shift"]]
        else:
            raise ValueError(name)
        out.append(key + rng.random() * 1e-3)
    return out


def hit_rate(
    scored: Sequence[tuple[Shift, list[str], list[float]]],
    opens: Sequence[Open],
    fraction: float,
) -> float:
    """Share of the offline chart opens whose patient was on the device, when each device holds the top
    ``fraction`` of its user's scope for the shift."""
    held: dict[tuple[str, int, str], set[str]] = {}
    for shift, pids, scores in scored:
        k = max(1, math.ceil(fraction * len(pids)))
        order = sorted(range(len(pids)), key=lambda i: -scores[i])[:k]
        held[(shift.user, shift.day, shift.kind)] = {pids[i] for i in order}
    hits = total = 0
    for o in opens:
        key = (o.user, o.day, o.kind)
        if not o.offline or key not in held:
            continue
        total += 1
        hits += o.patient in held[key]
    return hits / total if total else float("nan")
