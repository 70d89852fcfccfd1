"""The outbox entry state table (pyclient.sync.TRANSITIONS): every move, legal and illegal."""

from __future__ import annotations

import itertools
from typing import Any, get_args

import pytest

from pyclient.protocol import MutationResult, PushResponse
from pyclient.sync import TRANSITIONS, EntryEvent, InvalidTransition, OutboxEntry, SyncMachine

STATES = ("new", "pending", "in_flight", "conflicted", "rejected")
EVENTS: tuple[str, ...] = get_args(EntryEvent)


def entry(state: str) -> tuple[SyncMachine, OutboxEntry]:
    m = SyncMachine(device_id="tab")
    e = OutboxEntry(
        entry_id="e1",
        seq=1,
        op="put",
        resource_type="Observation",
        id="o1",
        resource={"resourceType": "Observation", "id": "o1"},
        base_version=1,
        base_resource=None,
        priority=1,
        state=state if state != "new" else "pending",  # type: ignore[arg-type]
    )
    m._entries[e.entry_id] = e
    if state == "new":
        e.state = "new"  # type: ignore[assignment]
    return m, e


@pytest.mark.parametrize(("state", "event"), list(itertools.product(STATES, EVENTS)))
def test_every_move_is_either_in_the_table_or_refused(state: str, event: Any) -> None:
    m, e = entry(state)
    if (state, event) not in TRANSITIONS:
        with pytest.raises(InvalidTransition):
            m._move(e, event)
        assert e.state == state and m.entry("e1") is e  # nothing changed
        return
    m._move(e, event)
    target = TRANSITIONS[(state, event)]
    if target is None:
        assert m.entry("e1") is None  # left the outbox
    else:
        assert e.state == target


def test_every_state_but_new_can_leave_the_outbox() -> None:
    """No entry can get stuck: from each state some path ends in removal."""
    leaving = {s for (s, _ev), t in TRANSITIONS.items() if t is None}
    reach: dict[str, set[str]] = {
        s: {t for (a, _e), t in TRANSITIONS.items() if a == s and t} for s in STATES
    }
    for s in ("pending", "in_flight", "conflicted", "rejected"):
        seen, todo = set(), [s]
        while todo:
            cur = todo.pop()
            if cur in seen:
                continue
            seen.add(cur)
            todo.extend(reach[cur])
        assert seen & leaving, s


def test_a_push_answer_for_an_entry_not_in_flight_is_ignored_not_misapplied() -> None:
    """Duplicated answers are legal input; they must not drive an illegal move."""
    m = SyncMachine(device_id="tab")
    m.record_local_edit(
        now=0.0,
        mutation_id="m1",
        resource_type="Observation",
        id="o1",
        resource={"status": "final"},
        base_version=None,
        base_resource=None,
    )
    req = m.next_push(0.0)
    assert req is not None
    ok = PushResponse((MutationResult("m1", "applied", version_id=1, resource={"id": "o1"}),))
    m.on_push_response(0.0, req, ok)
    assert m.on_push_response(0.0, req, ok) == []  # the duplicate changes nothing
    assert m.entries == []
