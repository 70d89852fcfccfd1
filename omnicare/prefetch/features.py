"""The prefetch features: one function, used by the server (training and ranking) and by the evaluation.

:func:`features_at` turns a :class:`History` (ids and times only: chart opens from the audit trail, inpatient
stays with their ward periods, appointments, new results, care-team changes) into one row of
:data:`FEATURES` per patient, as things stood just before ``at``. The server builds the History from its
database (``services.history_load``); the evaluation builds it from the workload simulator
(``model.simulated_history``). Because both call this function, the hit rate BENCHMARKS.md reports is the
hit rate of the features production computes, not of a look-alike.

No Django and no I/O here: plain data in, floats out. Whatever happened at or after ``at`` is ignored, so a
History holding the whole future (the simulator's, or a training replay's) gives the same rows as one cut
at ``at`` (``tests/omnicare/prefetch/test_features.py`` checks that). Appointments are the exception by
design: they are booked ahead, so tomorrow's clinic is known today.

Point in time: a stay or an appointment is read from one stored version of its resource, and carries the
interval in which that version was the server's current one (``known_from``/``known_until``; None: always).
A replay of a past shift sees the version that stood then, so an admission recorded after the shift began,
a participant added later or a clinic slot booked during the shift tells nothing about that shift (the
server's training replay reads every version; the offer, at ``now``, the current ones).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo

FEATURES: tuple[str, ...] = (
    "ward_census",  # an inpatient on one of the user's wards now
    "ward_recent_14d",  # was on one of the user's wards in the last 14 days, not now
    "inpatient",  # an inpatient anywhere now (night cover answers calls from every ward)
    "admitted_last_day",
    "days_since_admission",  # of the current stay (30: not an inpatient)
    "discharged_recently",  # in the last 2 days
    "days_since_discharge",  # of the last stay that ended (30: none in the last 30 days)
    "admitted_by_user",  # the user is a participant of a stay that has begun
    "appointment_today",
    "appointment_tomorrow",
    "user_appointments_today",  # how many the user has today: a clinic day, not a ward round
    "care_team",
    "care_team_changed_7d",
    "result_1d",  # a new Observation/DiagnosticReport in the last day
    "abnormal_results_1d",  # how many of them are flagged abnormal (the sick get more, and more abnormal)
    "results_since_user_open",  # results in the last 7 days after the user last opened the chart
    "user_opens_1d",
    "user_opens_3d",
    "user_opens_7d",
    "user_opens_14d",
    "days_since_user_open",  # 30: not in the last 30 days
    "opened_last_shift",  # opened by the user in their last worked shift of the same kind (day/night)
    "user_patients_7d",  # distinct charts the user opened in 7 days: a per-user scale for the counts above
    "colleague_opens_1d",  # other users' opens
    "colleague_opens_7d",
    "night",
    "weekend",
)

DAY = timedelta(days=1)
SHIFT = timedelta(hours=12)
DAY_SHIFT_HOUR = 7  # day shifts 07:00-19:00, nights 19:00-07:00 (site time)
CAP_DAYS = 30.0

UserKey = Hashable


@dataclass(frozen=True)
class Stay:
    """One inpatient stay: ``locations`` are (location id, from, until) periods; None = the stay's own bound.
    ``known_from``/``known_until``: when the version it was read from was current (None: open-ended)."""

    patient: str
    start: datetime | None
    end: datetime | None
    locations: tuple[tuple[str, datetime | None, datetime | None], ...]
    practitioners: frozenset[str]
    known_from: datetime | None = None
    known_until: datetime | None = None


#: One booked appointment of a Practitioner: (start, patient, known_from, known_until) - the interval in which
#: the server held it as booked (a version not cancelled; None: open-ended).
Booking = tuple[datetime, str, datetime | None, datetime | None]


def known_at(known_from: datetime | None, known_until: datetime | None, at: datetime) -> bool:
    """Whether a version current from ``known_from`` until ``known_until`` was what the server held at ``at``."""
    return (known_from is None or known_from <= at) and (known_until is None or at < known_until)


@dataclass
class History:
    """What the server knows (ids and times only). Lists may arrive in any order; :meth:`index` sorts."""

    opens: dict[UserKey, list[tuple[datetime, str]]] = field(default_factory=lambda: defaultdict(list))
    stays: list[Stay] = field(default_factory=list)
    appointments: dict[str, list[Booking]] = field(default_factory=lambda: defaultdict(list))
    team_changed: dict[str, list[datetime]] = field(default_factory=lambda: defaultdict(list))
    results: dict[str, list[tuple[datetime, bool]]] = field(default_factory=lambda: defaultdict(list))
    _index: _Index | None = field(default=None, repr=False, compare=False)

    def index(self) -> _Index:
        """Sorted views, built once (a History is not changed after it is loaded)."""
        if self._index is None:
            mine = {u: sorted(v) for u, v in self.opens.items()}
            every = sorted((t, u, p) for u, v in self.opens.items() for t, p in v)
            self._index = _Index(
                mine, {u: [t for t, _p in v] for u, v in mine.items()}, every, [t for t, _u, _p in every],
                {p: sorted(v) for p, v in self.results.items()},
            )
        return self._index


@dataclass(frozen=True)
class _Index:
    opens: dict[UserKey, list[tuple[datetime, str]]]
    open_times: dict[UserKey, list[datetime]]
    every: list[tuple[datetime, UserKey, str]]
    every_times: list[datetime]
    results: dict[str, list[tuple[datetime, bool]]]


@dataclass(frozen=True)
class UserContext:
    """Who is asking: the audit trail's user key, their Practitioner ids, wards and current care team."""

    user_id: UserKey
    practitioners: frozenset[str]
    wards: frozenset[str]
    team: frozenset[str]


