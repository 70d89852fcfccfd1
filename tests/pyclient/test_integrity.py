"""Store integrity rules (pyclient/integrity.py): row MACs, manifests, patient binding, outbox checks."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyclient import integrity as ig
from pyclient.store import (
    ClearRecords,
    DeleteOutbox,
    DeleteRecord,
    PutMeta,
    PutOutbox,
    PutRecord,
    StoredRecord,
    StoreOp,
)
from pyclient.sync import RecordDelete, RecordPut

KEY = ig.store_key(bytes(range(32)))
A, B = "pat-a", "pat-b"
TA, TB = "p:aaaa", "p:bbbb"


def mac(t: str = "Observation", i: str = "o1", v: int = 2, tokens: tuple[str, ...] = (TA,),
        blob: bytes = b"sealed", base: bytes | None = None) -> str:
    return ig.record_mac(KEY, resource_type=t, id=i, version=v, tokens=tokens, blob=blob, base=base)


def obs(i: str, pid: str = A) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": i, "subject": {"reference": f"Patient/{pid}"}}


def test_row_mac_covers_every_plaintext_field() -> None:
    ref = mac()
    assert mac() == ref and len(ref) == 32
    assert mac(tokens=(TA, TA)) == ref  # tokens compare as a set, like the multi-entry index
    for changed in (mac(t="Condition"), mac(i="o2"), mac(v=1), mac(tokens=(TB,)), mac(blob=b"sealeD"),
                    mac(base=b"sealed")):
        assert changed != ref
    # swapping blob and base (a pending edit and its merge base) breaks it
    assert mac(blob=b"x", base=b"y") != mac(blob=b"y", base=b"x")
    assert ig.record_mac(ig.store_key(bytes(32)), resource_type="Observation", id="o1", version=2, tokens=(TA,),
                         blob=b"sealed", base=None) != ref  # another device's key
    assert ig.mac_ok(ref, ref) and not ig.mac_ok(ref, None) and not ig.mac_ok(ref, mac(v=3))


def test_outbox_mac_binds_entry_id_and_blob() -> None:
    m = ig.outbox_mac(KEY, entry_id="e1", blob=b"b")
    assert m != ig.outbox_mac(KEY, entry_id="e2", blob=b"b") != ig.outbox_mac(KEY, entry_id="e1", blob=b"c")


def _view(i: str, v: int, res: dict[str, Any] | None, *, ok: bool = True, t: str = "Observation") -> ig.RowView:
    return ig.RowView(t, i, v, ok, res)


def test_a_record_relinked_to_another_patient_is_never_shown_there() -> None:
    manifest_b = ig.Manifest({("Patient", B): 1})
    rows = [_view(B, 1, {"resourceType": "Patient", "id": B}, t="Patient"),
            _view("o1", 2, obs("o1", A), ok=True)]  # even with a forged MAC, it names patient A
    good, failures = ig.check_chart(patient_id=B, rows=rows, manifest=manifest_b)
    assert [g["id"] for g in good] == [B]
    assert [(f.id, f.reason) for f in failures] == [("o1", "wrong-patient")]
    rows[1] = _view("o1", 2, obs("o1", A), ok=False)  # the tok was edited: the row MAC fails first
    assert [f.reason for f in ig.check_chart(patient_id=B, rows=rows, manifest=manifest_b)[1]] == ["row-mac"]


def test_deleted_rolled_back_and_unlisted_records_are_failures() -> None:
    manifest = ig.Manifest({("Patient", A): 1, ("Observation", "o1"): 3, ("Observation", "o2"): 1,
                            ("AllergyIntolerance", "al1"): 1})
    rows = [_view(A, 1, {"resourceType": "Patient", "id": A}, t="Patient"),
            _view("o1", 2, obs("o1")),  # an older copy restored with its older version (and its valid old MAC)
            _view("o2", 1, obs("o2")),
            _view("o9", 1, obs("o9"))]  # a record this device never listed (e.g. a deleted one restored)
    good, failures = ig.check_chart(patient_id=A, rows=rows, manifest=manifest)
    assert sorted(g["id"] for g in good) == sorted([A, "o2"])
    assert {(f.id, f.reason, f.version) for f in failures} == {
        ("o1", "rolled-back", 3), ("o9", "not-in-manifest", 0), ("al1", "missing", 1)}


def test_unreadable_rows_and_missing_manifest() -> None:
    rows = [_view(A, 1, {"resourceType": "Patient", "id": A}, t="Patient"), _view("o1", 1, None)]
    good, failures = ig.check_chart(patient_id=A, rows=rows, manifest=ig.Manifest({("Patient", A): 1,
                                                                                  ("Observation", "o1"): 1}))
    assert [g["id"] for g in good] == [A] and [(f.id, f.reason) for f in failures] == [("o1", "unreadable")]
    good, failures = ig.check_chart(patient_id=A, rows=rows, manifest=None)
    assert good == [] and {f.reason for f in failures} == {"manifest", "unreadable"}
    assert ig.check_chart(patient_id=A, rows=[], manifest=None) == ([], [])


def test_plan_manifests_moves_adds_and_removes_entries() -> None:
    cur = {TA: ig.Manifest({("Observation", "o1"): 1, ("Observation", "o2"): 1}, generation=4)}
    planned = ig.plan_manifests(cur, [
        ig.RowChange("Observation", "o1", (TA,), (TA,), 2),  # new version
        ig.RowChange("Observation", "o2", (TA,), (TB,), 1),  # moved to another patient (a legitimate edit)
        ig.RowChange("Observation", "o3", (), (TB,), 1),  # created
    ])
    assert planned[TA].entries == {("Observation", "o1"): 2} and planned[TA].generation == 5
    assert planned[TB].entries == {("Observation", "o2"): 1, ("Observation", "o3"): 1}
    assert planned[TB].generation == 1
    gone = ig.plan_manifests(planned, [ig.RowChange("Observation", "o1", (TA,), (), None)])
    assert gone[TA].entries == {}
    m = planned[TB]
    assert ig.Manifest.from_json(m.to_json(), m.generation).entries == m.entries
    with pytest.raises(ValueError):
        ig.Manifest.from_json({"resourceType": "Patient"}, 1)


def test_outbox_checks_squash_rollback_deletion_and_corruption() -> None:
    m = ig.plan_outbox_manifest(ig.OutboxManifest(), {"e1": b"edit-1", "e2": b"edit-2-squashed-later"}, [])
    rows = [("e1", b"edit-1", True), ("e2", b"edit-2-earlier", True)]  # e2 restored to its earlier blob
    ok, failures = ig.check_outbox(rows=rows, manifest=m)
    assert ok == ["e1"] and [(f.id, f.reason) for f in failures] == [("e2", "rolled-back")]
    ok, failures = ig.check_outbox(rows=[("e2", b"edit-2-squashed-later", False)], manifest=m)
    assert ok == [] and {(f.id, f.reason) for f in failures} == {("e2", "row-mac"), ("e1", "missing")}
    ok, failures = ig.check_outbox(rows=[("e3", b"x", True)], manifest=m)
    assert [(f.id, f.reason) for f in failures] == [("e3", "not-in-manifest"), ("e1", "missing"), ("e2", "missing")]
    # no verifiable manifest: entries that verify on their own are kept (an edit is never dropped silently)
    ok, failures = ig.check_outbox(rows=rows, manifest=None)
    assert ok == ["e1", "e2"] and [f.reason for f in failures] == ["manifest"]
    after = ig.plan_outbox_manifest(m, {"e3": b"x"}, ["e1"])
    assert set(after.entries) == {"e2", "e3"} and after.generation == m.generation + 1


def test_failures_roundtrip_without_phi() -> None:
    f = ig.Failure("Observation", "o1", "rolled-back", 3)
    assert ig.Failure.from_json(f.to_json()) == f
    assert set(f.to_json()) == {"resourceType", "id", "reason", "version"}


def test_patient_ref_and_ref_tokens() -> None:
    assert ig.patient_ref({"resourceType": "Patient", "id": A}) == A
    assert ig.patient_ref({"resourceType": "AllergyIntolerance", "patient": {"reference": f"Patient/{B}"}}) == B
    assert ig.patient_ref({"resourceType": "Practitioner", "id": "x"}) is None
    assert ig.ref_tokens(["n:abc", TB, TA, TA]) == [TA, TB]


def test_manifests_are_stored_uncompressed_and_read_back_by_the_record_codec() -> None:
    from pyclient.compress import decode_record

    m = ig.Manifest({("Observation", "o1"): 2}, generation=3)
    blob = ig.encode_manifest(m.to_json())
    assert blob[0] == 0x00
    assert ig.Manifest.from_json(decode_record(blob), 3).entries == m.entries


def _obs_ids(n: int) -> dict[tuple[str, str], int]:
    return {("Observation", f"{k:08x}-0000-4000-8000-000000000000"): 1 for k in range(n)}


def test_a_sealed_manifest_gives_a_size_class_not_the_record_count() -> None:
    """PROTOCOL.md 4.4: a copied store shows each patient manifest's ciphertext length; padded to powers of two
    from 512 bytes, 1 and 6 records look alike, and the exact count is never readable from the length."""
    from pyclient.compress import decode_record

    sizes = {n: len(ig.encode_manifest(ig.Manifest(_obs_ids(n), 1).to_json())) for n in range(0, 40)}
    assert {sizes[n] for n in range(0, 7)} == {512}
    assert all(s & (s - 1) == 0 and s >= 512 for s in sizes.values())  # only power-of-two sizes
    assert len(set(sizes.values())) <= 4 and sizes[39] <= 4096
    for n in (0, 7, 39):  # padding is invisible to the reader (trailing JSON whitespace)
        m = ig.Manifest(_obs_ids(n), 5)
        assert ig.Manifest.from_json(decode_record(ig.encode_manifest(m.to_json())), 0) == m
    outbox = ig.encode_manifest(ig.OutboxManifest({"e1": "d"}, 1).to_json())
    assert len(outbox) < 512  # the outbox's rows already show how many entries it has


def test_the_manifest_generation_is_sealed_and_v1_manifests_still_read() -> None:
    m = ig.Manifest({("Observation", "o1"): 2}, generation=7)
    assert ig.Manifest.from_json(m.to_json(), ig.MANIFEST_ROW_VERSION).generation == 7
    v1 = {"resourceType": ig.MANIFEST_TYPE, "v": 1, "entries": [["Observation", "o1", 2]]}  # store v1: no "g"
    assert ig.Manifest.from_json(v1, 4) == ig.Manifest({("Observation", "o1"): 2}, 4)


def test_an_unopenable_old_owner_never_creates_a_manifest() -> None:
    """A tampered owner token opens to a random patient token: the planner must not write a manifest for it."""
    cur = {TA: ig.Manifest({("Observation", "o1"): 1}, generation=2)}
    planned = ig.plan_manifests(cur, [ig.RowChange("Observation", "o1", ("p:0123",), (TA,), 2)])
    assert set(planned) == {TA} and planned[TA].entries == {("Observation", "o1"): 2}
    moved = ig.plan_manifests(cur, [ig.RowChange("Observation", "o1", (TA,), (TB,), 1)])
    assert moved[TA].entries == {} and moved[TB].entries == {("Observation", "o1"): 1}


def test_upgrading_a_v1_row_replaces_only_its_patient_token() -> None:
    v1 = ("b:1a2", "n:3fa", TA)
    assert ig.upgrade_tokens(v1, ["o:sealed"]) == ("b:1a2", "n:3fa", "o:sealed")
    assert ig.upgrade_tokens(("n:3fa",), []) == ("n:3fa",)
    assert not ig.ref_tokens(ig.upgrade_tokens(v1, ["o:sealed"]))


# -- store operations -> row changes (the manifest planner's input; browser_app calls these on every commit) ---


def _owner_refs(tokens: Sequence[str]) -> tuple[str, ...]:
    """Test stand-in for the adapter's owner-token opening: ``o:<ref>`` points to patient token ``<ref>``."""
    return tuple(sorted({t[2:] for t in tokens if t.startswith("o:")}))


