"""Effects -> store ops: the one path the browser's commit, the CPython stores and these tests share.

``BrowserApp._commit`` (pyclient/adapters/browser_app.py) seals ``seal_items(effects)`` in one WebCrypto
batch and builds its batch with ``store_ops``; ``to_store_ops`` is the same two calls with a synchronous
sealing primitive. Before issue 11 the browser had its own copy, which bound base copies to another version.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from pyclient import integrity as ig
from pyclient.envelope import AuthenticationFailed, RecordRef
from pyclient.store import MemoryStore, PutOutbox, PutRecord, StoreOp
from pyclient.sync import (
    OUTBOX_SEAL_TYPE,
    ConflictParked,
    Effect,
    JsonCodec,
    MetaPut,
    OutboxPut,
    RecordPut,
    SealItem,
    SyncMachine,
    notices,
    seal_items,
    store_ops,
    to_store_ops,
)

from .test_sync import _run  # the CPython stores never suspend: drive their coroutines to the end


class RefCodec(JsonCodec):
    """JSON "sealing" that keeps the (type, id, version) each blob is bound to, as an envelope's AAD does."""

    def seal(self, items: Sequence[SealItem]) -> list[bytes]:
        return [json.dumps({"ref": [t, i, v], "body": dict(res)}, sort_keys=True).encode() for t, i, v, res in items]


