"""The sync state machine and the wire messages, driven the way the runner drives them."""

from __future__ import annotations

from typing import Any

import pytest

from pyclient.protocol import (
    Change,
    DropEntry,
    Mutation,
    MutationResult,
    ProtocolError,
    PullRequest,
    PullResponse,
    PushRequest,
    PushResponse,
    dumps,
    loads,
    parse_retry_after,
)
from pyclient.store import MemoryStore
from pyclient.sync import (
    Backoff,
    ConflictParked,
    DroppedWithPendingEdit,
    Effect,
    JsonCodec,
    MutationRejected,
    OutboxEntry,
    RecordDelete,
    RecordPut,
    RecordsClear,
    SyncMachine,
    to_store_ops,
)

from .simserver import SimServer


def res(rtype: str, rid: str, version: int | None = None, **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"resourceType": rtype, "id": rid, **fields}
    if version is not None:
        out["meta"] = {"versionId": str(version)}
    return out


def machine() -> SyncMachine:
    return SyncMachine(device_id="dev-1", backoff=Backoff(base=1.0, cap=60.0))


def edit(
    m: SyncMachine,
    mid: str,
    rtype: str,
    rid: str,
    resource: dict[str, Any] | None,
    base_version: int | None = None,
    base: dict[str, Any] | None = None,
    now: float = 0.0,
) -> list[Effect]:
    return m.record_local_edit(
        now=now,
        mutation_id=mid,
        resource_type=rtype,
        id=rid,
        resource=resource,
        base_version=base_version,
        base_resource=base,
    )


def applied(req: PushRequest, versions: dict[str, int]) -> PushResponse:
    return PushResponse(
        tuple(
            MutationResult(m.mutation_id, "applied", version_id=versions[m.mutation_id], resource=m.resource)
            for m in req.mutations
        )
    )


def page(*changes: Change, cursor: str = "c1", has_more: bool = False, **kw: Any) -> PullResponse:
    return PullResponse(changes=changes, cursor=cursor, has_more=has_more, **kw)


def change(rtype: str, rid: str, version: int, resource: dict[str, Any] | None, seq: int = 1) -> Change:
    return Change(seq, rtype, rid, version, resource is None, resource)


def puts(effects: list[Effect]) -> dict[tuple[str, str], RecordPut]:
    return {(e.resource_type, e.id): e for e in effects if isinstance(e, RecordPut)}


# --- outbox: squash, chain, priorities ----------------------------------------------


def test_repeated_edits_squash_into_one_mutation_with_the_original_base() -> None:
    m = machine()
    base = res("Patient", "p1", 3, name="Ann", gender="female")
    edit(m, "m1", "Patient", "p1", {**base, "name": "Anne"}, 3, base)
    edit(m, "m2", "Patient", "p1", {**base, "name": "Annie", "gender": "other"}, 99, None)
    req = m.next_push(0.0)
    assert req is not None and len(req.mutations) == 1
    mut = req.mutations[0]
    assert (mut.mutation_id, mut.base_version) == ("m1", 3)
    assert mut.resource is not None and mut.resource["name"] == "Annie" and mut.resource["gender"] == "other"


def test_edit_during_flight_queues_behind_and_never_changes_what_was_sent() -> None:
    m = machine()
    base = res("Patient", "p1", 1, name="Ann", gender="female")
    edit(m, "m1", "Patient", "p1", {**base, "name": "Anne"}, 1, base)
    first = m.next_push(0.0)
    assert first is not None
    effects = edit(m, "m2", "Patient", "p1", {**base, "name": "Anne", "gender": "other"}, 1, base)
    sent = first.mutations[0].resource
    assert sent is not None and sent["gender"] == "female"
    assert puts(effects)[("Patient", "p1")].resource["gender"] == "other"  # the UI shows the newest edit
    assert m.next_push(0.0) is None  # one mutation per resource in flight
    server_copy = {**base, "name": "Anne", "meta": {"versionId": "2"}}
    m.on_push_response(
        0.0, first, PushResponse((MutationResult("m1", "applied", version_id=2, resource=server_copy),))
    )
    second = m.next_push(0.0)
    assert second is not None
    mut = second.mutations[0]
    assert (mut.mutation_id, mut.base_version) == ("m2", 2)
    assert mut.resource == {**server_copy, "gender": "other"}


