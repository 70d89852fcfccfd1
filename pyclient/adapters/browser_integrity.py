"""BrowserApp's store integrity (issue 17, PROTOCOL.md 4.5 and 6): the row codec, manifests and quarantine.

A mixin of :class:`pyclient.adapters.browser_app.BrowserApp` (as ``browser_chart``). It owns what a row
carries besides its sealed bytes (blind-index tokens, the sealed owner token pointing to the row's patient,
the row MAC), every write's manifests (compare-and-swapped in the same IndexedDB transaction), the one-time
store upgrades (adopt a pre-integrity store, v1 -> v2 owner tokens), the quarantine of rows and outbox
entries that do not verify, and the anti-rollback exchange with ``/api/sync/verify``. The rules are pure and
live in :mod:`pyclient.integrity` and :mod:`pyclient.blindindex`; this file reads, seals and writes.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from pyclient import blindindex as bi
from pyclient import envelope as env
from pyclient import integrity as ig
from pyclient.chart import ref_patient as _ref_patient
from pyclient.errors import AppError
from pyclient.integrity_cache import SeenRows
from pyclient.keys import MAX_CAS_RETRIES
from pyclient.store import (
    CheckRow,
    ClearRecords,
    DeleteOutbox,
    PutMeta,
    PutOutbox,
    PutRecord,
    StaleRow,
    StoredRecord,
    StoreOp,
)
from pyclient.sync import SyncMachine

from .browser_base import M_FIRST_SYNC_DONE, OUTBOX_TYPE, AppParts, DeviceRevoked, _b64

# Store integrity (issue 17, pyclient/integrity.py, PROTOCOL.md 6)
M_INTEGRITY = "integrity.v"  # every row is MACed and listed in a sealed manifest; ig.STORE_VERSION: owner tokens
M_QUARANTINE = "integrity.quarantine"  # JSON list of failures (type, id, reason, patient): ids only, no PHI
Q_OUTBOX = "quarantine.outbox."  # + entry id: an unreadable pending change, kept sealed for support
VERIFY_BATCH = 1000
_REF_MEMO_MAX = 4096  # patient tokens kept in memory while unlocked


class _BrowserRows:
    """The browser's row codec for :func:`pyclient.sync.store_ops`: blind-index tokens and integrity MACs.

    A separate object, not methods of :class:`BrowserApp`: every public method there is callable from JS.
    """

    def __init__(self, app: IntegrityMixin) -> None:
        self._app = app

    def tokens(self, resource_type: str, resource: dict[str, Any]) -> tuple[str, ...] | None:
        return self._app._tokens(resource_type, resource)

    def record_mac(self, record: StoredRecord, tokens: tuple[str, ...] | None) -> str | None:
        return self._app._record_mac(record.resource_type, record.id, record.version, record.blob, record.base,
                                     tokens or ())

    def outbox_mac(self, entry_id: str, blob: bytes) -> str | None:
        assert self._app._store_key is not None
        return ig.outbox_mac(self._app._store_key, entry_id=entry_id, blob=blob)


class IntegrityMixin(AppParts):
    """Relies on BrowserApp's ``store``, keys (``_store_key``, ``_ref_key``, ``_owner_key``, ``_index``),
    caches (``_mcache``, ``_seen``, ``_ref_memo``, ``_owner_made``), ``_seal``/``_open``, ``_commit``,
    ``_post``, ``_emit`` and ``_audit_quietly``; ``_quarantine`` is loaded by ``_install``."""

    def _ref_token(self, patient_id: str) -> str:
        assert self._ref_key is not None
        tok = self._ref_memo.get(patient_id)
        if tok is None:
            # A pull page holds many records of few patients: each record's owner token costs one HMAC, its
            # patient token then none (bounded: a device set's patient list is h13big's memory budget).
            if len(self._ref_memo) >= _REF_MEMO_MAX:
                self._ref_memo.clear()
            tok = self._ref_memo[patient_id] = bi.patient_ref_token(self._ref_key, patient_id)
        return tok

    def _owner_token(self, ref: str) -> str:
        """A fresh sealed pointer to the patient ``ref`` (unlinkable to the patient's other rows)."""
        assert self._owner_key is not None
        tok = bi.owner_token(self._owner_key, ref, os.urandom(bi.OWNER_NONCE_LEN))
        self._owner_made[tok] = ref  # the manifest planner of this commit need not open it again
        return tok

    def _owner_refs(self, tokens: Sequence[str]) -> tuple[str, ...]:
        """The patient tokens a row's owner tokens point to (one in practice)."""
        assert self._owner_key is not None
        return bi.owner_refs(self._owner_key, tokens, self._owner_made)

    def _tokens(self, resource_type: str, resource: Mapping[str, Any]) -> tuple[str, ...]:
        """A row's tokens: a Patient's search tokens, and for every row of a patient its sealed owner token.

        No row carries the patient token itself (store v2, PROTOCOL.md 4.5): a chart is opened through the
        patient's sealed manifest, so a copied IndexedDB does not show which rows belong together.
        """
        assert self._index is not None
        if resource_type == "Patient":
            return (*bi.tokens_for_patient(self._index, resource),
                    self._owner_token(self._ref_token(str(resource.get("id")))))
        pid = _ref_patient(resource)
        return (self._owner_token(self._ref_token(pid)),) if pid else ()

    def _record_mac(self, t: str, i: str, v: int, blob: bytes, base: bytes | None, tokens: Sequence[str]) -> str:
        assert self._store_key is not None
        t0 = time.perf_counter()
        mac = ig.record_mac(self._store_key, resource_type=t, id=i, version=v, tokens=tokens, blob=blob, base=base)
        self.integrity_s += time.perf_counter() - t0
        return mac

    def _put_record_op(self, t: str, i: str, v: int, blob: bytes, base: bytes | None,
                       tokens: Sequence[str]) -> PutRecord:
        return PutRecord(StoredRecord(t, i, v, blob, base, self._record_mac(t, i, v, blob, base, tokens)),
                         tuple(tokens))

    def _put_outbox_op(self, entry_id: str, blob: bytes) -> PutOutbox:
        return PutOutbox(entry_id, blob, self._rows.outbox_mac(entry_id, blob))

    def _row_ok(self, r: StoredRecord) -> bool:
        if not self._checks:
            return True
        assert self._store_key is not None
        t0 = time.perf_counter()
        ok = ig.mac_ok(ig.record_mac(self._store_key, resource_type=r.resource_type, id=r.id, version=r.version,
                                     tokens=r.tokens or (), blob=r.blob, base=r.base), r.mac)
        self.integrity_s += time.perf_counter() - t0
        return ok

    async def _apply_with_manifests(self, ops: list[StoreOp]) -> None:
        """Write ``ops`` plus the manifests they change in ONE transaction, compare-and-swapped on the old ones.

        Another tab may have moved a manifest since we read it: the transaction then aborts (``StaleRow``) and
        the manifests are re-read and re-planned; the sealed records themselves stay as they are.
        """
        for _ in range(MAX_CAS_RETRIES):  # another tab won the compare-and-swap this often in a row: give up
            checks, writes, cache, written = await self._manifest_ops(ops)
            try:
                await self.store.apply([*checks, *ops, *writes])
            except StaleRow:
                self._mcache.clear()  # another tab wrote: read the manifests again
                self._seen = None
                continue
            except BaseException:
                self._mcache.clear()
                self._seen = None
                raise
            if any(isinstance(op, ClearRecords) for op in ops):
                self._mcache.clear()
                self._seen = SeenRows()  # from now on every row of the store goes through this tab's manifests
            for tok, (man, mac) in cache.items():
                self._mcache.put(tok, man, mac)
            self._mcache.trim()
            if self._seen is not None:
                for t, i in written:
                    self._seen.add(t, i)
            return
        raise AppError("Could not save: another OmniCare tab keeps writing. Close other tabs and try again.")

    async def _manifest_ops(self, ops: Sequence[StoreOp]) -> tuple[
            list[StoreOp], list[StoreOp], dict[str, tuple[ig.Manifest | None, str | None]], list[tuple[str, str]]]:
        """(checks to run first, manifest writes to run last, cache entries and the rows written, once done)."""
        if not self._checks:
            self._owner_made.clear()
            return [], [], {}, []
        t0 = time.perf_counter()
        try:
            return await self._plan_manifest_ops(ops)
        finally:
            self._owner_made.clear()
            self.integrity_s += time.perf_counter() - t0

    async def _plan_manifest_ops(self, ops: Sequence[StoreOp]) -> tuple[
            list[StoreOp], list[StoreOp], dict[str, tuple[ig.Manifest | None, str | None]], list[tuple[str, str]]]:
        # Where each row's patient token is now: read from the rows, except those that certainly do not exist
        # (every row of the store went through this tab since a pull reset, a first sync, and never this one).
        need = ig.row_meta_needed(ops, self._seen.may_hold if self._seen is not None else None)
        metas = dict(zip(need, await self.store.row_meta(need), strict=True)) if need else {}
        planned_rows = ig.row_changes(ops, metas, self._owner_refs)
        changes, clear = planned_rows.rows, planned_rows.cleared
        puts, dels = planned_rows.outbox_puts, planned_rows.outbox_deletes
        checks: list[StoreOp] = []
        writes: list[StoreOp] = []
        cache: dict[str, tuple[ig.Manifest | None, str | None]] = {}
        touched = sorted({t for c in changes for t in (*c.old_refs, *c.new_refs)})
        if touched:
            have: dict[str, tuple[ig.Manifest | None, str | None]] = {
                t: self._mcache.get(t) for t in touched if t in self._mcache}
            missing = [t for t in touched if t not in have]
            if missing:
                loaded, rows = await self._load_manifests(missing)
                for t in missing:
                    row = rows.get(t)
                    have[t] = (loaded.get(t), None if row is None else row.mac or "")
            current = {t: cm for t in touched if (cm := have[t][0]) is not None}
            if clear:
                current = {}
            planned = ig.plan_manifests(current, changes)
            blobs = await self._seal([(ig.MANIFEST_TYPE, tok, ig.MANIFEST_ROW_VERSION, man.to_json())
                                      for tok, man in planned.items()])
            if not clear:
                cache.update(have)  # what was read stays known even where the plan changed nothing
            for (tok, man), blob in zip(planned.items(), blobs, strict=True):
                checks.append(CheckRow(ig.MANIFEST_TYPE, tok, have[tok][1]))
                # No tokens: the manifest is read by its key (the patient token), never through the index.
                put = self._put_record_op(ig.MANIFEST_TYPE, tok, ig.MANIFEST_ROW_VERSION, blob, None, ())
                writes.append(put)
                cache[tok] = (man, put.record.mac)
        if puts or dels:
            current_ob, row, _ok = await self._load_outbox_manifest()
            planned_ob = ig.plan_outbox_manifest(current_ob or ig.OutboxManifest(), puts, dels)
            (blob,) = await self._seal([(ig.MANIFEST_TYPE, ig.OUTBOX_MANIFEST_ID, planned_ob.generation,
                                         planned_ob.to_json())])
            checks.append(CheckRow(ig.MANIFEST_TYPE, ig.OUTBOX_MANIFEST_ID, None if row is None else row.mac or ""))
            writes.append(self._put_record_op(ig.MANIFEST_TYPE, ig.OUTBOX_MANIFEST_ID, planned_ob.generation, blob,
                                              None, ()))
        return checks, writes, cache, planned_rows.written()

    async def _load_manifests(self, tokens: Sequence[str]) -> tuple[dict[str, ig.Manifest], dict[str, StoredRecord]]:
        """Current (verified) patient manifests by token; a manifest that fails verification counts as absent."""
        got = await self.store.get_records([(ig.MANIFEST_TYPE, t) for t in tokens])
        rows = {r.id: r for r in got if r is not None}
        opened = await self._open([(r.resource_type, r.id, r.version, r.blob) for r in rows.values()])
        out: dict[str, ig.Manifest] = {}
        for r, o in zip(rows.values(), opened, strict=True):
            if o is not None and self._row_ok(r):
                try:
                    out[r.id] = ig.Manifest.from_json(o, r.version)
                except (ValueError, TypeError):
                    pass
        return out, rows

    async def _load_outbox_manifest(self) -> tuple[ig.OutboxManifest | None, StoredRecord | None, bool]:
        """(manifest or None, its row, verified) of the outbox."""
        row = await self.store.get_record(ig.MANIFEST_TYPE, ig.OUTBOX_MANIFEST_ID)
        if row is None:
            return None, None, False
        (o,) = await self._open([(row.resource_type, row.id, row.version, row.blob)])
        if o is None or not self._row_ok(row):
            return None, row, False
        try:
            return ig.OutboxManifest.from_json(o, row.version), row, True
        except (ValueError, TypeError):
            return None, row, False

    async def _integrity_adopt(self) -> None:
        """A store written before issue 17: MAC every row and write the manifests once (trust on first use)."""
        outbox = await self.store.outbox_rows()
        ops: list[StoreOp] = [self._put_outbox_op(eid, blob) for eid, blob, _mac in outbox]
        written_since = False  # a v2 envelope exists: this store was written by integrity-aware code
        for t in sorted({t for t, _i, _v in await self.store.list_held()}):
            rows = await self.store.list_records(t)
            opened = await self._open([(r.resource_type, r.id, r.version, r.blob) for r in rows])
            written_since = written_since or any(r.blob[2:3] == bytes((env.FORMAT_V2,)) for r in rows)
            ops += [self._put_record_op(r.resource_type, r.id, r.version, r.blob, r.base, self._tokens(t, o))
                    for r, o in zip(rows, opened, strict=True) if o is not None]
        await self._apply_with_manifests([*ops, PutMeta(M_INTEGRITY, ig.STORE_VERSION)])
        if written_since:
            # The marker was removed from a store this version wrote: local rollback checks were reset.
            # Report it; the anti-rollback exchange of the next sync (6.5) re-checks every version held.
            await self._report_failure(ig.Failure(ig.MANIFEST_TYPE, "store", "manifest"), None,
                                       what="integrity marker missing")

    async def _owner_upgrade(self) -> None:
        """Store v1 -> v2, once, in ONE transaction: every row's plaintext patient token becomes a sealed owner
        token, and every patient manifest is sealed again padded, under row version 0, with no tokens.

        Only rows whose MAC verifies are rewritten (a tampered row is not laundered: it keeps its old fields and
        fails its chart's checks as before); manifest entries are kept exactly, so nothing is re-listed.
        """
        ops: list[StoreOp] = []
        for t in sorted({t for t, _i, _v in await self.store.list_held()}):
            for r in await self.store.list_records(t):
                refs = ig.ref_tokens(r.tokens or ())
                if refs and self._row_ok(r):
                    new = ig.upgrade_tokens(r.tokens or (), [self._owner_token(x) for x in refs])
                    ops.append(self._put_record_op(r.resource_type, r.id, r.version, r.blob, r.base, new))
        rows = [r for r in await self.store.list_records(ig.MANIFEST_TYPE) if r.id.startswith(bi.REF_PREFIX)]
        opened = await self._open([(r.resource_type, r.id, r.version, r.blob) for r in rows])
        manifests: list[tuple[str, ig.Manifest]] = []
        for r, o in zip(rows, opened, strict=True):
            if o is not None and self._row_ok(r):
                try:
                    m = ig.Manifest.from_json(o, r.version)
                except (ValueError, TypeError):
                    continue
                manifests.append((r.id, ig.Manifest(m.entries, m.generation + 1)))
        blobs = await self._seal([(ig.MANIFEST_TYPE, tok, ig.MANIFEST_ROW_VERSION, m.to_json())
                                  for tok, m in manifests])
        ops += [self._put_record_op(ig.MANIFEST_TYPE, tok, ig.MANIFEST_ROW_VERSION, blob, None, ())
                for (tok, _m), blob in zip(manifests, blobs, strict=True)]
        await self.store.apply([*ops, PutMeta(M_INTEGRITY, ig.STORE_VERSION)])
        self._owner_made.clear()
        self._mcache.clear()
        self._seen = None

    async def _restore_outbox(self) -> list[dict[str, Any]]:
        """Outbox entries that verify; the others are quarantined and reported, never block unlock."""
        assert self._store_key is not None
        rows = await self.store.outbox_rows()
        manifest, _row, mok = await self._load_outbox_manifest()
        checked = [(eid, blob, ig.mac_ok(ig.outbox_mac(self._store_key, entry_id=eid, blob=blob), mac))
                   for eid, blob, mac in rows]
        ok_ids, failures = ig.check_outbox(rows=checked, manifest=manifest, manifest_ok=mok)
        blobs = {eid: blob for eid, blob, _m in rows}
        opened = await self._open([(OUTBOX_TYPE, eid, 0, blobs[eid]) for eid in ok_ids])
        good: list[dict[str, Any]] = []
        for eid, o in zip(ok_ids, opened, strict=True):
            if o is None:
                failures.append(ig.Failure("OutboxEntry", eid, "unreadable"))
            else:
                good.append(o)
        if not mok and good:  # no verifiable manifest: list the entries that verify on their own again
            await self._apply_with_manifests([self._put_outbox_op(eid, blobs[eid]) for eid in ok_ids])
        if failures:
            await self._quarantine_outbox(failures, blobs)
        return good

    def _drop_settled_manifest_failures(self) -> None:
        """A patient's manifest failure is settled once none of that patient's records is still quarantined."""
        for k in ig.settled_manifest_failures(self._quarantine):
            del self._quarantine[k]

    async def _quarantine_outbox(self, failures: Sequence[ig.Failure], blobs: Mapping[str, bytes]) -> None:
        """Move unreadable pending changes out of the outbox (kept sealed in meta), report each one."""
        ops: list[StoreOp] = []
        for f in failures:
            if f.resource_type != "OutboxEntry":
                continue  # the outbox manifest itself: rewritten from the entries kept (see _restore_outbox)
            if f.id in blobs:
                ops.append(PutMeta(Q_OUTBOX + f.id, _b64(blobs[f.id])))
            ops.append(DeleteOutbox(f.id))
            self._quarantine[("OutboxEntry", f.id)] = {**f.to_json(), "patient": None}
        await self._apply_with_manifests([*ops, self._quarantine_op()])
        for f in failures:
            await self._report_failure(f, None, store="outbox")
        self._emit({"type": "integrity", "changes": self._unreadable_changes()})

    async def _report_failure(self, f: ig.Failure, patient_id: str | None, **detail: str) -> None:
        """One device audit event (a security event on the server) per integrity failure.

        Store-internal kinds (outbox entries, manifests) are not FHIR types the server's role check knows:
        they go as ``detail.record`` with an empty resource type.
        """
        internal = f.resource_type in ("OutboxEntry", ig.MANIFEST_TYPE)
        await self._audit_quietly("integrity", "" if internal else f.resource_type, f.id,
                                  [patient_id] if patient_id else [], outcome="failure",
                                  detail={"reason": f.reason, **({"record": f.resource_type} if internal else {}),
                                          **detail})

    def _quarantine_op(self) -> PutMeta:
        return PutMeta(M_QUARANTINE, ig.quarantine_to_json(self._quarantine))

    def _unreadable_changes(self) -> int:
        return sum(1 for k in self._quarantine if k[0] == "OutboxEntry")

    async def _quarantine_records(self, patient_id: str | None, failures: Sequence[ig.Failure]) -> None:
        """Record failures (the rows stay where they are, still sealed, ignored until re-downloaded); report."""
        fresh = [f for f in failures if (f.resource_type, f.id) not in self._quarantine]
        if not fresh:
            return
        for f in fresh:
            self._quarantine[(f.resource_type, f.id)] = {**f.to_json(), "patient": patient_id}
        await self.store.apply([self._quarantine_op()])
        for f in fresh:
            await self._report_failure(f, patient_id)
        self._emit({"type": "integrity", "records": len(self._quarantine)})

    def _integrity_notice(self, patient_id: str) -> dict[str, Any] | None:
        """What the chart says about this patient's quarantined records (:func:`pyclient.integrity.quarantine_notice`)."""
        return ig.quarantine_notice(self._quarantine, patient_id)

    async def _verified_rows(self, rows: Sequence[StoredRecord], patient_id: str | None = None
                             ) -> list[dict[str, Any]]:
        """Open rows outside a chart (patient list, search): only rows whose MAC verifies and that open."""
        rows = [r for r in rows if (r.resource_type, r.id) not in self._quarantine]
        opened = await self._open([(r.resource_type, r.id, r.version, r.blob) for r in rows])
        good, failures = ig.check_rows([ig.RowView(r.resource_type, r.id, r.version, self._row_ok(r), o)
                                        for r, o in zip(rows, opened, strict=True)])
        if failures:
            await self._quarantine_records(patient_id, failures)
        return [g for g in good if isinstance(g, dict)]

    async def _integrity_sync(self, machine: SyncMachine) -> None:
        """After a complete pull: re-download quarantined records and (once per session) tell the server every
        version this device holds; whatever is newer there replaces the local copy, a rollback is reported."""
        quarantined = ig.quarantined_records(self._quarantine)
        held: list[list[Any]] = [[t, i, 0] for (t, i) in sorted(quarantined)]
        more = not self._held_verified and await self.store.meta_get(M_FIRST_SYNC_DONE) == "1"
        check_all = more
        after: tuple[str, str] | None = None
        stale = 0
        while held or more:
            # The rows held are read a page at a time as the batches go (never all of them at once: at 200,000
            # records that list was the tallest peak of the session's memory, issue 13).
            while more and len(held) < VERIFY_BATCH:
                page, after = await self.store.list_held_page(after, VERIFY_BATCH)
                more = after is not None
                held += ig.verify_held(page, quarantined=quarantined, pending=machine.has_pending_edit)
            batch, held = held[:VERIFY_BATCH], held[VERIFY_BATCH:]
            if not batch:
                break
            body = json.dumps({"deviceId": machine.device_id, "held": batch}).encode()
            try:
                status, text, _ = await self._post("/api/sync/verify", body)
            except DeviceRevoked:
                raise
            except Exception:  # noqa: BLE001 - offline: next sync
                return
            if status != 200:
                return
            effects, rolled_back = ig.verify_effects(json.loads(text), quarantine=self._quarantine,
                                                     pending=machine.has_pending_edit)
            stale += rolled_back
            if effects:
                await self._commit(effects)
        self._held_verified = self._held_verified or check_all
        if stale:
            await self._audit_quietly("integrity", "", "", [], outcome="failure",
                                      detail={"reason": "rolled-back", "corrected": stale, "via": "sync"})
            self._emit({"type": "integrity", "corrected": stale})

    def bench_integrity(self, on: bool) -> dict[str, Any]:
        """Benchmarks only: turn the store integrity checks off to measure what they cost (bench/integrity_bench.py)."""
        self._checks = bool(on)
        return {"checks": self._checks}
