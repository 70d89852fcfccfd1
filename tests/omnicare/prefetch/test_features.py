"""The prefetch features (``omnicare.prefetch.features.features_at``, shared by the server and the evaluation):
they see nothing at or after the shift's start, and they read transfers, the user's own shifts and flagged
results the way a ward would describe them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from omnicare.prefetch.features import FEATURES, History, Stay, UserContext, features_at
from omnicare.prefetch.model import SIM_TZ, shift_time, simulated_history, simulated_user
from omnicare.prefetch.workload import scope_of, simulate

T0 = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)  # a Monday, 07:00: a day shift starts
ME = UserContext("dr.a", frozenset({"pr-a"}), frozenset({"ward-a"}), frozenset())


def _cut(h: History, at: datetime) -> History:
    """What the server would have held at ``at``: no later opens, stays, ends, transfers, results or changes."""
    out = History()
    for u, v in h.opens.items():
        out.opens[u] = [(t, p) for t, p in v if t < at]
    for s in h.stays:
        if s.start is not None and s.start >= at:
            continue
        end = s.end if s.end is not None and s.end <= at else None
        locs = tuple((loc, frm, until if until is not None and until <= at else None)
                     for loc, frm, until in s.locations if frm is None or frm <= at)
        out.stays.append(Stay(s.patient, s.start, end, locs, s.practitioners))
    out.appointments = h.appointments  # booked ahead: known before the day (the documented exception)
    for p, times in h.team_changed.items():
        out.team_changed[p] = [t for t in times if t < at]
    for p, results in h.results.items():
        out.results[p] = [r for r in results if r[0] < at]
    return out


def test_features_computed_from_the_whole_future_equal_those_from_the_past_only() -> None:
    """The evaluation hands features_at the simulation's whole History, test days included; the rows of every
    shift must be exactly those computed from a History cut at the shift's start (no leakage of its opens)."""
    h, states, shifts, opens = simulate(5, 20)
    full = simulated_history(h, states, opens)
    checked = changed = 0
    for shift in shifts:
        if shift.day < 9:
            continue
        at = shift_time(shift)
        pids = sorted(scope_of(h, states, shift.user, shift.day))
        u = simulated_user(h, shift.user, shift.day)
        rows = features_at(full, u, pids, at, SIM_TZ)
        assert rows == features_at(_cut(full, at), u, pids, at, SIM_TZ), shift
        # ... and the shift's own opens do change what the next shift sees (the test is not vacuous).
        later = features_at(full, u, pids, at + timedelta(hours=12), SIM_TZ)
        changed += rows != later
        checked += 1
    assert checked > 50 and changed == checked


def _row(h: History, pid: str, at: datetime, u: UserContext = ME) -> dict[str, float]:
    return dict(zip(FEATURES, features_at(h, u, [pid], at, UTC)[0], strict=True))


def test_a_transfer_ends_the_ward_period_and_the_patient_stays_recent_for_14_days() -> None:
    h = History()
    moved = T0 - timedelta(days=1)
    h.stays.append(Stay("p1", T0 - timedelta(days=3), None,
                        (("ward-a", None, moved), ("ward-b", moved, None)), frozenset({"pr-other"})))
    before, after = _row(h, "p1", moved - timedelta(hours=1)), _row(h, "p1", T0)
    assert (before["ward_census"], before["ward_recent_14d"], before["inpatient"]) == (1.0, 0.0, 1.0)
    assert (after["ward_census"], after["ward_recent_14d"], after["inpatient"]) == (0.0, 1.0, 1.0)
    assert _row(h, "p1", moved + timedelta(days=15))["ward_recent_14d"] == 0.0
    assert after["days_since_admission"] == 3.0 and after["admitted_by_user"] == 0.0


def test_a_stay_that_has_not_begun_tells_nothing() -> None:
    """A training replay at a past shift start holds stays that began later: the user admitting that patient
    next week must not show in this week's row (it did before the features were shared)."""
    h = History()
    h.stays.append(Stay("p2", T0 + timedelta(days=2), None, (("ward-a", None, None),), frozenset({"pr-a"})))
    now, then = _row(h, "p2", T0), _row(h, "p2", T0 + timedelta(days=2, hours=1))
    assert (now["admitted_by_user"], now["ward_census"], now["inpatient"]) == (0.0, 0.0, 0.0)
    assert (then["admitted_by_user"], then["ward_census"], then["admitted_last_day"]) == (1.0, 1.0, 1.0)


def test_the_users_own_opens_by_window_and_their_last_shift_of_the_same_kind() -> None:
    h = History()
    h.opens["dr.a"] += [
        (T0 - timedelta(days=10, hours=-2), "p3"),  # a day shift 10 days ago
        (T0 - timedelta(days=2, hours=-3), "p3"),  # the last day shift: 2 days ago, 10:00
        (T0 - timedelta(hours=5), "p4"),  # last night, 02:00 (a night shift)
    ]
    h.opens["dr.b"] += [(T0 - timedelta(hours=3), "p3")]
    p3, p4 = _row(h, "p3", T0), _row(h, "p4", T0)
    assert [p3[f"user_opens_{d}d"] for d in (1, 3, 7, 14)] == [0.0, 1.0, 1.0, 2.0]
    assert p3["days_since_user_open"] == 1.875 and p3["opened_last_shift"] == 1.0
    assert p4["user_opens_1d"] == 1.0 and p4["opened_last_shift"] == 0.0  # a night, not a day shift
    assert _row(h, "p4", T0 + timedelta(hours=12))["opened_last_shift"] == 1.0  # tonight follows last night
    assert (p3["colleague_opens_1d"], p4["colleague_opens_1d"], p3["user_patients_7d"]) == (1.0, 0.0, 2.0)
    assert (p3["night"], _row(h, "p3", T0 + timedelta(hours=12))["night"]) == (0.0, 1.0)


def test_results_in_the_last_day_flagged_ones_and_those_since_the_user_last_looked() -> None:
    h = History()
    h.results["p5"] += [(T0 - timedelta(days=3), False), (T0 - timedelta(hours=2), True),
                        (T0 - timedelta(hours=1), True), (T0 + timedelta(hours=1), True)]
    h.opens["dr.a"].append((T0 - timedelta(days=2), "p5"))
    r = _row(h, "p5", T0)
    assert (r["result_1d"], r["abnormal_results_1d"], r["results_since_user_open"]) == (1.0, 2.0, 2.0)
    assert _row(h, "p5", T0 - timedelta(days=1))["result_1d"] == 0.0