def test_create_then_delete_before_sending_leaves_nothing_to_send() -> None:
    m = machine()
    edit(m, "m1", "Observation", "o1", res("Observation", "o1", status="final"))
    effects = edit(m, "m2", "Observation", "o1", None)
    assert m.next_push(0.0) is None
    assert RecordDelete("Observation", "o1") in effects
    assert m.status().pending == 0


def test_medication_and_allergy_go_before_vitals_before_patient_before_notes() -> None:
    m = machine()
    for i, rtype in enumerate(
        [
            "DocumentReference",
            "Patient",
            "Observation",
            "MedicationRequest",
            "AllergyIntolerance",
            "Condition",
        ]
    ):
        edit(m, f"m{i}", rtype, f"r{i}", res(rtype, f"r{i}"))
    req = m.next_push(0.0, max_batch=4)
    assert req is not None
    assert [x.resource_type for x in req.mutations] == [
        "MedicationRequest",
        "AllergyIntolerance",
        "Observation",
        "Condition",
    ]
    m.on_push_failed(0.0, req, rng_value=0.0)
    later = m.next_push(0.1)
    assert later is not None and [x.resource_type for x in later.mutations] == [
        "Patient",
        "DocumentReference",
    ]


# --- retry ------------------------------------------------------------------------------


def test_failed_push_backs_off_exponentially_with_jitter() -> None:
    m = machine()
    edit(m, "m1", "Patient", "p1", res("Patient", "p1"))
    req = m.next_push(100.0)
    assert req is not None
    m.on_push_failed(100.0, req, rng_value=0.0)  # attempt 1: delay in [0.5, 1)
    assert m.next_push(100.49) is None
    req = m.next_push(100.5)
    assert req is not None
    m.on_push_failed(100.5, req, rng_value=0.99)  # attempt 2: delay in [1, 2)
    assert m.next_push(102.4) is None
    assert m.next_wake(101.0) == pytest.approx(100.5 + 1.0 + 0.99)
    assert m.next_push(102.5) is not None
    assert m.status().text.endswith("last attempt failed: network error")


def test_backoff_is_capped() -> None:
    assert Backoff(base=1.0, cap=60.0).delay(30, 0.999) < 60.0
    assert Backoff(base=1.0, cap=60.0).delay(30, 0.0) == 30.0


def test_retry_after_is_honoured_for_the_whole_queue() -> None:
    m = machine()
    edit(m, "m1", "Patient", "p1", res("Patient", "p1"))
    req = m.next_push(0.0)
    assert req is not None
    m.on_push_failed(0.0, req, rng_value=0.5, retry_after=30.0, error="HTTP 429")
    edit(m, "m2", "MedicationRequest", "mr1", res("MedicationRequest", "mr1"), now=1.0)
    assert m.next_push(31.0) is None  # 30 s + 5 % jitter: nothing, not even the new entry
    req2 = m.next_push(31.6)
    assert req2 is not None and {x.mutation_id for x in req2.mutations} == {"m1", "m2"}


def test_retry_after_header_forms() -> None:
    assert parse_retry_after("120", now=0.0) == 120.0
    # 1994-11-06T08:49:37Z is 784111777 seconds after the epoch.
    assert parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now=784111777 - 5) == 5.0
    assert parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now=784111777 + 50) == 0.0
    assert parse_retry_after("soon", now=0.0) is None
    assert parse_retry_after(None, now=0.0) is None


# --- push outcomes ------------------------------------------------------------------------


def test_rejected_mutation_is_kept_visible_and_does_not_block_the_queue() -> None:
    m = machine()
    edit(m, "m1", "MedicationRequest", "mr1", res("MedicationRequest", "mr1", status="active"))
    edit(m, "m2", "Patient", "p1", res("Patient", "p1"))
    req = m.next_push(0.0, max_batch=1)
    assert req is not None and req.mutations[0].mutation_id == "m1"
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"code": "forbidden", "diagnostics": "not in care team"}],
    }
    effects = m.on_push_response(0.0, req, PushResponse((MutationResult("m1", "rejected", outcome=outcome),)))
    assert MutationRejected("m1", "MedicationRequest", "mr1", "not in care team") in effects
    nxt = m.next_push(0.0)
    assert nxt is not None and [x.mutation_id for x in nxt.mutations] == ["m2"]
    st = m.status()
    assert (st.rejected, st.synced) == (1, False)
    assert "1 change rejected by the server" in st.text
    m.dismiss_rejected(entry_id="m1")
    assert m.status().rejected == 0