def shift_start(t: datetime, tz: tzinfo) -> datetime:
    """Start of the 12-hour shift (07:00 or 19:00, site time) that ``t`` falls in."""
    local = t.astimezone(tz)
    base = local.replace(hour=DAY_SHIFT_HOUR, minute=0, second=0, microsecond=0)
    if local.hour < DAY_SHIFT_HOUR:
        return base - DAY + SHIFT
    return base if local < base + SHIFT else base + SHIFT


def _is_night(t: datetime, tz: tzinfo) -> bool:
    hour = t.astimezone(tz).hour
    return hour >= DAY_SHIFT_HOUR + 12 or hour < DAY_SHIFT_HOUR


def _days(delta: timedelta) -> float:
    return min(CAP_DAYS, delta.total_seconds() / 86400)


@dataclass
class _Mine:
    """The user's own opens before ``at``: counts per window, the last time, the last same-kind shift."""

    counts: dict[str, list[float]] = field(default_factory=lambda: defaultdict(lambda: [0.0] * 4))
    last: dict[str, datetime] = field(default_factory=dict)
    last_shift: set[str] = field(default_factory=set)


_WINDOWS = (DAY, 3 * DAY, 7 * DAY, 14 * DAY)  # user_opens_1d .. _14d
_ZERO = [0.0] * len(_WINDOWS)


def _mine(ix: _Index, u: UserContext, at: datetime, tz: tzinfo) -> _Mine:
    mine = ix.opens.get(u.user_id, [])
    times = ix.open_times.get(u.user_id, [])
    end = bisect.bisect_left(times, at)
    out = _Mine()
    for t, p in mine[bisect.bisect_left(times, at - timedelta(days=CAP_DAYS)) : end]:
        counts = out.counts[p]
        for k, window in enumerate(_WINDOWS):
            if at - t <= window:
                counts[k] += 1
        out.last[p] = t
    night = _is_night(at, tz)
    for i in range(end - 1, -1, -1):  # the last worked shift of the same kind (a ward round follows a round)
        if _is_night(times[i], tz) == night:
            start = shift_start(times[i], tz)
            out.last_shift = {p for t, p in mine[bisect.bisect_left(times, start) : i + 1]}
            break
    return out


