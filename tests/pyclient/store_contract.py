"""Behaviour every :class:`pyclient.store.Store` backend must have.

Plain ``async def check_xxx(store)`` functions taking an EMPTY store, listed in
``CHECKS``, so any async harness can run them: pytest with a coroutine stepper
(CPython, Pyodide) and later the IndexedDB store in Chromium.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pyclient.store import (
    ClearRecords,
    DeleteOutbox,
    DeleteRecord,
    PutMeta,
    PutOutbox,
    PutRecord,
    StoredRecord,
    StoreError,
)


def rec(rid: str, version: int = 1, rtype: str = "Patient", base: bytes | None = None) -> StoredRecord:
    return StoredRecord(rtype, rid, version, f"sealed:{rtype}/{rid}/{version}".encode(), base)


async def check_record_round_trip(store: Any) -> None:
    assert await store.get_record("Patient", "p1") is None
    r = rec("p1", 3, base=b"\x00base\xff")
    await store.put_record(r)
    assert await store.get_record("Patient", "p1") == r
    r2 = rec("p1", 4)
    await store.put_record(r2)
    assert await store.get_record("Patient", "p1") == r2  # replaced, base cleared
    await store.delete_record("Patient", "p1")
    assert await store.get_record("Patient", "p1") is None
    await store.delete_record("Patient", "absent")  # deleting nothing is fine


async def check_list_by_type_sorted_by_id(store: Any) -> None:
    for rid in ("b", "a", "c"):
        await store.put_record(rec(rid))
    await store.put_record(rec("z", rtype="Observation"))
    assert [r.id for r in await store.list_records("Patient")] == ["a", "b", "c"]
    assert [r.id for r in await store.list_records("Observation")] == ["z"]
    assert await store.list_records("Condition") == []


async def check_token_index_is_multi_entry(store: Any) -> None:
    await store.put_record(rec("p1"), ["tok-ann", "tok-1970"])
    await store.put_record(rec("p2"), ["tok-ann"])
    await store.put_record(rec("o1", rtype="Observation"), ["tok-ann"])
    assert await store.lookup_token("tok-ann") == [
        ("Observation", "o1"),
        ("Patient", "p1"),
        ("Patient", "p2"),
    ]
    assert await store.lookup_token("tok-ann", "Patient") == [("Patient", "p1"), ("Patient", "p2")]
    assert await store.lookup_token("tok-1970") == [("Patient", "p1")]
    assert await store.lookup_token("nothing") == []
    await store.put_record(rec("p1", 2))  # tokens=None keeps the tokens
    assert await store.lookup_token("tok-1970") == [("Patient", "p1")]
    await store.put_record(rec("p1", 3), ["tok-anne"])  # a new list replaces them
    assert await store.lookup_token("tok-1970") == []
    assert await store.lookup_token("tok-ann", "Patient") == [("Patient", "p2")]
    await store.delete_record("Patient", "p2")
    assert await store.lookup_token("tok-ann", "Patient") == []


async def check_outbox_keeps_first_insertion_order(store: Any) -> None:
    await store.outbox_put("m2", b"two")
    await store.outbox_put("m1", b"one")
    await store.outbox_put("m3", b"three")
    await store.outbox_put("m2", b"two-updated")
    assert await store.outbox_list() == [("m2", b"two-updated"), ("m1", b"one"), ("m3", b"three")]
    assert await store.outbox_get("m1") == b"one"
    await store.outbox_delete("m1")
    assert await store.outbox_get("m1") is None
    assert [i for i, _ in await store.outbox_list()] == ["m2", "m3"]


async def check_meta(store: Any) -> None:
    assert await store.meta_get("sync.cursor") is None
    await store.meta_put("sync.cursor", "c42")
    await store.meta_put("sync.cursor", "c43")
    assert await store.meta_get("sync.cursor") == "c43"
    await store.meta_put("sync.cursor", None)
    assert await store.meta_get("sync.cursor") is None


async def check_apply_writes_a_batch(store: Any) -> None:
    await store.put_record(rec("old"))
    await store.outbox_put("m0", b"done")
    await store.apply(
        [
            PutRecord(rec("p1", 2), ("t1",)),
            PutRecord(rec("p2", 5, base=b"b")),
            DeleteRecord("Patient", "old"),
            PutOutbox("m1", b"entry"),
            DeleteOutbox("m0"),
            PutMeta("sync.cursor", "c9"),
        ]
    )
    assert [r.id for r in await store.list_records("Patient")] == ["p1", "p2"]
    assert await store.lookup_token("t1") == [("Patient", "p1")]
    assert await store.outbox_list() == [("m1", b"entry")]
    assert await store.meta_get("sync.cursor") == "c9"


async def check_apply_is_all_or_nothing(store: Any) -> None:
    await store.put_record(rec("p1", 1), ["keep"])
    await store.meta_put("sync.cursor", "c1")
    bad = StoredRecord("Patient", "p3", -1, b"x")  # negative version: every backend refuses it
    try:
        await store.apply(
            [
                PutRecord(rec("p1", 2), ("changed",)),
                PutRecord(rec("p2")),
                PutOutbox("m1", b"entry"),
                PutMeta("sync.cursor", "c2"),
                DeleteRecord("Patient", "p1"),
                PutRecord(bad),
            ]
        )
    except StoreError:
        pass
    else:
        raise AssertionError("a batch with an invalid op must raise StoreError")
    assert await store.get_record("Patient", "p1") == rec("p1", 1)
    assert await store.get_record("Patient", "p2") is None
    assert await store.lookup_token("keep") == [("Patient", "p1")]
    assert await store.outbox_list() == []
    assert await store.meta_get("sync.cursor") == "c1"


async def check_clear_records_keeps_listed(store: Any) -> None:
    await store.put_record(rec("p1"), ["t"])
    await store.put_record(rec("p2"), ["t"])
    await store.put_record(rec("o1", rtype="Observation"))
    await store.outbox_put("m1", b"e")
    await store.apply([ClearRecords(frozenset({("Patient", "p2")}))])
    assert [r.id for r in await store.list_records("Patient")] == ["p2"]
    assert await store.list_records("Observation") == []
    assert await store.lookup_token("t") == [("Patient", "p2")]
    assert await store.outbox_list() == [("m1", b"e")]  # the outbox is not records


async def check_rejects_bad_values(store: Any) -> None:
    for bad in (
        StoredRecord("Patient", "p", 1, "not bytes"),  # type: ignore[arg-type]
        StoredRecord("", "p", 1, b"x"),
        StoredRecord("Patient", "p", True, b"x"),
    ):
        try:
            await store.put_record(bad)
        except StoreError:
            continue
        raise AssertionError(f"{bad!r} was accepted")
    assert await store.list_records("Patient") == []


CHECKS: list[Callable[[Any], Awaitable[None]]] = [
    check_record_round_trip,
    check_list_by_type_sorted_by_id,
    check_token_index_is_multi_entry,
    check_outbox_keeps_first_insertion_order,
    check_meta,
    check_apply_writes_a_batch,
    check_apply_is_all_or_nothing,
    check_clear_records_keeps_listed,
    check_rejects_bad_values,
]
