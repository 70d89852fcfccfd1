"""Which patients a device should hold: a learned ranking within the user's scope, and its baselines.

The server decides what a user *may* see; this module only orders that scope by how likely the user
is to open each chart in the coming shift, so a device with a storage budget holds the most useful
part of it (DESIGN.md, "Scope vs device set"). A prediction never adds a patient: every ranking
function takes the scope and returns a permutation of it.

Features are what the server knows at the start of a shift (census, admissions, discharges, the
schedule, new results) plus the audit trail of chart opens before it — by this user and by
colleagues, computed by :func:`.features.features_at` (the server's own function; below, the simulator
is turned into the History it reads). The model is scikit-learn's ``HistGradientBoostingClassifier`` (interactions such as
"night shift × recently admitted" matter; it needs no scaling and handles counts), trained per site;
with too little history :func:`heuristic_rank` is used instead.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from .features import FEATURES, History, Stay, UserContext, features_at, heuristic_scores
from .workload import DayState, Hospital, Open, Shift

#: The smallest history (chart opens) worth training on; below it the heuristic ranks.
MIN_TRAINING_OPENS = 500

# --- the simulator as the server would see it --------------------------------------------------------------
#
# The simulator speaks in days; the server in audit events and FHIR resources with times. These map one to
# the other so that the evaluation runs :func:`features.features_at`, the very function production runs:
# overnight events (admissions, transfers, discharges) at 03:00, the morning's results at 05:00, day shifts
# 07:00-19:00, nights 19:00-07:00, clinic appointments at 09:00. The simulator's acuity (1-3), which it says
# the server knows, reaches it the way a ward's acuity does: as vital-sign Observations, one a day per
# inpatient, abnormal from acuity 2, a second abnormal one at acuity 3. A physician's care team is their
# clinic panel and the patients they admitted (a CareTeam written at admission).

EPOCH = datetime(2026, 1, 5, tzinfo=UTC)  # simulator day 0 (the simulator staggers weeks per physician)
SIM_TZ = UTC


def _ward_id(w: int) -> str:
    return f"ward-{w}"


def _practitioner_id(user: str) -> str:
    return f"pr-{user}"


def _day(d: int, hour: int) -> datetime:
    return EPOCH + timedelta(days=d, hours=hour)


def shift_time(shift: Shift) -> datetime:
    """When ``shift`` starts: the moment its device set is chosen and its features are computed."""
    return _day(shift.day, 19 if shift.kind == "night" else 7)


def simulated_history(h: Hospital, states: Sequence[DayState], opens: Sequence[Open]) -> History:
    """The whole simulation as a server History (its future included: :func:`features_at` reads only the past)."""
    out = History()
    by_shift: dict[tuple[str, int, str], list[Open]] = defaultdict(list)
    for o in opens:
        by_shift[(o.user, o.day, o.kind)].append(o)
    for (user, day, kind), group in by_shift.items():
        start = _day(day, 19 if kind == "night" else 7)
        step = timedelta(hours=12) / (len(group) + 1)
        out.opens[user].extend((start + step * (i + 1), o.patient) for i, o in enumerate(group))
    wards: dict[str, list[tuple[int, int]]] = defaultdict(list)  # patient -> (day, ward) runs
    last_day: dict[str, int] = {}
    for s in states:
        for p, w in s.census.items():
            runs = wards[p]
            if not runs or runs[-1][1] != w:
                runs.append((s.day, w))
            last_day[p] = s.day
        for p in s.census:
            a = s.acuity[p]
            out.results[p].append((_day(s.day, 5), a >= 2))  # the morning's vital signs
            if a >= 3:
                out.results[p].append((_day(s.day, 5), True))
        for p in s.lab_results:
            out.results[p].append((_day(s.day, 5), False))
        for user, patients in s.appointments.items():
            # The simulator books clinics a week ahead (``workload.simulate``): held from that morning on.
            booked = _day(max(0, s.day - 6), 3)
            out.appointments[_practitioner_id(user)].extend((_day(s.day, 9), p, booked, None) for p in patients)
    final = len(states) - 1
    for p in h.admitted_by.keys() - wards.keys():
        # Admitted before day 0 and discharged in its first night: in no day's census, still a stay (on the
        # admitting physician's ward) that ended on day 0.
        wards[p], last_day[p] = [(h.admit_day[p], h.home_ward[h.admitted_by[p]])], -1
    for p, runs in sorted(wards.items()):
        start = _day(h.admit_day[p], 3)
        end = _day(last_day[p] + 1, 3) if last_day[p] < final else None
        locs = tuple(
            (_ward_id(w), start if i == 0 else _day(d, 3), _day(runs[i + 1][0], 3) if i + 1 < len(runs) else end)
            for i, (d, w) in enumerate(runs)
        )
        out.stays.append(Stay(p, start, end, locs, frozenset({_practitioner_id(h.admitted_by[p])})))
        out.team_changed[p].append(start)
    return out


def simulated_user(h: Hospital, user: str, day: int) -> UserContext:
    """The user as the server knows them on ``day``: Practitioner, ward, care team (panel + admitted)."""
    team = set(h.panel[user]) | {p for p, u in h.admitted_by.items() if u == user and h.admit_day[p] <= day}
    return UserContext(user, frozenset({_practitioner_id(user)}), frozenset({_ward_id(h.home_ward[user])}),
                       frozenset(team))


def feature_rows(
    h: Hospital,
    states: Sequence[DayState],
    shifts: Sequence[Shift],
    opens: Sequence[Open],
    scope: Callable[[str, int], set[str]],
    days: range,
) -> list[tuple[Shift, list[str], list[list[float]], list[int]]]:
    """For each shift on ``days``: the scope (sorted), its feature rows (:data:`FEATURES`, by
    :func:`features_at` at the shift's start) and labels (opened in the shift or not)."""
    history = simulated_history(h, states, opens)
    opened: dict[tuple[str, int, str], set[str]] = defaultdict(set)
    for o in opens:
        opened[(o.user, o.day, o.kind)].add(o.patient)
    out = []
    for shift in shifts:
        if shift.day not in days:
            continue
        pids = sorted(scope(shift.user, shift.day))
        rows = features_at(history, simulated_user(h, shift.user, shift.day), pids, shift_time(shift), SIM_TZ)
        got = opened[(shift.user, shift.day, shift.kind)]
        out.append((shift, pids, rows, [int(p in got) for p in pids]))
    return out


def train_classifier(rows: Sequence[Sequence[float]], labels: Sequence[int], *, seed: int) -> Any:
    """The site's ranking model (the server's training run and the evaluation train the same one)."""
    from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: PLC0415 - heavy, only for training

    clf = HistGradientBoostingClassifier(max_iter=150, learning_rate=0.1, random_state=seed)
    clf.fit(rows, labels)
    return clf


class PrefetchModel:
    """A versioned, trained ranking. ``rank(rows)`` orders patients by probability of being opened."""

    def __init__(self, clf: Any, version: str) -> None:
        self._clf = clf
        self.version = version

    @classmethod
    def train(
        cls, rows: Sequence[list[float]], labels: Sequence[int], *, seed: int, version: str
    ) -> PrefetchModel:
        return cls(train_classifier(rows, labels, seed=seed), version)

    def scores(self, rows: Sequence[list[float]]) -> list[float]:
        return [float(p) for p in self._clf.predict_proba(rows)[:, 1]]


def heuristic_rank(rows: Sequence[list[float]]) -> list[float]:
    """The fallback with too little history (the server's fixed weights)."""
    return heuristic_scores(rows)


# --- baselines the model must beat (issue 13) -------------------------------------------------------------


def baseline_scores(name: str, rows: Sequence[list[float]], rng: random.Random) -> list[float]:
    """``care_team``: the user's care team (home-ward inpatients and patients they admitted) first;
    ``recency``: most recently opened by the user first (LRU); ``schedule``: today's appointments
    first. Ties are broken at random."""
    ix = {f: i for i, f in enumerate(FEATURES)}
    out = []
    for r in rows:
        if name == "care_team":
            key = r[ix["ward_census"]] + r[ix["admitted_by_user"]]
        elif name == "recency":
            key = -r[ix["days_since_user_open"]]
        elif name == "schedule":
            key = r[ix["appointment_today"]]
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