def _put(i: str, v: int, *refs: str, t: str = "Observation") -> PutRecord:
    return PutRecord(StoredRecord(t, i, v, b"blob"), tuple(f"o:{r}" for r in refs) + ("s:search",))


def test_row_changes_from_a_commit() -> None:
    ops: list[StoreOp] = [
        _put("o1", 3, TB),  # stored under TA: moves
        _put("o2", 1, TA),  # new row
        _put("o2", 2, TB),  # put twice in one batch: the second starts from the first
        DeleteRecord("Observation", "o3"),  # stored under TA
        DeleteRecord("Observation", "o9"),  # not stored
        PutOutbox("e1", b"x"),
        DeleteOutbox("e0"),
        PutMeta("k", "v"),
        _put("o1", 4, TB),
        DeleteRecord("Observation", "o3"),  # deleted above: nothing left to remove
        _put("o3", 5, TA),  # re-created: a new row
    ]
    need = ig.row_meta_needed(ops)
    assert need == [("Observation", i) for i in ("o1", "o2", "o2", "o3", "o9", "o1", "o3", "o3")]
    assert ig.row_meta_needed(ops, lambda _t, i: i != "o2") == [
        ("Observation", i) for i in ("o1", "o3", "o9", "o1", "o3", "o3")]
    metas: dict[ig.RowKey, ig.RowMeta | None] = {
        ("Observation", "o1"): (2, ("o:" + TA, "s:x"), "m1"), ("Observation", "o2"): None,
        ("Observation", "o3"): (1, ("o:" + TA,), "m3"), ("Observation", "o9"): None}
    got = ig.row_changes(ops, metas, _owner_refs)
    assert got.rows == [
        ig.RowChange("Observation", "o1", (TA,), (TB,), 3),
        ig.RowChange("Observation", "o2", (), (TA,), 1),
        ig.RowChange("Observation", "o2", (TA,), (TB,), 2),
        ig.RowChange("Observation", "o3", (TA,), (), None),
        ig.RowChange("Observation", "o9", (), (), None),
        ig.RowChange("Observation", "o1", (TB,), (TB,), 4),
        ig.RowChange("Observation", "o3", (), (), None),
        ig.RowChange("Observation", "o3", (), (TA,), 5),
    ]
    assert got.outbox_puts == {"e1": b"x"} and got.outbox_deletes == ["e0"] and not got.cleared
    assert got.written() == [("Observation", i) for i in ("o1", "o2", "o2", "o1", "o3")]
    assert ig.row_changes([PutMeta("k", "v")], {}, _owner_refs) == ig.StoreOpChanges([], {}, [], False)