def test_server_conflict_is_parked_with_both_sides_and_resolved_by_a_new_mutation() -> None:
    m = machine()
    base = res("AllergyIntolerance", "a1", 1, criticality="low")
    edit(m, "m1", "AllergyIntolerance", "a1", {**base, "criticality": "high"}, 1, base)
    req = m.next_push(0.0)
    assert req is not None
    server = {**base, "criticality": "unable-to-assess", "meta": {"versionId": "2"}}
    conflict = {"path": "criticality", "base": "low", "ours": "unable-to-assess", "theirs": "high"}
    effects = m.on_push_response(
        0.0,
        req,
        PushResponse(
            (
                MutationResult(
                    "m1", "conflict", version_id=2, resource=server, conflict_id="c-9", conflicts=(conflict,)
                ),
            )
        ),
    )
    assert ConflictParked("m1", "AllergyIntolerance", "a1") in effects
    assert (
        puts(effects)[("AllergyIntolerance", "a1")].resource["criticality"] == "high"
    )  # local edit still shown
    assert m.next_push(10.0) is None  # parked, not retried
    [view] = m.conflicts()
    assert (view.server, view.server_version, view.conflict_id) == (server, 2, "c-9")
    assert view.local is not None and view.local["criticality"] == "high" and view.conflicts == (conflict,)
    assert m.status().conflicted == 1 and "1 conflict to review" in m.status().text
    m.resolve_conflict(now=1.0, entry_id="m1", resource={**server, "criticality": "high"}, mutation_id="m2")
    nxt = m.next_push(1.0)
    assert nxt is not None
    mut = nxt.mutations[0]
    assert (mut.mutation_id, mut.base_version, mut.supersedes) == ("m2", 2, "m1")
    assert m.conflicts() == []


def _head_in_flight_with_tail() -> tuple[SyncMachine, PushRequest, dict[str, Any]]:
    m = machine()
    base = res("Condition", "c1", 1, code="flu", severity="mild", note="n0")
    edit(m, "m1", "Condition", "c1", {**base, "severity": "severe"}, 1, base)
    req = m.next_push(0.0)
    assert req is not None
    edit(m, "m2", "Condition", "c1", {**base, "severity": "severe", "note": "n1"}, 1, base)
    return m, req, base


def test_edit_queued_behind_a_conflicted_mutation_joins_the_conflict() -> None:
    m, req, base = _head_in_flight_with_tail()
    server = {**base, "severity": "moderate", "meta": {"versionId": "2"}}
    effects = m.on_push_response(
        0.0, req, PushResponse((MutationResult("m1", "conflict", 2, server, "c-1", ({"path": "severity"},)),))
    )
    assert ConflictParked("m1", "Condition", "c1") in effects
    [view] = m.conflicts()
    assert view.local is not None and (view.local["severity"], view.local["note"]) == ("severe", "n1")
    assert [e.entry_id for e in m.entries] == ["m1"]
    assert m.next_push(10.0) is None


def test_edit_queued_behind_a_rejected_mutation_still_goes_and_keeps_both_changes() -> None:
    m, req, base = _head_in_flight_with_tail()
    m.on_push_response(0.0, req, PushResponse((MutationResult("m1", "rejected"),)))
    nxt = m.next_push(0.0)
    assert nxt is not None
    mut = nxt.mutations[0]
    assert (mut.mutation_id, mut.base_version) == ("m2", 1)
    assert mut.resource is not None and (mut.resource["severity"], mut.resource["note"]) == ("severe", "n1")
    assert m.status().rejected == 1


