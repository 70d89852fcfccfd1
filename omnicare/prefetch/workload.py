"""A seeded hospital workload simulator: who opens which chart, when (issue 13's evaluation bed).

Written for this project so the prefetch model can be judged on days it never saw. It is a model of a
small hospital, not a record of one; every parameter is here, named, and the README of the evaluation
(BENCHMARKS.md, "Prefetch") says what it leaves out.

* **Wards** (``WARDS``, ``BEDS`` each): patients arrive through the emergency department, stay a
  geometric number of days (mean ``MEAN_STAY_DAYS``), may transfer to another ward, and are
  discharged; each inpatient has an acuity (1–3) that can change day to day.
* **Physicians**: each has a home ward, works day shifts on five days a week, runs a clinic on two of
  them (``CLINIC_SLOTS`` appointments from a panel of ``PANEL`` patients, booked ahead), and covers
  every ward at night once a week.
* **Chart opens** in a shift: ward rounds open the home ward's inpatients (new admissions almost
  always, the rest mostly); discharge paperwork opens recent discharges; a clinic opens its
  appointments and the panel patients with a new lab result; a night of cross-cover opens the patients
  nurses call about, weighted by acuity and recent admission; colleagues' attention (acuity) raises
  every probability.
* **Unscheduled opens** (``UNPLANNED_PER_SHIFT`` on average per day shift): a phone call, a question
  from a colleague, a readmission, a letter to sign — a patient within the user's scope but outside
  the shift's plan. Half of them are patients the user opened in the last week (follow-ups), the rest
  anyone in the scope. Nothing known at the start of the shift predicts *which* one, so no ranking
  can hold all of them within a small budget: without these the workload was fully determined by the
  census, the schedule and the results, and every ranking that read them scored 100 %.
* **Outages**: each open happens offline with probability ``P_OFFLINE`` — the moment the device set
  matters.

Pure Python, seeded with ``random.Random``: the same seed gives the same hospital.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

WARDS = 4
BEDS = 22
PHYSICIANS_PER_WARD = 3
PANEL = 140
CLINIC_SLOTS = 12
MEAN_STAY_DAYS = 5.0
P_TRANSFER = 0.04
P_OFFLINE = 0.3
P_LAB_RESULT = 0.04  # per panel patient per day
UNPLANNED_PER_SHIFT = 3.0  # unscheduled chart opens per ward/clinic shift (Poisson mean)
P_UNPLANNED_FOLLOW_UP = 0.5  # share of them that are patients the user opened in the last week

ShiftKind = Literal["ward", "clinic", "night"]


@dataclass(frozen=True)
class Shift:
    user: str
    day: int
    kind: ShiftKind


@dataclass(frozen=True)
class Open:
    """One chart opened by ``user`` during ``shift`` (``offline``: while the network was down)."""

    user: str
    patient: str
    day: int
    kind: ShiftKind
    offline: bool


@dataclass
class DayState:
    """What the server knows at the start of a day: census, admissions, schedule, results."""

    day: int
    census: dict[str, int] = field(default_factory=dict)  # patient -> ward
    acuity: dict[str, int] = field(default_factory=dict)
    admitted: dict[str, int] = field(default_factory=dict)  # patient -> day admitted (current stay)
    discharged: dict[str, int] = field(default_factory=dict)  # patient -> day of discharge
    appointments: dict[str, list[str]] = field(default_factory=dict)  # user -> patients today
    lab_results: set[str] = field(default_factory=set)  # patients with a result since yesterday


@dataclass
class Hospital:
    seed: int
    users: list[str] = field(default_factory=list)
    home_ward: dict[str, int] = field(default_factory=dict)
    panel: dict[str, list[str]] = field(default_factory=dict)
    admitted_by: dict[str, str] = field(default_factory=dict)  # patient -> admitting physician (care team)
    admit_day: dict[str, int] = field(default_factory=dict)  # patient -> day of the first admission


def _shifts(user_index: int, day: int) -> list[ShiftKind]:
    """A week's pattern, staggered by physician: 5 days on the ward, 2 of them with a clinic, 1 night."""
    dow = (day + user_index) % 7
    kinds: list[ShiftKind] = []
    if dow < 5:
        kinds.append("clinic" if dow in (1, 3) else "ward")
    if dow == 5 and user_index % 2 == 0 or dow == 6 and user_index % 2 == 1:
        kinds.append("night")
    return kinds