def test_row_changes_after_a_pull_reset() -> None:
    keep = frozenset({("Observation", "k2"), ("Condition", "k1"), ("Observation", "gone")})
    ops: list[StoreOp] = [ClearRecords(keep), _put("n1", 5, TA), DeleteRecord("Observation", "n2")]
    # the rows it keeps are read (sorted) even if "seen" says they were never written: it knows the old store
    need = ig.row_meta_needed(ops, lambda _t, _i: False)
    assert need == [("Observation", "n1"), ("Observation", "n2"),
                    ("Condition", "k1"), ("Observation", "gone"), ("Observation", "k2")]
    metas: dict[ig.RowKey, ig.RowMeta | None] = {
        ("Observation", "n1"): (1, ("o:" + TB,), None), ("Observation", "n2"): (1, ("o:" + TB,), None),
        ("Condition", "k1"): (7, ("o:" + TA,), None), ("Observation", "gone"): None,
        ("Observation", "k2"): (3, ("o:" + TB,), None)}
    got = ig.row_changes(ops, metas, _owner_refs)
    assert got.cleared
    assert got.rows == [
        ig.RowChange("Condition", "k1", (), (TA,), 7),  # kept rows are listed again, at their stored version
        ig.RowChange("Observation", "k2", (), (TB,), 3),
        ig.RowChange("Observation", "n1", (), (TA,), 5),  # after a reset a put is a new row
        ig.RowChange("Observation", "n2", (), (), None),  # not kept: the reset removed it and its manifest
    ]


