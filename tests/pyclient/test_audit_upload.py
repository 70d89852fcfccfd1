"""Device audit upload rules (issue 10): a refused batch is never retried forever, never dropped.

A queue of device events with one the server refuses is replayed against a fake *decision* (the server's rule
is: refuse any batch containing the bad event): the good events all get through, the bad one is sent a bounded
number of times, then parked with the server's reason; nothing is deleted without the server holding it.
"""

from __future__ import annotations

from pyclient import audit_upload as au
from pyclient import auditlog


def _drive(queue: list[tuple[str, int]], bad: set[str], *, full: int = 8, max_steps: int = 500
           ) -> tuple[list[str], list[au.Parked], int, au.UploadState]:
    state, now, held, parked, sends = au.UploadState(), 1000.0, [], [], 0
    for _ in range(max_steps):
        if not queue:
            break
        if not au.may_upload(state, now):
            now = state.not_before  # the next sync after the wait
            continue
        batch = queue[:au.batch_size(state, full)]
        sends += 1
        refused = any(e in bad for e, _ in batch)
        out = au.on_result(state, status=403 if refused else 200,
                           reason="event 3: time is outside the device's lifetime" if refused else "",
                           sent=batch, full=full, now=now)
        assert not (set(out.delete) & bad), "a refused event is never deleted as if the server held it"
        held += out.delete
        parked += out.park
        gone = set(out.delete) | {p.eid for p in out.park}
        queue = [q for q in queue if q[0] not in gone]
        state = out.state
        if not out.again:
            now += 1
    return held, parked, sends, state


def test_one_refused_event_is_isolated_retried_a_bounded_number_of_times_and_parked() -> None:
    queue = [(f"e{i}", i) for i in range(1, 21)]
    held, parked, sends, state = _drive(queue, {"e3"})
    assert sorted(held, key=lambda e: int(e[1:])) == [f"e{i}" for i in range(1, 21) if i != 3]
    assert [p.eid for p in parked] == ["e3"] and "lifetime" in parked[0].reason
    assert sends <= 20  # halving + REFUSALS_BEFORE_PARK lone tries + the rest: never forever
    assert state.parked_total == 1 and state.batch == 0
    msg = au.parked_message(state)
    assert msg is not None and msg.startswith("One access record") and "lifetime" in msg


def test_a_lone_refusal_backs_off_and_counts() -> None:
    s = au.UploadState()
    out = au.on_result(s, status=403, reason="no", sent=[("e1", 1)], full=8, now=100.0)
    assert not out.park and not out.delete and out.state.refusals == 1
    assert out.state.not_before == 100.0 + au.BACKOFF_BASE_S and not au.may_upload(out.state, 120.0)
    out = au.on_result(out.state, status=403, reason="no", sent=[("e1", 1)], full=8, now=200.0)
    assert out.state.not_before == 200.0 + 2 * au.BACKOFF_BASE_S
    out = au.on_result(out.state, status=403, reason="no", sent=[("e1", 1)], full=8, now=400.0)
    assert [p.eid for p in out.park] == ["e1"] and out.again  # parked at the third refusal: the queue moves on


def test_offline_and_sign_in_do_not_count_server_errors_back_off_to_a_cap() -> None:
    s = au.UploadState()
    for status in (0, 401):
        assert au.on_result(s, status=status, reason="", sent=[("e1", 1)], full=8, now=5.0).state == s
    for _ in range(20):
        s = au.on_result(s, status=503, reason="", sent=[("e1", 1)], full=8, now=0.0).state
    assert s.not_before == au.BACKOFF_MAX_S and s.refusals == 0 and not s.parked  # a server error never parks
    assert au.on_result(s, status=429, reason="", sent=[("e1", 1)], full=8, now=0.0).state.errors == 21


def test_the_state_round_trips_and_a_damaged_one_only_loses_the_backoff() -> None:
    s = au.on_result(au.UploadState(refusals=2, batch=1), status=403, reason="why", sent=[("e9", 9)], full=8,
                     now=7.0).state
    assert au.UploadState.from_json(s.to_json()) == s
    assert au.UploadState.from_json("{not json") == au.UploadState()
    assert au.parked_message(au.UploadState()) is None


def test_a_rewrite_is_reported_once_per_held_checkpoint() -> None:
    held = auditlog.Checkpoint(10, "a" * 64, "", "2026-12-01T10:00:00Z", "k1", "")
    offered = auditlog.Checkpoint(50, "b" * 64, "", "", "k1", "")
    first = auditlog.violation_report(held, offered, "size 10 is not a prefix of size 50", None)
    assert first is not None and first["heldSize"] == "10" and first["offeredSize"] == "50"
    key = auditlog.violation_key(held, offered)
    later = auditlog.Checkpoint(90, "c" * 64, "", "", "k1", "")  # the next sync: same held, bigger log
    assert auditlog.violation_report(held, later, "size 10 is not a prefix of size 90", key) is None
    newer_held = auditlog.Checkpoint(95, "d" * 64, "", "", "k1", "")
    assert auditlog.violation_report(newer_held, later, "two different logs", key) is not None