def test_server_change_seen_during_flight_is_merged_into_the_queued_edit() -> None:
    m, req, base = _head_in_flight_with_tail()
    other = {**base, "severity": "severe", "code": "influenza", "meta": {"versionId": "3"}}
    m.on_pull_response(0.0, m.next_pull(), page(change("Condition", "c1", 3, other)))
    mine = {**base, "severity": "severe", "meta": {"versionId": "2"}}
    effects = m.on_push_response(0.0, req, PushResponse((MutationResult("m1", "applied", 2, mine),)))
    shown = puts(effects)[("Condition", "c1")]
    assert (shown.resource["code"], shown.resource["note"]) == ("influenza", "n1")
    nxt = m.next_push(0.0)
    assert nxt is not None and nxt.mutations[0].base_version == 3


def test_duplicated_and_reordered_push_responses_are_harmless() -> None:
    m = machine()
    edit(m, "m1", "Patient", "p1", res("Patient", "p1", name="A"))
    req = m.next_push(0.0)
    assert req is not None
    resp = applied(req, {"m1": 1})
    first = m.on_push_response(0.0, req, resp)
    assert puts(first)
    again = m.on_push_response(1.0, req, resp)
    assert not [e for e in again if isinstance(e, RecordPut | RecordDelete)]
    assert m.status().synced


def test_replayed_old_ack_does_not_roll_back_a_newer_pulled_version() -> None:
    m = machine()
    base = res("Patient", "p1", 1, name="A", gender="male")
    edit(m, "m1", "Patient", "p1", {**base, "name": "B"}, 1, base)
    req = m.next_push(0.0)
    assert req is not None
    m.on_push_failed(0.0, req, rng_value=0.0)  # response lost; the server did apply it as v2
    newest = {**base, "name": "B", "gender": "female", "meta": {"versionId": "3"}}
    pull = m.next_pull()
    m.on_pull_response(1.0, pull, page(change("Patient", "p1", 3, newest)))
    retry = m.next_push(5.0)
    assert retry is not None
    stale = {**base, "name": "B", "meta": {"versionId": "2"}}
    effects = m.on_push_response(
        5.0, retry, PushResponse((MutationResult("m1", "applied", version_id=2, resource=stale),))
    )
    rec = puts(effects)[("Patient", "p1")]
    assert (rec.version, rec.resource) == (3, newest)


def test_synced_only_after_the_server_acknowledged() -> None:
    m = machine()
    assert not m.status().synced  # never talked to the server
    edit(m, "m1", "Patient", "p1", res("Patient", "p1"))
    assert m.status().text == "1 change waiting to sync"
    req = m.next_push(0.0)
    assert req is not None
    assert not m.status().synced  # in flight is not synced
    m.on_push_failed(0.0, req, rng_value=0.0)
    assert not m.status().synced
    req = m.next_push(10.0)
    assert req is not None
    m.on_push_response(10.0, req, applied(req, {"m1": 1}))
    st = m.status()
    assert st.synced and st.text == "Synced" and st.last_success == 10.0 and st.last_error is None


def test_missing_result_is_retried_not_lost() -> None:
    m = machine()
    edit(m, "m1", "Patient", "p1", res("Patient", "p1"))
    req = m.next_push(0.0)
    assert req is not None
    m.on_push_response(0.0, req, PushResponse(()))
    assert not m.status().synced and m.status().pending == 1
    assert m.next_push(10.0) is not None


# --- pull ---------------------------------------------------------------------------


def test_pull_replaces_clean_records_and_applies_tombstones() -> None:
    m = machine()
    p1 = res("Patient", "p1", 4, name="Z")
    effects = m.on_pull_response(
        0.0,
        m.next_pull(),
        page(change("Patient", "p1", 4, p1, 1), change("Observation", "o1", 2, None, 2), cursor="c2"),
    )
    assert RecordPut("Patient", "p1", 4, p1) in effects
    assert RecordDelete("Observation", "o1") in effects
    assert m.cursor == "c2" and m.next_pull() == PullRequest("c2", 1000)


def test_pull_rebases_a_pending_edit_when_the_merge_is_clean() -> None:
    m = machine()
    base = res("Patient", "p1", 1, name="Ann", gender="female")
    edit(m, "m1", "Patient", "p1", {**base, "name": "Anne"}, 1, base)
    incoming = {**base, "gender": "other", "meta": {"versionId": "2"}}
    effects = m.on_pull_response(0.0, m.next_pull(), page(change("Patient", "p1", 2, incoming)))
    shown = puts(effects)[("Patient", "p1")]
    assert shown.resource == {**incoming, "name": "Anne"} and shown.base == incoming
    req = m.next_push(0.0)
    assert req is not None
    assert req.mutations[0].base_version == 2 and req.mutations[0].resource == {**incoming, "name": "Anne"}