def test_a_kept_row_put_again_with_another_patient_leaves_the_old_manifest() -> None:
    """A reset keeps a row (an edit still pending) and the same page puts it again under another patient: the
    old patient's manifest must not keep listing it (it would then name someone else: a false alarm)."""
    k = ("Observation", "k1")
    ops: list[StoreOp] = [ClearRecords(frozenset({k})), _put("k1", 4, TB), _put("n1", 1, TA), _put("n1", 2, TB)]
    metas: dict[ig.RowKey, ig.RowMeta | None] = {k: (3, ("o:" + TA,), None), ("Observation", "n1"): None}
    got = ig.row_changes(ops, metas, _owner_refs)
    planned = ig.plan_manifests({}, got.rows)
    assert planned[TA].entries == {}
    assert planned[TB].entries == {k: 4, ("Observation", "n1"): 2}


_KEYS = [("Observation", f"o{i}") for i in range(4)]
_REFS = ["p:1", "p:2", "p:3"]
_op = st.one_of(
    st.builds(lambda k, v, refs: PutRecord(StoredRecord(k[0], k[1], v, b""), tuple(f"o:{r}" for r in refs)),
              st.sampled_from(_KEYS), st.integers(1, 9), st.lists(st.sampled_from(_REFS), max_size=2)),
    st.builds(lambda k: DeleteRecord(*k), st.sampled_from(_KEYS)),
)