def simulate(seed: int, days: int) -> tuple[Hospital, list[DayState], list[Shift], list[Open]]:
    """Run ``days`` days. Returns the hospital, each day's state at its start, the shifts, the opens."""
    rng = random.Random(seed)
    h = Hospital(seed)
    for w in range(WARDS):
        for i in range(PHYSICIANS_PER_WARD):
            u = f"dr.w{w}.{i}"
            h.users.append(u)
            h.home_ward[u] = w
            h.panel[u] = [f"clinic-{u}-{k}" for k in range(PANEL)]
    census: dict[str, int] = {}
    acuity: dict[str, int] = {}
    admitted: dict[str, int] = {}
    discharged: dict[str, int] = {}
    next_id = 0

    def admit(day: int, ward: int) -> None:
        nonlocal next_id
        pid = f"in-{next_id}"
        next_id += 1
        census[pid], acuity[pid], admitted[pid] = ward, rng.choice((1, 1, 2, 3)), day
        h.admitted_by[pid] = f"dr.w{ward}.{rng.randrange(PHYSICIANS_PER_WARD)}"
        h.admit_day[pid] = day

    for w in range(WARDS):  # a full hospital on day 0
        for _ in range(BEDS - 2):
            admit(-rng.randrange(1, 8), w)
    states: list[DayState] = []
    shifts: list[Shift] = []
    opens: list[Open] = []
    booked: dict[tuple[str, int], list[str]] = {}
    history: dict[str, list[tuple[int, str]]] = {u: [] for u in h.users}  # user -> (day, patient) opened
    for day in range(days):
        # Overnight: discharges, transfers, acuity changes, ED admissions into free beds, lab results.
        for pid in list(census):
            if rng.random() < 1 / MEAN_STAY_DAYS:
                del census[pid]
                discharged[pid] = day
                admitted.pop(pid, None)
            elif rng.random() < P_TRANSFER:
                census[pid] = rng.randrange(WARDS)
            else:
                acuity[pid] = max(1, min(3, acuity[pid] + rng.choice((-1, 0, 0, 0, 1))))
        for w in range(WARDS):
            free = max(0, BEDS - sum(1 for x in census.values() if x == w))  # transfers can overfill a ward
            for _ in range(rng.randint(0, free)):
                admit(day, w)
        for u in h.users:  # clinics are booked a week ahead
            for ahead in range(7):
                booked.setdefault((u, day + ahead), rng.sample(h.panel[u], CLINIC_SLOTS))
        results = {p for u in h.users for p in h.panel[u] if rng.random() < P_LAB_RESULT}
        state = DayState(
            day=day,
            census=dict(census),
            acuity=dict(acuity),
            admitted={p: d for p, d in admitted.items() if p in census},
            discharged={p: d for p, d in discharged.items() if day - d <= 2},
            appointments={u: booked[(u, day)] for u in h.users if "clinic" in _shifts(h.users.index(u), day)},
            lab_results=results,
        )
        states.append(state)
        for i, u in enumerate(h.users):
            for kind in _shifts(i, day):
                shifts.append(Shift(u, day, kind))
                planned = list(shift_opens(rng, h, state, u, kind))
                if kind != "night":
                    planned += unplanned_opens(rng, h, states, u, day, history[u], set(planned))
                for pid in planned:
                    opens.append(Open(u, pid, day, kind, rng.random() < P_OFFLINE))
                    history[u].append((day, pid))
    return h, states, shifts, opens


def shift_opens(rng: random.Random, h: Hospital, s: DayState, user: str, kind: ShiftKind) -> Iterator[str]:
    ward = h.home_ward[user]
    if kind == "ward":
        for pid, w in s.census.items():
            if w != ward:
                continue
            new = s.day - s.admitted.get(pid, -99) <= 1
            p = 0.98 if new else 0.55 + 0.12 * s.acuity[pid]
            if rng.random() < p:
                yield pid
        for pid in s.discharged:
            if h.admitted_by.get(pid) == user and rng.random() < 0.35:
                yield pid  # the discharge summary
    elif kind == "clinic":
        for pid in s.appointments.get(user, []):
            if rng.random() < 0.93:
                yield pid
        for pid in h.panel[user]:
            if pid in s.lab_results and rng.random() < 0.6:
                yield pid  # a result to review
    else:  # night cross-cover: nurses call about the sick and the new, on every ward
        for pid in s.census:
            new = s.day - s.admitted.get(pid, -99) <= 1
            p = 0.02 + 0.05 * (s.acuity[pid] - 1) + (0.08 if new else 0.0)
            if rng.random() < p:
                yield pid


def _poisson(rng: random.Random, mean: float) -> int:
    """Knuth's method (small means): the count of unscheduled opens in a shift."""
    limit, k, p = pow(2.718281828459045, -mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def unplanned_opens(
    rng: random.Random,
    h: Hospital,
    states: list[DayState],
    user: str,
    day: int,
    history: list[tuple[int, str]],
    planned: set[str],
) -> list[str]:
    """The shift's unscheduled opens: follow-ups of last week's patients, or anyone in the scope."""
    allowed = scope_of(h, states, user, day)
    scope = sorted(allowed - planned)
    recent = sorted({p for d, p in history if day - d <= 7} & allowed - planned)
    out: list[str] = []
    for _ in range(_poisson(rng, UNPLANNED_PER_SHIFT)):
        pool = recent if recent and rng.random() < P_UNPLANNED_FOLLOW_UP else scope
        if pool:
            out.append(rng.choice(pool))
    return out


def scope_of(h: Hospital, states: list[DayState], user: str, day: int) -> set[str]:
    """What ``user`` may see at the start of ``day`` (the server's rule; prefetch never widens it):
    their clinic panel, their home ward's census of the last 14 days, the patients they admitted, and
    — on a night of cross-cover — every current inpatient."""
    out = set(h.panel[user])
    ward = h.home_ward[user]
    for st in states[max(0, day - 14) : day + 1]:
        out.update(p for p, w in st.census.items() if w == ward)
    out.update(p for p, u in h.admitted_by.items() if u == user and h.admit_day[p] <= day)
    if "night" in _shifts(h.users.index(user), day):
        out.update(states[day].census)
    return out