def test_pull_parks_a_conflicting_edit_and_keeps_both_sides() -> None:
    m = machine()
    base = res("Patient", "p1", 1, name="Ann")
    edit(m, "m1", "Patient", "p1", {**base, "name": "Anne"}, 1, base)
    incoming = {**base, "name": "Anna", "meta": {"versionId": "2"}}
    effects = m.on_pull_response(0.0, m.next_pull(), page(change("Patient", "p1", 2, incoming)))
    assert ConflictParked("m1", "Patient", "p1") in effects
    assert puts(effects)[("Patient", "p1")].resource["name"] == "Anne"  # the local edit is not overwritten
    [view] = m.conflicts()
    assert view.server == incoming and view.local is not None and view.local["name"] == "Anne"
    assert [c["path"] for c in view.conflicts] == ["name"]
    assert m.next_push(0.0) is None


def test_tombstone_of_a_locally_edited_record_is_a_conflict_not_a_loss() -> None:
    m = machine()
    base = res("Observation", "o1", 1, status="preliminary")
    edit(m, "m1", "Observation", "o1", {**base, "status": "final"}, 1, base)
    effects = m.on_pull_response(0.0, m.next_pull(), page(change("Observation", "o1", 2, None)))
    assert not [e for e in effects if isinstance(e, RecordDelete)]
    [view] = m.conflicts()
    assert view.server is None and view.local is not None and view.local["status"] == "final"


def test_drop_removes_clean_records_but_keeps_and_reports_pending_edits() -> None:
    m = machine()
    edit(m, "m1", "Patient", "p2", res("Patient", "p2", name="X"), 1, res("Patient", "p2"))
    effects = m.on_pull_response(
        0.0, m.next_pull(), page(drop=(DropEntry("Patient", "p1"), DropEntry("Patient", "p2")))
    )
    assert RecordDelete("Patient", "p1") in effects
    assert RecordDelete("Patient", "p2") not in effects
    assert DroppedWithPendingEdit("Patient", "p2") in effects
    assert m.status().pending == 1


def test_reset_clears_clean_records_but_not_edited_ones() -> None:
    m = machine()
    m.cursor = "c7"
    edit(m, "m1", "Patient", "p2", res("Patient", "p2", name="X"))
    effects = m.on_pull_response(0.0, m.next_pull(), page(reset=True, cursor="c0", has_more=True))
    assert effects[0] == RecordsClear(frozenset({("Patient", "p2")}))
    assert not m.caught_up


def test_stale_or_duplicated_pull_responses_are_ignored() -> None:
    m = machine()
    req = m.next_pull()
    m.on_pull_response(0.0, req, page(change("Patient", "p1", 2, res("Patient", "p1", 2)), cursor="c5"))
    old = page(change("Patient", "p1", 1, res("Patient", "p1", 1)), cursor="c3")
    assert m.on_pull_response(1.0, req, old) == []  # answers a request for a cursor we left
    assert m.cursor == "c5"


def test_the_next_page_can_be_fetched_before_this_one_is_written() -> None:
    """A pipelined pull asks for page n+1 while page n is sealed and written: the request it sends early is
    exactly what the machine asks for once the page is applied; the last page asks for nothing."""
    m = machine()
    req = m.next_pull()
    first = page(change("Patient", "p1", 1, res("Patient", "p1", 1)), cursor="c1", has_more=True)
    early = m.pull_ahead(first)
    assert early is not None and early.cursor == "c1"
    m.on_pull_response(0.0, req, first)
    assert m.next_pull() == early
    last = page(change("Patient", "p2", 1, res("Patient", "p2", 1)), cursor="c2")
    assert m.pull_ahead(last) is None
    reset = page(cursor="c0", has_more=True, reset=True)  # a reset page: its own cursor, never the old one
    assert m.pull_ahead(reset) == type(early)(cursor="c0", limit=m.pull_limit)


# --- persistence --------------------------------------------------------------------