@settings(max_examples=300)
@given(before=st.dictionaries(st.sampled_from(_KEYS),
                              st.tuples(st.integers(1, 9), st.lists(st.sampled_from(_REFS), max_size=2))),
       ops=st.lists(_op, max_size=8), seen_all=st.booleans(),
       reset=st.none() | st.frozensets(st.sampled_from(_KEYS)))
def test_planned_manifests_equal_manifests_rebuilt_from_the_rows(
        before: dict[ig.RowKey, tuple[int, list[str]]], ops: list[StoreOp], seen_all: bool,
        reset: frozenset[ig.RowKey] | None) -> None:
    def manifests(rows: Mapping[ig.RowKey, tuple[int, Sequence[str]]]) -> dict[str, dict[ig.RowKey, int]]:
        out: dict[str, dict[ig.RowKey, int]] = {}
        for k, (v, refs) in rows.items():
            for r in refs:
                out.setdefault(r, {})[k] = v
        return out

    rows = {k: (v, tuple(f"o:{r}" for r in refs)) for k, (v, refs) in before.items()}
    current = {tok: ig.Manifest(entries, 1) for tok, entries in manifests(
        {k: (v, _owner_refs(t)) for k, (v, t) in rows.items()}).items()}
    # "seen": every stored row went through this tab, so rows not in the store need not be read
    need = ig.row_meta_needed(ops, (lambda t, i: (t, i) in rows) if seen_all else None)
    got = ig.row_changes(ops, {k: (rows[k][0], rows[k][1], None) if k in rows else None for k in need},
                         _owner_refs)
    if reset is not None:  # a pull reset: the rows it keeps stay, every manifest is dropped (browser_integrity)
        ops = [ClearRecords(reset), *ops]
        need = ig.row_meta_needed(ops)
        got = ig.row_changes(ops, {k: (rows[k][0], rows[k][1], None) if k in rows else None for k in need},
                             _owner_refs)
        rows = {k: r for k, r in rows.items() if k in reset}
        current = {}
    planned = ig.plan_manifests(current, got.rows)
    after = dict(rows)
    for op in ops:
        if isinstance(op, PutRecord):
            after[(op.record.resource_type, op.record.id)] = (op.record.version, op.tokens or ())
        elif isinstance(op, DeleteRecord):
            after.pop((op.resource_type, op.id), None)
    merged = {tok: m.entries for tok, m in {**current, **planned}.items() if m.entries}
    assert merged == manifests({k: (v, _owner_refs(t)) for k, (v, t) in after.items()})
    # every row the batch creates is marked seen (a Bloom filter of rows that may exist: a put then deleted stays)
    # (after a reset the rows it keeps are written again too: listed anew in the emptied manifests)
    assert set(got.written()) == {(op.record.resource_type, op.record.id) for op in ops if isinstance(op, PutRecord)
                                  } | (set(rows) if reset is not None else set())
    assert set(after) - set(rows) <= set(got.written())


def test_rows_outside_a_chart_are_shown_only_if_they_verify_open_and_are_the_record_named() -> None:
    rows = [
        _view("o1", 2, obs("o1")),
        _view("o2", 3, obs("o2"), ok=False),  # MAC fails: it does not matter that it opens
        _view("o3", 4, None),
        _view("o4", 5, obs("o5")),  # another record's blob under this row
        _view("o6", 1, {"resourceType": "Condition", "id": "o6"}),
        _view("o7", 1, obs("o7", B)),  # no manifest here: the patient is not checked
    ]
    good, failures = ig.check_rows(rows)
    assert [g["id"] for g in good] == ["o1", "o7"]
    assert failures == [ig.Failure("Observation", "o2", "row-mac", 0), ig.Failure("Observation", "o3", "unreadable", 4),
                        ig.Failure("Observation", "o4", "wrong-patient", 0),
                        ig.Failure("Observation", "o6", "wrong-patient", 0)]
    assert ig.check_rows([]) == ([], [])


# -- quarantine and the anti-rollback exchange (the browser adapter's pure parts, issue 11 item 8) -------------


