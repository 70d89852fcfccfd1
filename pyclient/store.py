"""The local store interface shared by every backend, and the pure in-memory store.

The interface is **async** because the browser backend (IndexedDB through the
Pyodide FFI) is; CPython backends simply never suspend. Records are opaque
``bytes`` here (sealed by the envelope layer before they reach a store); search
tokens are strings (blind-index values). ``apply`` writes a batch
all-or-nothing, so a pull page and the matching outbox/base updates land in one
transaction (DESIGN.md, lesson 5).

Ordering rules every backend follows (the contract tests check them):
``list_records`` is sorted by id, ``lookup_token`` by (type, id),
``outbox_list`` in order of first insertion (a later put of the same id keeps
its place).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = [
    "CheckRow",
    "ClearRecords",
    "DeleteOutbox",
    "DeleteRecord",
    "MemoryStore",
    "PutMeta",
    "PutOutbox",
    "PutRecord",
    "Store",
    "StoreError",
    "StaleRow",
    "StoreOp",
    "StoredRecord",
]


class StoreError(ValueError):
    """An operation that no backend may perform (bad types, negative version...)."""


@dataclass(frozen=True)
class StoredRecord:
    """One local record.

    ``version`` is the server version the content derives from (0 for a local
    create never acknowledged). ``base`` is the sealed base copy kept while a
    local edit is pending (the "base" of the next three-way merge), else None.
    """

    resource_type: str
    id: str
    version: int
    blob: bytes
    base: bytes | None = None
    #: Row MAC over the plaintext fields (:func:`pyclient.integrity.record_mac`); None = not MACed.
    mac: str | None = field(default=None, compare=False)
    #: The row's search tokens as read back (set by backends that return them; None = not read).
    tokens: tuple[str, ...] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class PutRecord:
    """Insert or replace a record. ``tokens=None`` keeps the record's search tokens."""

    record: StoredRecord
    tokens: tuple[str, ...] | None = None


@dataclass(frozen=True)
class DeleteRecord:
    """Remove a record and its search tokens (absent is fine)."""

    resource_type: str
    id: str


@dataclass(frozen=True)
class ClearRecords:
    """Remove every record except ``keep`` (pull reset; records with pending edits survive)."""

    keep: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True)
class PutOutbox:
    entry_id: str
    blob: bytes
    mac: str | None = None  # :func:`pyclient.integrity.outbox_mac`


@dataclass(frozen=True)
class CheckRow:
    """Abort the whole batch unless the stored row's MAC is ``mac`` (None = the row is absent).

    The compare-and-swap that guards a manifest update against another tab's concurrent write.
    """

    resource_type: str
    id: str
    mac: str | None


class StaleRow(RuntimeError):
    """A :class:`CheckRow` did not match: nothing of the batch was written; re-read and retry."""


@dataclass(frozen=True)
class DeleteOutbox:
    entry_id: str


@dataclass(frozen=True)
class PutMeta:
    """Set (or with ``value=None`` remove) a meta value such as the pull cursor."""

    key: str
    value: str | None


StoreOp = PutRecord | DeleteRecord | ClearRecords | PutOutbox | DeleteOutbox | PutMeta | CheckRow


@runtime_checkable
class Store(Protocol):
    """What the sync runner and the UI need from local storage."""

    async def get_record(self, resource_type: str, id: str) -> StoredRecord | None: ...

    async def put_record(self, record: StoredRecord, tokens: Sequence[str] | None = None) -> None: ...

    async def delete_record(self, resource_type: str, id: str) -> None: ...

    async def list_records(self, resource_type: str) -> list[StoredRecord]: ...

    async def lookup_token(self, token: str, resource_type: str | None = None) -> list[tuple[str, str]]:
        """Records (type, id) whose token list contains ``token``."""
        ...

    async def outbox_put(self, entry_id: str, blob: bytes) -> None: ...

    async def outbox_get(self, entry_id: str) -> bytes | None: ...

    async def outbox_list(self) -> list[tuple[str, bytes]]: ...

    async def outbox_delete(self, entry_id: str) -> None: ...

    async def meta_get(self, key: str) -> str | None: ...

    async def meta_put(self, key: str, value: str | None) -> None: ...

    async def apply(self, ops: Sequence[StoreOp]) -> None:
        """Perform every op or none of them (raises and leaves the store unchanged)."""
        ...