def test_restored_outbox_never_squashes_into_a_possibly_sent_mutation() -> None:
    m = machine()
    base = res("Patient", "p1", 1, name="A")
    effects = edit(m, "m1", "Patient", "p1", {**base, "name": "B"}, 1, base)
    assert m.next_push(0.0) is not None  # crash right after sending
    store = MemoryStore()
    _run(store.apply(to_store_ops(effects, JsonCodec())))
    saved = [JsonCodec.open(blob) for _id, blob in _run(store.outbox_list())]
    again = SyncMachine.restore(device_id="dev-1", meta={}, outbox=saved)
    edit(again, "m2", "Patient", "p1", {**base, "name": "C"}, 1, base)
    req = again.next_push(0.0)
    assert req is not None and [x.mutation_id for x in req.mutations] == ["m1"]
    assert req.mutations[0].resource is not None and req.mutations[0].resource["name"] == "B"
    assert [e.entry_id for e in again.entries] == ["m1", "m2"]


def test_outbox_entry_round_trip_and_bad_entry() -> None:
    e = OutboxEntry(
        "m1",
        3,
        "put",
        "Patient",
        "p1",
        res("Patient", "p1"),
        2,
        res("Patient", "p1", 2),
        2,
        state="in_flight",
        attempts=2,
    )
    back = OutboxEntry.from_json(loads(dumps(e.to_json())))
    assert back.state == "pending" and back.sent and back.attempts == 2 and back.base_version == 2
    with pytest.raises(ProtocolError):
        OutboxEntry.from_json({"entryId": "x"})


def test_a_pull_page_lands_in_the_store_in_one_batch() -> None:
    # to_store_ops is seal_items -> seal -> store_ops: the very functions BrowserApp._commit runs
    # (tests/pyclient/test_store_ops.py), so this drives the path the browser takes, with JSON "sealing".
    m = machine()
    batches: list[list[Any]] = []

    class BatchStore(MemoryStore):
        async def apply(self, ops: Any) -> None:
            batches.append(list(ops))
            await super().apply(ops)

    store = BatchStore()
    base = res("Patient", "p1", 1, name="A")
    _run(
        store.apply(to_store_ops(edit(m, "m1", "Patient", "p1", {**base, "name": "B"}, 1, base), JsonCodec()))
    )
    effects = m.on_pull_response(
        0.0, m.next_pull(), page(change("Patient", "p9", 1, res("Patient", "p9", 1)), cursor="c1")
    )
    _run(store.apply(to_store_ops(effects, JsonCodec())))
    assert len(batches) == 2  # the edit, then the whole page: the record and its cursor together
    assert {type(op).__name__ for op in batches[1]} >= {"PutRecord", "PutMeta"}
    assert _run(store.meta_get("sync.cursor")) == "c1"
    rec = _run(store.get_record("Patient", "p1"))
    assert (
        rec is not None
        and JsonCodec.open(rec.blob)["name"] == "B"
        and JsonCodec.open(rec.base or b"") == base
    )


def test_against_the_simulated_server_end_to_end() -> None:
    server = SimServer()
    server.write(("Patient", "p1"), {"name": "A", "gender": "male"})
    a, b = SyncMachine(device_id="a"), SyncMachine(device_id="b")
    for mach in (a, b):
        mach.on_pull_response(0.0, mach.next_pull(), server.pull(mach.next_pull()))
    v1 = server.history[("Patient", "p1")][0]
    assert v1 is not None
    edit(a, "a1", "Patient", "p1", {**v1, "name": "B"}, 1, v1)
    edit(b, "b1", "Patient", "p1", {**v1, "gender": "female"}, 1, v1)
    for mach in (a, b):
        req = mach.next_push(0.0)
        assert req is not None
        mach.on_push_response(0.0, req, server.push(req))
    assert [r.status for r in server.results.values()] == ["applied", "merged"]
    _, cur = server.current(("Patient", "p1"))
    assert cur is not None and (cur["name"], cur["gender"]) == ("B", "female")


# --- wire messages ----------------------------------------------------------------------