def _q(t: str, i: str, patient: str | None, reason: str = "row-mac") -> dict[str, Any]:
    return {**ig.Failure(t, i, reason).to_json(), "patient": patient}  # type: ignore[arg-type]


QUARANTINE = {
    ("Observation", "o1"): _q("Observation", "o1", A),
    ("Observation", "o2"): _q("Observation", "o2", A, "missing"),
    ("Condition", "c1"): _q("Condition", "c1", A),
    (ig.MANIFEST_TYPE, A): _q(ig.MANIFEST_TYPE, A, A, "manifest"),
    (ig.MANIFEST_TYPE, B): _q(ig.MANIFEST_TYPE, B, B, "manifest"),  # none of B's records left: settled
    ("OutboxEntry", "e1"): _q("OutboxEntry", "e1", None, "unreadable"),
}


def test_quarantine_round_trips_through_its_meta_json_in_type_id_order() -> None:
    raw = ig.quarantine_to_json(QUARANTINE)
    assert [(q["resourceType"], q["id"]) for q in json.loads(raw)] == sorted(QUARANTINE)
    assert ig.quarantine_from_json(raw) == QUARANTINE
    assert ig.quarantine_from_json(None) == {} and ig.quarantine_from_json("") == {}


def test_a_manifest_failure_is_settled_once_none_of_its_patients_records_is_quarantined() -> None:
    assert ig.settled_manifest_failures(QUARANTINE) == [(ig.MANIFEST_TYPE, B)]
    rest = {k: v for k, v in QUARANTINE.items() if k[0] not in ("Observation", "Condition")}
    assert sorted(ig.settled_manifest_failures(rest)) == [(ig.MANIFEST_TYPE, A), (ig.MANIFEST_TYPE, B)]


def test_quarantine_notice_counts_a_patients_records_by_type_and_names_no_content() -> None:
    assert ig.quarantine_notice(QUARANTINE, A) == {"message": ig.INTEGRITY_TEXT, "count": 3,
                                                  "byType": {"Observation": 2, "Condition": 1}}
    # only the manifest failed: the chart still says so, with no records counted
    assert ig.quarantine_notice(QUARANTINE, B) == {"message": ig.INTEGRITY_TEXT, "count": 0, "byType": {}}
    assert ig.quarantine_notice(QUARANTINE, "pat-c") is None


def test_verify_exchange_sends_server_versions_of_rows_neither_quarantined_nor_pending() -> None:
    assert ig.quarantined_records(QUARANTINE) == {("Observation", "o1"), ("Observation", "o2"), ("Condition", "c1")}
    page = [("Observation", "o1", 3), ("Observation", "o3", 2), ("Observation", "o4", 0), ("Patient", A, 5),
            ("Condition", "c2", 1)]
    held = ig.verify_held(page, quarantined=ig.quarantined_records(QUARANTINE),
                          pending=lambda t, i: (t, i) == ("Condition", "c2"))
    assert held == [["Observation", "o3", 2], ["Patient", A, 5]]


def test_verify_answer_becomes_puts_and_deletes_except_over_pending_edits() -> None:
    res = {"resourceType": "Observation", "id": "o3", "meta": {"versionId": "4"}}
    answer = {
        "changes": [{"resourceType": "Observation", "id": "o3", "versionId": "4", "resource": res},
                    {"resourceType": "Observation", "id": "o5", "versionId": 2, "deleted": True},
                    {"resourceType": "Observation", "id": "o6", "versionId": 2, "resource": None},
                    {"resourceType": "Patient", "id": A, "versionId": 9, "resource": {"id": A}}],  # pending
        "gone": [{"resourceType": "Observation", "id": "o1"},  # quarantined: removed
                 {"resourceType": "Observation", "id": "o9"},  # not quarantined: the pull's drop, not this
                 {"resourceType": "Condition", "id": "c1"}],  # quarantined but pending: kept
        "stale": 2,
    }
    effects, stale = ig.verify_effects(answer, quarantine=QUARANTINE,
                                       pending=lambda t, i: (t, i) in {("Patient", A), ("Condition", "c1")})
    assert effects == [RecordPut("Observation", "o3", 4, res), RecordDelete("Observation", "o5"),
                       RecordDelete("Observation", "o6"), RecordDelete("Observation", "o1")]
    assert stale == 2
    assert ig.verify_effects({}, quarantine={}, pending=lambda t, i: False) == ([], 0)