def check_record(record: StoredRecord) -> None:
    """Reject what no backend may store (shared so every backend fails alike)."""
    if not isinstance(record, StoredRecord):
        raise StoreError(f"expected StoredRecord, got {type(record).__name__}")
    if not record.resource_type or not record.id:
        raise StoreError("record needs a resource type and an id")
    if isinstance(record.version, bool) or not isinstance(record.version, int) or record.version < 0:
        raise StoreError(f"record version must be an int >= 0, got {record.version!r}")
    if not isinstance(record.blob, bytes) or not (record.base is None or isinstance(record.base, bytes)):
        raise StoreError("record blob and base must be bytes")


def check_tokens(tokens: Sequence[str] | None) -> tuple[str, ...] | None:
    if tokens is None:
        return None
    if isinstance(tokens, str) or not all(isinstance(t, str) and t for t in tokens):
        raise StoreError("tokens must be a sequence of non-empty strings")
    return tuple(dict.fromkeys(tokens))


def check_blob(blob: bytes) -> None:
    if not isinstance(blob, bytes):
        raise StoreError("outbox entries are bytes")


class MemoryStore:
    """Dict-backed :class:`Store`; used by tests, the simulator and as a fallback."""

    def __init__(self) -> None:
        self._records: dict[tuple[str, str], StoredRecord] = {}
        self._tokens: dict[tuple[str, str], tuple[str, ...]] = {}
        self._outbox: dict[str, bytes] = {}
        self._meta: dict[str, str] = {}

    # -- records
    async def get_record(self, resource_type: str, id: str) -> StoredRecord | None:
        return self._records.get((resource_type, id))

    async def put_record(self, record: StoredRecord, tokens: Sequence[str] | None = None) -> None:
        self._put_record(record, tokens)

    def _put_record(self, record: StoredRecord, tokens: Sequence[str] | None) -> None:
        check_record(record)
        toks = check_tokens(tokens)
        key = (record.resource_type, record.id)
        if toks is not None:
            self._tokens[key] = toks
        self._records[key] = StoredRecord(record.resource_type, record.id, record.version, record.blob,
                                          record.base, record.mac, self._tokens.get(key, ()))

    async def delete_record(self, resource_type: str, id: str) -> None:
        self._records.pop((resource_type, id), None)
        self._tokens.pop((resource_type, id), None)

    async def list_records(self, resource_type: str) -> list[StoredRecord]:
        return sorted((r for k, r in self._records.items() if k[0] == resource_type), key=lambda r: r.id)

    async def lookup_token(self, token: str, resource_type: str | None = None) -> list[tuple[str, str]]:
        # Linear scan: fine for tests; real backends use a multi-entry index.
        return sorted(
            k
            for k, toks in self._tokens.items()
            if token in toks and (resource_type is None or k[0] == resource_type) and k in self._records
        )

    # -- outbox
    async def outbox_put(self, entry_id: str, blob: bytes) -> None:
        check_blob(blob)
        self._outbox[entry_id] = blob

    async def outbox_get(self, entry_id: str) -> bytes | None:
        return self._outbox.get(entry_id)

    async def outbox_list(self) -> list[tuple[str, bytes]]:
        return list(self._outbox.items())

    async def outbox_delete(self, entry_id: str) -> None:
        self._outbox.pop(entry_id, None)

    # -- meta
    async def meta_get(self, key: str) -> str | None:
        return self._meta.get(key)

    async def meta_put(self, key: str, value: str | None) -> None:
        if value is None:
            self._meta.pop(key, None)
        else:
            self._meta[key] = value

    # -- batch
    async def apply(self, ops: Sequence[StoreOp]) -> None:
        saved = (
            dict(self._records),
            dict(self._tokens),
            dict(self._outbox),
            dict(self._meta),
        )
        try:
            for op in ops:
                await self._apply_one(op)
        except BaseException:
            self._records, self._tokens, self._outbox, self._meta = saved
            raise

    async def _apply_one(self, op: StoreOp) -> None:
        if isinstance(op, PutRecord):
            self._put_record(op.record, op.tokens)
        elif isinstance(op, DeleteRecord):
            await self.delete_record(op.resource_type, op.id)
        elif isinstance(op, ClearRecords):
            for key in [k for k in self._records if k not in op.keep]:
                await self.delete_record(*key)
        elif isinstance(op, PutOutbox):
            await self.outbox_put(op.entry_id, op.blob)
        elif isinstance(op, DeleteOutbox):
            await self.outbox_delete(op.entry_id)
        elif isinstance(op, PutMeta):
            await self.meta_put(op.key, op.value)
        elif isinstance(op, CheckRow):
            row = self._records.get((op.resource_type, op.id))
            if (None if row is None else row.mac or "") != op.mac:
                raise StaleRow(f"{op.resource_type}/{op.id} changed")
        else:
            raise StoreError(f"unknown store op {op!r}")