def test_messages_round_trip_through_bytes() -> None:
    push = PushRequest(
        "dev",
        (
            Mutation("m1", "put", "Patient", "p1", None, res("Patient", "p1")),
            Mutation("m2", "delete", "Patient", "p2", 3, None, supersedes="m0"),
        ),
    )
    assert PushRequest.from_json(loads(dumps(push))) == push
    resp = PushResponse(
        (
            MutationResult(
                "m1",
                "conflict",
                4,
                res("Patient", "p1"),
                "c1",
                ({"path": "name", "base": None, "ours": "a", "theirs": "b"},),
            ),
        )
    )
    assert PushResponse.from_json(loads(dumps(resp))) == resp
    pull = page(
        change("Patient", "p1", 1, res("Patient", "p1")), drop=(DropEntry("Patient", "p2"),), reset=True
    )
    assert PullResponse.from_json(loads(dumps(pull))) == pull
    assert PullRequest.from_json({"cursor": None, "limit": 10}) == PullRequest(None, 10)


@pytest.mark.parametrize(
    ("cls", "data"),
    [
        (PullRequest, {"cursor": 5, "limit": 10}),
        (PullRequest, {"cursor": None, "limit": 0}),
        (PullRequest, {"cursor": None, "limit": True}),
        (PullResponse, {"changes": [], "hasMore": False}),
        (
            PullResponse,
            {
                "changes": [
                    {
                        "seq": 1,
                        "resourceType": "Patient",
                        "id": "p",
                        "versionId": 1,
                        "deleted": True,
                        "resource": {"resourceType": "Patient"},
                    }
                ],
                "cursor": "c",
                "hasMore": False,
            },
        ),
        (PullResponse, {"changes": {}, "cursor": "c", "hasMore": False}),
        (
            PushRequest,
            {
                "deviceId": "d",
                "mutations": [
                    {
                        "mutationId": "m",
                        "op": "patch",
                        "resourceType": "P",
                        "id": "p",
                        "baseVersion": None,
                        "resource": None,
                    }
                ],
            },
        ),
        (
            PushRequest,
            {
                "deviceId": "d",
                "mutations": [
                    {
                        "mutationId": "m",
                        "op": "put",
                        "resourceType": "Patient",
                        "id": "p",
                        "baseVersion": None,
                        "resource": {"resourceType": "Observation"},
                    }
                ],
            },
        ),
        (
            PushRequest,
            {
                "deviceId": "d",
                "mutations": [
                    {
                        "mutationId": "m",
                        "op": "delete",
                        "resourceType": "P",
                        "id": "p",
                        "baseVersion": None,
                        "resource": None,
                    }
                ],
            },
        ),
        (PushRequest, {"deviceId": "", "mutations": []}),
        (PushResponse, {"results": [{"mutationId": "m", "status": "done"}]}),
        (PushResponse, {"results": [{"mutationId": "m", "status": "applied"}]}),
        (PushResponse, [1, 2]),
        (
            PullResponse,
            {
                "changes": [
                    {
                        "seq": 2,
                        "resourceType": "P",
                        "id": "a",
                        "versionId": 1,
                        "deleted": True,
                        "resource": None,
                    },
                    {
                        "seq": 1,
                        "resourceType": "P",
                        "id": "b",
                        "versionId": 1,
                        "deleted": True,
                        "resource": None,
                    },
                ],
                "cursor": "c",
                "hasMore": False,
            },
        ),
        (
            PushRequest,
            {
                "deviceId": "d",
                "mutations": [
                    {
                        "mutationId": f"m{i}",
                        "op": "delete",
                        "resourceType": "P",
                        "id": "p",
                        "baseVersion": 1,
                        "resource": None,
                    }
                    for i in range(101)
                ],
            },
        ),
        (
            PushRequest,
            {
                "deviceId": "d",
                "mutations": [
                    {
                        "mutationId": "m",
                        "op": "delete",
                        "resourceType": "P",
                        "id": "p",
                        "baseVersion": 1,
                        "resource": None,
                    }
                ]
                * 2,
            },
        ),
    ],
)
def test_malformed_messages_raise_protocol_error(cls: Any, data: Any) -> None:
    with pytest.raises(ProtocolError):
        cls.from_json(data)


def test_invalid_json_bytes_raise_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        loads(b"\xff{")
    with pytest.raises(ProtocolError):
        loads(b'{"a": ')


def _run(coro: Any) -> Any:
    try:
        while True:
            coro.send(None)
    except StopIteration as stop:
        return stop.value