class BatchStore(MemoryStore):
    """The in-memory store, remembering each ``apply`` batch (one batch = one IndexedDB transaction)."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[StoreOp]] = []

    async def apply(self, ops: Sequence[StoreOp]) -> None:
        self.batches.append(list(ops))
        await super().apply(ops)


def patient(version: int, name: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": "p1", "meta": {"versionId": str(version)}, "name": [{"text": name}]}


def pending_edit(m: SyncMachine) -> list[Effect]:
    base = patient(4, "A")
    return m.record_local_edit(now=0.0, mutation_id="m1", resource_type="Patient", id="p1",
                               resource={**base, "name": [{"text": "B"}]}, base_version=4, base_resource=base)


def test_the_base_copy_is_bound_to_the_version_it_is() -> None:
    # The drift issue 11 found: the browser sealed the base copy under the record's version, the tested path
    # under base_version. One function now decides, for every caller.
    put = RecordPut("Patient", "p1", 5, patient(5, "B"), base=patient(3, "A"), base_version=3)
    assert [(t, i, v) for t, i, v, _r in seal_items([put])] == [("Patient", "p1", 5), ("Patient", "p1", 3)]
    (op,) = to_store_ops([put], RefCodec())
    assert isinstance(op, PutRecord) and op.record.base is not None
    assert json.loads(op.record.base) == {"ref": ["Patient", "p1", 3], "body": patient(3, "A")}
    assert json.loads(op.record.blob)["ref"] == ["Patient", "p1", 5]


def test_a_pending_edit_lands_with_its_base_and_its_outbox_entry_in_one_batch() -> None:
    m = SyncMachine(device_id="dev-1")
    store = BatchStore()
    _run(store.apply(to_store_ops(pending_edit(m), RefCodec())))
    (batch,) = store.batches
    assert sorted(type(op).__name__ for op in batch) == ["PutOutbox", "PutRecord"]
    rec = _run(store.get_record("Patient", "p1"))
    assert json.loads(rec.base)["ref"] == ["Patient", "p1", 4]
    (eid, blob), = _run(store.outbox_list())
    assert json.loads(blob)["ref"] == [OUTBOX_SEAL_TYPE, eid, 0]  # what the browser opens at unlock


def test_five_vitals_are_one_batch_and_a_failure_writes_none() -> None:
    m = SyncMachine(device_id="dev-1")
    effects: list[Effect] = []
    for n in range(5):
        obs = {"resourceType": "Observation", "id": f"o{n}", "subject": {"reference": "Patient/p1"}}
        effects += m.record_local_edit(now=0.0, mutation_id=f"m{n}", resource_type="Observation", id=f"o{n}",
                                       resource=obs, base_version=None, base_resource=None)
    ops = to_store_ops(effects, RefCodec())
    assert sum(isinstance(op, PutRecord) for op in ops) == 5 and sum(isinstance(op, PutOutbox) for op in ops) == 5

    class FullAtThird(BatchStore):
        def _put_record(self, record: Any, tokens: Any) -> None:
            if record.id == "o2":
                raise OSError("QuotaExceededError")
            super()._put_record(record, tokens)

    full = FullAtThird()
    with pytest.raises(OSError):
        _run(full.apply(ops))
    assert _run(full.list_records("Observation")) == [] and _run(full.outbox_list()) == []
    store = BatchStore()
    _run(store.apply(ops))
    assert len(store.batches) == 1 and len(_run(store.list_records("Observation"))) == 5


def test_the_sealed_blobs_must_match_the_items_and_notices_are_not_storage() -> None:
    put = RecordPut("Patient", "p1", 1, patient(1, "A"))
    parked = ConflictParked("m1", "Patient", "p1")
    effects: list[Effect] = [put, parked, MetaPut("sync.cursor", "c1"), OutboxPut("m1", {"entryId": "m1"})]
    with pytest.raises(ValueError, match="sealed blobs"):
        store_ops(effects, [b"only-one"], JsonCodec())  # a short batch must never pair blobs with other rows
    assert [type(op).__name__ for op in to_store_ops(effects, JsonCodec())] == ["PutRecord", "PutMeta", "PutOutbox"]
    assert notices(effects) == [parked]


# -- with the real envelope (CPython: ``cryptography``) ---------------------------------------------------


def test_sealed_rows_open_and_verify_the_way_the_browser_reads_them() -> None:
    pytest.importorskip("cryptography")
    from pyclient import keys
    from pyclient.adapters.cpython_crypto import CpythonCrypto, SealingCodec

    ring = keys.new_keyring(data_key_id="dk-1", data_key=bytes(range(32)), index_key_id="bi-1",
                            index_root_key=bytes(range(32, 64)))
    stored: list[keys.KeyState | None] = [None]

    def persist(expected: keys.KeyState, new: keys.KeyState) -> None:
        stored[0] = keys.compare_and_swap(stored[0], expected=expected, new=new)

    crypto = CpythonCrypto(keyring=ring, state=keys.KeyState("dk-1", bytes(4)), persist_state=persist)
    assert ring.index_root is not None
    skey = ig.store_key(ring.index_root)
    codec = SealingCodec(crypto, store_key=skey, tokens=lambda t, r: ("tok-" + str(r.get("id")),))
    m = SyncMachine(device_id="dev-1")
    store = BatchStore()
    _run(store.apply(to_store_ops(pending_edit(m), codec)))
    rec = _run(store.get_record("Patient", "p1"))
    assert rec is not None and rec.base is not None
    blob, base = crypto.open_records([(RecordRef("Patient", "p1", rec.version), rec.blob),
                                      (RecordRef("Patient", "p1", 4), rec.base)])
    assert blob["name"] == [{"text": "B"}] and base == patient(4, "A")
    with pytest.raises(AuthenticationFailed):  # bound to its own version: no other version opens it
        crypto.open_records([(RecordRef("Patient", "p1", 5), rec.base)])
    # The row MAC the browser checks before it trusts a row (BrowserApp._row_ok).
    assert rec.mac == ig.record_mac(skey, resource_type="Patient", id="p1", version=rec.version,
                                    tokens=("tok-p1",), blob=rec.blob, base=rec.base)
    (eid, entry_blob), = _run(store.outbox_list())
    (entry,) = crypto.open_records([(RecordRef(OUTBOX_SEAL_TYPE, eid, 0), entry_blob)])
    again = SyncMachine.restore(device_id="dev-1", meta={}, outbox=[entry])
    assert again.has_pending_edit("Patient", "p1")
