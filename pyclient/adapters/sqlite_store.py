"""SQLite-backed :class:`~pyclient.store.Store` (CPython, and Pyodide which ships sqlite3).

Async methods that never suspend, so the same runner code drives this store
and the IndexedDB one. ``apply`` runs in one ``BEGIN IMMEDIATE`` ... ``COMMIT``
transaction and rolls back on any error: a batch is all-or-nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from pyclient import store

__all__ = ["SqliteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    rtype TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL,
    blob BLOB NOT NULL, base BLOB, PRIMARY KEY (rtype, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tokens (
    token TEXT NOT NULL, rtype TEXT NOT NULL, id TEXT NOT NULL, PRIMARY KEY (rtype, id, token)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tokens_by_token ON tokens (token, rtype, id);
CREATE TABLE IF NOT EXISTS outbox (
    ord INTEGER PRIMARY KEY AUTOINCREMENT, entry_id TEXT NOT NULL UNIQUE, blob BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
"""


class SqliteStore:
    """A :class:`~pyclient.store.Store` in one SQLite database (``":memory:"`` by default)."""

    def __init__(self, path: str = ":memory:") -> None:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a batch is
        # exactly one transaction and single calls autocommit.
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    # -- records
    async def get_record(self, resource_type: str, id: str) -> store.StoredRecord | None:
        row = self._db.execute(
            "SELECT rtype, id, version, blob, base FROM records WHERE rtype = ? AND id = ?",
            (resource_type, id),
        ).fetchone()
        return None if row is None else _record(row)

    async def put_record(self, record: store.StoredRecord, tokens: Sequence[str] | None = None) -> None:
        await self.apply([store.PutRecord(record, None if tokens is None else tuple(tokens))])

    async def delete_record(self, resource_type: str, id: str) -> None:
        await self.apply([store.DeleteRecord(resource_type, id)])

    async def list_records(self, resource_type: str) -> list[store.StoredRecord]:
        rows = self._db.execute(
            "SELECT rtype, id, version, blob, base FROM records WHERE rtype = ? ORDER BY id", (resource_type,)
        ).fetchall()
        return [_record(r) for r in rows]

    async def lookup_token(self, token: str, resource_type: str | None = None) -> list[tuple[str, str]]:
        if resource_type is None:
            rows = self._db.execute(
                "SELECT rtype, id FROM tokens WHERE token = ? ORDER BY rtype, id", (token,)
            ).fetchall()
        else:
            rows = self._db.execute(
                "SELECT rtype, id FROM tokens WHERE token = ? AND rtype = ? ORDER BY id",
                (token, resource_type),
            ).fetchall()
        return [(str(t), str(i)) for t, i in rows]

    # -- outbox
    async def outbox_put(self, entry_id: str, blob: bytes) -> None:
        await self.apply([store.PutOutbox(entry_id, blob)])

    async def outbox_get(self, entry_id: str) -> bytes | None:
        row = self._db.execute("SELECT blob FROM outbox WHERE entry_id = ?", (entry_id,)).fetchone()
        return None if row is None else bytes(row[0])

    async def outbox_list(self) -> list[tuple[str, bytes]]:
        rows = self._db.execute("SELECT entry_id, blob FROM outbox ORDER BY ord").fetchall()
        return [(str(i), bytes(b)) for i, b in rows]

    async def outbox_delete(self, entry_id: str) -> None:
        await self.apply([store.DeleteOutbox(entry_id)])

    # -- meta
    async def meta_get(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    async def meta_put(self, key: str, value: str | None) -> None:
        await self.apply([store.PutMeta(key, value)])

    # -- batch
    async def apply(self, ops: Sequence[store.StoreOp]) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for op in ops:
                self._apply_one(op)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _apply_one(self, op: store.StoreOp) -> None:
        db = self._db
        if isinstance(op, store.PutRecord):
            rec = op.record
            store.check_record(rec)
            tokens = store.check_tokens(op.tokens)
            db.execute(
                "INSERT INTO records (rtype, id, version, blob, base) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (rtype, id) DO UPDATE SET version = excluded.version, blob = excluded.blob, "
                "base = excluded.base",
                (rec.resource_type, rec.id, rec.version, rec.blob, rec.base),
            )
            if tokens is not None:
                db.execute("DELETE FROM tokens WHERE rtype = ? AND id = ?", (rec.resource_type, rec.id))
                db.executemany(
                    "INSERT INTO tokens (token, rtype, id) VALUES (?, ?, ?)",
                    [(t, rec.resource_type, rec.id) for t in tokens],
                )
        elif isinstance(op, store.DeleteRecord):
            db.execute("DELETE FROM records WHERE rtype = ? AND id = ?", (op.resource_type, op.id))
            db.execute("DELETE FROM tokens WHERE rtype = ? AND id = ?", (op.resource_type, op.id))
        elif isinstance(op, store.ClearRecords):
            doomed = [
                (t, i)
                for t, i in db.execute("SELECT rtype, id FROM records").fetchall()
                if (t, i) not in op.keep
            ]
            db.executemany("DELETE FROM records WHERE rtype = ? AND id = ?", doomed)
            db.executemany("DELETE FROM tokens WHERE rtype = ? AND id = ?", doomed)
        elif isinstance(op, store.PutOutbox):
            store.check_blob(op.blob)
            db.execute(
                "INSERT INTO outbox (entry_id, blob) VALUES (?, ?) "
                "ON CONFLICT (entry_id) DO UPDATE SET blob = excluded.blob",
                (op.entry_id, op.blob),
            )
        elif isinstance(op, store.DeleteOutbox):
            db.execute("DELETE FROM outbox WHERE entry_id = ?", (op.entry_id,))
        elif isinstance(op, store.PutMeta):
            if op.value is None:
                db.execute("DELETE FROM meta WHERE key = ?", (op.key,))
            else:
                db.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (op.key, op.value),
                )
        else:
            raise store.StoreError(f"unknown store op {op!r}")


def _record(row: tuple[str, str, int, bytes, bytes | None]) -> store.StoredRecord:
    t, i, v, blob, base = row
    return store.StoredRecord(str(t), str(i), int(v), bytes(blob), None if base is None else bytes(base))