def features_at(h: History, u: UserContext, patients: Sequence[str], at: datetime, tz: tzinfo) -> list[list[float]]:
    """One row of :data:`FEATURES` per patient, from what was known before ``at`` only."""
    ix = h.index()
    local = at.astimezone(tz)
    today = local.date()
    mine = _mine(ix, u, at, tz)
    recent_patients = sum(1 for c in mine.counts.values() if c[2])
    colleagues: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    lo = bisect.bisect_left(ix.every_times, at - 7 * DAY)
    for t, uid, p in ix.every[lo : bisect.bisect_left(ix.every_times, at)]:
        if uid != u.user_id:
            colleagues[p][1] += 1
            if at - t <= DAY:
                colleagues[p][0] += 1
    ward: set[str] = set()
    ward_recent: set[str] = set()
    inpatient: dict[str, datetime | None] = {}
    new: set[str] = set()
    gone: set[str] = set()
    left: dict[str, datetime] = {}
    by_me: set[str] = set()
    for s in h.stays:
        if s.start is not None and s.start > at:
            continue  # not begun yet: nothing about it is known
        if not known_at(s.known_from, s.known_until, at):
            continue  # another version of it stood then (or it was not recorded yet)
        ended = s.end is not None and s.end <= at
        if not ended:
            inpatient[s.patient] = s.start
        if s.start is not None and at - s.start <= DAY:
            new.add(s.patient)
        if ended and s.end is not None:
            left[s.patient] = max(s.end, left.get(s.patient, s.end))
            if at - s.end <= 2 * DAY:
                gone.add(s.patient)
        if s.practitioners & u.practitioners:
            by_me.add(s.patient)
        for loc, frm, until in s.locations:
            if loc not in u.wards:
                continue
            frm = frm or s.start
            until = until or (s.end if ended else None)
            if frm is not None and frm > at:
                continue
            if until is None or until > at:
                ward.add(s.patient)
            elif at - until <= 14 * DAY:
                ward_recent.add(s.patient)
    appt_today: set[str] = set()
    appt_tomorrow: set[str] = set()
    for prac in u.practitioners:
        for start, p, booked, unbooked in h.appointments.get(prac, []):
            if not known_at(booked, unbooked, at):
                continue  # booked later (or cancelled by then): not known at the shift's start
            d = (start.astimezone(tz).date() - today).days
            if d == 0:
                appt_today.add(p)
            elif d == 1:
                appt_tomorrow.add(p)
    night = float(_is_night(at, tz))
    weekend = float(local.weekday() >= 5)
    rows = []
    for p in patients:
        counts = mine.counts.get(p, _ZERO)
        last = mine.last.get(p)
        res = ix.results.get(p, [])
        hi = bisect.bisect_left(res, (at, False))
        day_res = res[bisect.bisect_left(res, (at - DAY, False)) : hi]
        after_open = res[bisect.bisect_right(res, (max(last or at - 7 * DAY, at - 7 * DAY), True)) : hi]
        admitted = inpatient.get(p)
        rows.append([
            float(p in ward),
            float(p in ward_recent and p not in ward),
            float(p in inpatient),
            float(p in new),
            _days(at - admitted) if admitted is not None else (0.0 if p in inpatient else CAP_DAYS),
            float(p in gone),
            _days(at - left[p]) if p in left else CAP_DAYS,
            float(p in by_me),
            float(p in appt_today),
            float(p in appt_tomorrow),
            float(len(appt_today)),
            float(p in u.team),
            float(any(timedelta(0) < at - c <= 7 * DAY for c in h.team_changed.get(p, ()))),
            float(bool(day_res)),
            float(sum(1 for _t, abnormal in day_res if abnormal)),
            float(len(after_open)),
            *counts,
            _days(at - last) if last is not None else CAP_DAYS,
            float(p in mine.last_shift),
            float(recent_patients),
            colleagues[p][0] if p in colleagues else 0.0,
            colleagues[p][1] if p in colleagues else 0.0,
            night,
            weekend,
        ])
    return rows


#: Fixed weights for a site with too little history: schedule, admissions and the ward first.
HEURISTIC_WEIGHTS: dict[str, float] = {
    "appointment_today": 4.0, "appointment_tomorrow": 2.0, "admitted_last_day": 3.0, "ward_census": 2.0,
    "result_1d": 1.0, "abnormal_results_1d": 0.3, "care_team": 0.5, "discharged_recently": 0.5,
    "user_opens_7d": 0.1, "colleague_opens_1d": 0.05,
}


def heuristic_scores(rows: Iterable[Sequence[float]], features: Sequence[str] = FEATURES) -> list[float]:
    """The fallback ranking without history: fixed weights, in 0..1 (h / (1 + h))."""
    ix = {f: i for i, f in enumerate(features)}
    out = []
    for r in rows:
        v = sum(w * r[ix[f]] for f, w in HEURISTIC_WEIGHTS.items() if f in ix)
        out.append(v / (1.0 + v))
    return out


__all__ = ["FEATURES", "Booking", "History", "Stay", "known_at", "UserContext", "features_at", "heuristic_scores", "shift_start"]
