"""pyclient's :class:`~pyclient.store.Store` on IndexedDB (browser only, Pyodide FFI).

The IndexedDB work lives in ``pwa/app/idb.js``; this adapter hands it whole
batches, so one ``apply`` (a pull page, an outbox update) crosses the
JS<->Python boundary once instead of once per record. Blobs are already sealed
(:mod:`pyclient.envelope`); search tokens are blind-index values.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, ClassVar

from pyclient import store

__all__ = ["IndexedDBStore", "StorageFull"]


class StorageFull(RuntimeError):
    """The browser refused the write (QuotaExceededError); nothing of the batch was written."""


def js_to_py(value: Any) -> Any:
    """JS value -> Python, with JS null/undefined as None and typed arrays as bytes."""
    if value is None:
        return None
    to_py = getattr(value, "to_py", None)
    if to_py is not None:
        value = to_py()
    return _norm(value)


def _norm(value: Any) -> Any:
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, list):
        return [_norm(v) for v in value]
    if type(value).__name__ in ("JsNull", "JsUndefined") or repr(value) in ("jsnull", "undefined"):
        return None
    return value


def _record(row: Any) -> store.StoredRecord | None:
    if row is None:
        return None
    t, i, v, blob, base = row[:5]
    tok = tuple(str(x) for x in row[5] or ()) if len(row) > 5 else None
    mac = None if len(row) < 7 or row[6] is None else str(row[6])
    return store.StoredRecord(str(t), str(i), int(v), bytes(blob), None if base is None else bytes(base), mac, tok)


class IndexedDBStore:
    """Async :class:`~pyclient.store.Store` backed by ``idb.js`` (``idb`` is that JS module)."""

    def __init__(self, idb: Any) -> None:
        from pyodide.ffi import to_js  # type: ignore[import-not-found]  # noqa: PLC0415 - only inside Pyodide

        self._idb = idb
        self._to_js = to_js

    def _js(self, value: Any) -> Any:
        return self._to_js(value)

    # -- records
    async def get_record(self, resource_type: str, id: str) -> store.StoredRecord | None:
        return _record(js_to_py(await self._idb.getRecord(resource_type, id)))

    async def get_records(self, keys: Sequence[tuple[str, str]]) -> list[store.StoredRecord | None]:
        """Many records in one crossing (search candidates, a chart's resources)."""
        if not keys:
            return []
        rows = js_to_py(await self._idb.getRecords(self._js([list(k) for k in keys])))
        return [_record(r) for r in rows]

    async def put_record(self, record: store.StoredRecord, tokens: Sequence[str] | None = None) -> None:
        await self.apply([store.PutRecord(record, None if tokens is None else tuple(tokens))])

    async def delete_record(self, resource_type: str, id: str) -> None:
        await self.apply([store.DeleteRecord(resource_type, id)])

    async def list_records(self, resource_type: str) -> list[store.StoredRecord]:
        rows = js_to_py(await self._idb.listRecords(resource_type))
        return [r for r in (_record(row) for row in rows) if r is not None]

    async def lookup_token(self, token: str, resource_type: str | None = None) -> list[tuple[str, str]]:
        rows = js_to_py(await self._idb.lookupToken(token, resource_type))
        return [(str(t), str(i)) for t, i in rows]

    # -- outbox
    async def outbox_put(self, entry_id: str, blob: bytes) -> None:
        await self.apply([store.PutOutbox(entry_id, blob)])

    async def outbox_get(self, entry_id: str) -> bytes | None:
        blob = js_to_py(await self._idb.outboxGet(entry_id))
        return None if blob is None else bytes(blob)

    async def outbox_list(self) -> list[tuple[str, bytes]]:
        return [(str(row[0]), bytes(row[1])) for row in js_to_py(await self._idb.outboxList())]

    async def outbox_rows(self) -> list[tuple[str, bytes, str | None]]:
        """Outbox entries with their row MACs: (entry id, sealed blob, mac or None)."""
        return [(str(row[0]), bytes(row[1]), None if row[2] is None else str(row[2]))
                for row in js_to_py(await self._idb.outboxList())]

    async def row_meta(self, keys: Sequence[tuple[str, str]]) -> list[tuple[int, tuple[str, ...], str | None] | None]:
        """(version, tokens, mac) of rows without their blobs, in the order of ``keys`` (None = absent)."""
        if not keys:
            return []
        rows = js_to_py(await self._idb.getRowMeta(self._js([list(k) for k in keys])))
        return [None if r is None else (int(r[0]), tuple(str(t) for t in r[1] or ()),
                                        None if r[2] is None else str(r[2])) for r in rows]

    async def list_held(self) -> list[tuple[str, str, int]]:
        """Every record row's (type, id, version), manifests excluded."""
        return [(str(t), str(i), int(v)) for t, i, v in js_to_py(await self._idb.listHeld())]

    async def list_held_page(self, after: tuple[str, str] | None, limit: int
                             ) -> tuple[list[tuple[str, str, int]], tuple[str, str] | None]:
        """At most ``limit`` rows' (type, id, version) after the key ``after`` (None = from the first), manifests
        excluded, and the key to continue after (None = no more): the held rows in bounded memory."""
        rows, last = js_to_py(await self._idb.listHeldPage(None if after is None else self._js(list(after)), limit))
        return ([(str(t), str(i), int(v)) for t, i, v in rows or []],
                None if last is None else (str(last[0]), str(last[1])))

    async def list_ids(self, resource_type: str) -> list[str]:
        """The ids of every record of a type, sorted, without reading (or decrypting) a record."""
        return [str(i) for i in js_to_py(await self._idb.listIds(resource_type)) or []]

    async def outbox_delete(self, entry_id: str) -> None:
        await self.apply([store.DeleteOutbox(entry_id)])

    # -- device audit events (outbox rows with their own per-device sequence; not sync entries)
    async def audit_append(self, entry_id: str, blob: bytes) -> None:
        """Append a sealed audit event; IndexedDB assigns the next device sequence in the same transaction."""
        await self.audit_append_many([(entry_id, blob)])

    async def audit_append_many(self, events: Sequence[tuple[str, bytes]]) -> None:
        """Append sealed audit events (entry id, blob) in order, in ONE transaction (consecutive sequences)."""
        for _eid, blob in events:
            store.check_blob(blob)
        await self._apply_wire([["putAudit", eid, blob] for eid, blob in events])

    async def audit_list(self, limit: int) -> list[tuple[str, int, bytes]]:
        """Oldest queued audit events first: (entry id, device sequence, sealed blob)."""
        rows = js_to_py(await self._idb.auditList(limit)) or []
        return [(str(i), int(seq), bytes(b)) for i, seq, b in rows]

    async def audit_count(self) -> int:
        return int(js_to_py(await self._idb.auditCount()))

    # -- meta
    async def meta_get(self, key: str) -> str | None:
        value = js_to_py(await self._idb.metaGet(key))
        return None if value is None else str(value)

    async def meta_get_many(self, keys: Sequence[str]) -> dict[str, str | None]:
        """Several meta values in one crossing."""
        values = js_to_py(await self._idb.metaGetMany(self._js(list(keys))))
        return {k: (None if v is None else str(v)) for k, v in zip(keys, values, strict=True)}

    async def meta_put(self, key: str, value: str | None) -> None:
        await self.apply([store.PutMeta(key, value)])

    # -- batch
    async def apply(self, ops: Sequence[store.StoreOp]) -> None:
        """All ops in one IndexedDB transaction; returns after it completed (durable)."""
        wire: list[list[Any]] = []
        for op in ops:
            if isinstance(op, store.PutRecord):
                store.check_record(op.record)
                toks = store.check_tokens(op.tokens)
                r = op.record
                wire.append(["putRecord", r.resource_type, r.id, r.version, r.blob, r.base,
                             None if toks is None else list(toks), r.mac])
            elif isinstance(op, store.DeleteRecord):
                wire.append(["deleteRecord", op.resource_type, op.id])
            elif isinstance(op, store.ClearRecords):
                wire.append(["clearRecords", [list(k) for k in op.keep]])
            elif isinstance(op, store.PutOutbox):
                store.check_blob(op.blob)
                wire.append(["putOutbox", op.entry_id, op.blob, op.mac])
            elif isinstance(op, store.DeleteOutbox):
                wire.append(["deleteOutbox", op.entry_id])
            elif isinstance(op, store.CheckRow):
                wire.append(["checkRow", op.resource_type, op.id, op.mac])
            elif isinstance(op, store.PutMeta):
                if op.value is not None and not isinstance(op.value, str):
                    raise store.StoreError("meta values are strings")
                wire.append(["putMeta", op.key, op.value])
            else:
                raise store.StoreError(f"unknown store op {op!r}")
        await self._apply_wire(wire)

    #: Where each op carries blobs (bytes or None): idb.js ``unpackOps`` reads the same positions.
    _BLOB_FIELDS: ClassVar[dict[str, tuple[int, ...]]] = {"putRecord": (4, 5), "putOutbox": (2,), "putAudit": (2,)}

    def _packed(self, wire: list[list[Any]]) -> tuple[str, Any]:
        """``wire`` as idb.js ``apply(json, buffer)`` takes it: one string and one byte buffer cross, not a JS
        array per op and a Uint8Array per blob (the per-object conversion dominated a pull page's write)."""
        parts: list[bytes] = []
        at = 0
        for op in wire:
            for k in self._BLOB_FIELDS.get(op[0], ()):
                blob = op[k]
                if blob is not None:
                    op[k] = [at, len(blob)]
                    parts.append(blob)
                    at += len(blob)
        return json.dumps(wire, separators=(",", ":")), self._js(b"".join(parts))

    async def _apply_wire(self, wire: list[list[Any]]) -> None:
        if not wire:
            return
        try:
            await self._idb.apply(*self._packed(wire))
        except Exception as exc:  # JsException: map the quota error to something the UI can name
            if "omnicare-stale-row" in str(exc):
                raise store.StaleRow(str(exc)) from exc
            if "QuotaExceeded" in str(exc) or "quota" in str(exc).lower():
                raise StorageFull("This device is out of storage space, so this change was NOT saved. Everything "
                                  "saved before is safe. Free up space and press Save again.") from exc
            raise
