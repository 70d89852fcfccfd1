"""BrowserApp's device audit trail: sealed events queued on the device, their upload (I/O side of
:mod:`pyclient.audit_upload`) and the audit witness (:mod:`pyclient.auditlog`) with its report.

:class:`AuditMixin` is a mixin of :class:`pyclient.adapters.browser_app.BrowserApp` (as ``browser_chart``):
``_audit``/``_audit_many`` seal and append events, ``_push_audit`` calls :func:`push_audit`, and the witness
calls :func:`report_rewrite`. The rules (batch halving, bounded retries, backoff, parking; checkpoint
consistency) are pure and live in :mod:`pyclient.audit_upload` and :mod:`pyclient.auditlog`.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Awaitable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pyclient import audit_upload as au
from pyclient import auditlog, outcome
from pyclient.protocol import loads
from pyclient.store import DeleteOutbox, PutMeta
from pyclient.sync import SyncMachine

from .browser_base import AppParts, DeviceRevoked
from .indexeddb_store import js_to_py

AUDIT_TYPE = "DeviceAuditEvent"
AUDIT_PREFIX = "audit:"
AUDIT_BATCH = 500
# The newest audit checkpoint the server proved consistent, and a history rewrite this device saw (no PHI).
M_AUDIT_CHECKPOINT, M_AUDIT_VIOLATION = "audit.checkpoint", "audit.violation"

#: Meta key of the upload state (backoff, parked list) and prefix of each parked event's sealed copy.
M_AUDIT_UPLOAD = "audit.upload"
M_AUDIT_PARKED = "audit.parked."
#: The held checkpoint the last reported audit-history violation was found against (report once).
M_AUDIT_REPORTED = "audit.violation.reported"


def _reason(text: str) -> str:
    """The server's diagnostics (an OperationOutcome) in a few words; never the request body."""
    try:
        return outcome.text(json.loads(text), "")[:300]  # the one outcome reader
    except ValueError:
        return ""


async def upload_state(app: Any) -> au.UploadState:
    return au.UploadState.from_json(await app.store.meta_get(M_AUDIT_UPLOAD))


async def push_audit(app: Any, machine: Any, *, full: int, audit_type: str, revoked: type[Exception],
                     manual: bool = False) -> None:
    """Upload queued device audit events (in sequence order) and drop the ones the server holds; a refused
    batch is split, a lone refused event retried with backoff then parked with the server's reason.
    ``manual`` (the user pressed "Sync now"): the backoff wait is skipped once; refusals still count."""
    state = await upload_state(app)
    for _ in range(100):
        now = time.time()
        if not manual and not au.may_upload(state, now):
            return
        manual = False
        rows = await app.store.audit_list(au.batch_size(state, full))
        if not rows:
            if state.batch:
                state = au.UploadState(parked=state.parked, parked_total=state.parked_total)
                await app.store.apply([PutMeta(M_AUDIT_UPLOAD, state.to_json())])
            return
        opened = await app._open([(audit_type, eid, 0, blob) for eid, _seq, blob in rows])
        events = [{**ev, "seq": seq} for (_eid, seq, _b), ev in zip(rows, opened, strict=True) if ev is not None]
        body = json.dumps({"deviceId": machine.device_id, "events": events}).encode()
        try:
            status, text, _ = await app._post("/api/audit/device-events", body)
        except revoked:
            raise
        except Exception:  # noqa: BLE001 - offline: kept for the next sync
            status, text = 0, ""
        out = au.on_result(state, status=int(status), reason=_reason(text),
                           sent=[(eid, seq) for eid, seq, _b in rows], full=full, now=now)
        blobs = {eid: (seq, blob) for eid, seq, blob in rows}
        ops: list[Any] = [DeleteOutbox(eid) for eid in out.delete]
        for p in out.park:
            # An event that no longer opened is sent as nothing and also deleted on success: the server flags
            # its sequence number as a gap. A refused one is kept, sealed as it was, beside its reason.
            seq, blob = blobs[p.eid]
            ops += [PutMeta(M_AUDIT_PARKED + p.eid, json.dumps({"seq": seq, "reason": p.reason,
                                                                 "blob": base64.b64encode(blob).decode()})),
                    DeleteOutbox(p.eid)]
        if out.state != state or ops:
            await app.store.apply([*ops, PutMeta(M_AUDIT_UPLOAD, out.state.to_json())])
        state = out.state
        if out.park:
            app._emit({"type": "audit-parked", "count": state.parked_total,
                       "message": au.parked_message(state)})
        if not out.again:
            return


async def report_rewrite(app: Any, held: auditlog.Checkpoint | None, offered: auditlog.Checkpoint,
                         reason: str) -> None:
    """Queue the security event for an audit-history rewrite this device saw (once per held checkpoint): it
    is uploaded with the device's other audit events, filed by the server as a security event and counted and
    alerted on in the privacy officer's dashboard."""
    detail = auditlog.violation_report(held, offered, reason, await app.store.meta_get(M_AUDIT_REPORTED))
    if detail is not None:
        await app._audit_quietly(auditlog.WITNESS_ACTION, "", "", [], outcome="failure", detail=detail)
        await app.store.meta_put(M_AUDIT_REPORTED, auditlog.violation_key(held, offered))


class AuditMixin(AppParts):
    """BrowserApp's device audit trail: every read, search and write on the device is an audit event with its
    own gap-free per-device sequence, sealed and queued in the outbox, uploaded on the next sync; and the
    audit witness (the newest server checkpoint proved consistent). Relies on ``store``, ``machine``, ``_wc``,
    ``_seal``, ``_http``, ``_emit``."""

    _background: set[Any]
    audit_violation: str | None

    async def _audit(self, action: str, resource_type: str = "", rid: str = "",
                     patient_ids: Sequence[str] = (), *, outcome: str = "success",
                     detail: Mapping[str, Any] | None = None) -> None:
        """Seal one access event and append it to the outbox; IndexedDB gives it the next device sequence."""
        await self._audit_many([(action, resource_type, rid, patient_ids)], outcome=outcome, detail=detail)

    async def _audit_many(self, events: Sequence[tuple[str, str, str, Sequence[str]]], *, outcome: str = "success",
                          detail: Mapping[str, Any] | None = None) -> None:
        """Seal access events (action, resource type, id, patient ids) in one batch, append them in ONE transaction.

        Each sequence is allocated inside the same readwrite transaction as its append
        (``idb.apply`` op ``putAudit``, in order), so tabs never share or skip a number.
        """
        if self._wc is None or self.machine is None or not events:
            return
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        items: list[tuple[str, str, int, Mapping[str, Any]]] = [
            (AUDIT_TYPE, AUDIT_PREFIX + str(uuid.uuid4()), 0,
             {"action": action, "occurred": now, "resourceType": resource_type, "id": rid,
              "patientIds": [p for p in patient_ids if p][:100], "outcome": outcome, "purpose": "TREAT",
              "detail": {str(k)[:40]: str(v)[:200] for k, v in (detail or {}).items()}})
            for action, resource_type, rid, patient_ids in events]
        blobs = await self._seal(items)
        await self.store.audit_append_many([(eid, blob) for (_t, eid, _v, _e), blob in zip(items, blobs, strict=True)])

    async def _audit_quietly(self, *args: Any, **kwargs: Any) -> None:
        await self._quietly(self._audit(*args, **kwargs))

    @staticmethod
    async def _quietly(write: Awaitable[None]) -> None:
        try:
            await write
        except Exception:  # noqa: BLE001 - a full disk must not hide a chart; the console keeps the trace
            import traceback  # noqa: PLC0415

            traceback.print_exc()

    def _audit_later(self, *args: Any, **kwargs: Any) -> None:
        """Audit a read without adding its IndexedDB transaction to the latency the clinician waits for."""
        import asyncio  # noqa: PLC0415

        task = asyncio.ensure_future(self._audit_quietly(*args, **kwargs))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def audit_flush(self) -> int:
        """Wait for queued read audits to be written; returns how many events wait for upload."""
        import asyncio  # noqa: PLC0415

        if self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        return await self.store.audit_count()

    async def _push_audit(self, machine: SyncMachine, *, manual: bool = False) -> None:
        """Upload queued device audit events (bounded retries, refused ones parked): :func:`push_audit`."""
        await push_audit(self, machine, full=AUDIT_BATCH, audit_type=AUDIT_TYPE, revoked=DeviceRevoked,
                         manual=manual)

    async def audit_upload_state(self) -> dict[str, Any]:
        """Device audit upload: events parked after the server refused them (kept on the device), and why."""
        st = await upload_state(self)
        return {"parked": st.parked_total, "message": au.parked_message(st), "notBefore": st.not_before,
                "reasons": [p.reason for p in st.parked][-5:], "queued": await self.store.audit_count()}

    async def _audit_witness(self, offered_json: Any) -> None:
        """Keep the newest audit checkpoint the server proved consistent (``pyclient.auditlog``); a server
        whose history no longer extends what this device saw is flagged (``audit_log_state``)."""
        if offered_json is None:
            return
        try:
            offered = auditlog.Checkpoint.from_json(offered_json)
            raw_held = await self.store.meta_get(M_AUDIT_CHECKPOINT)
            held = auditlog.Checkpoint.from_json(json.loads(raw_held)) if raw_held else None
            decision = auditlog.checkpoint_offered(held, offered)
            if decision.kind == "need-proof" and held is not None:
                res = js_to_py(await self._http(
                    "GET", f"/api/audit/log/consistency?first={decision.first}&second={decision.second}", None))
                if int(res[0]) == 400 and offered.tree_size < held.tree_size:
                    # The server no longer has the (bigger) checkpoint this device was handed: it was removed.
                    decision = auditlog.Decision("violation", reason=f"the server lost the audit checkpoint of "
                                                                     f"size {held.tree_size} this device holds")
                elif int(res[0]) != 200:
                    return  # try again on the next sync
                else:
                    decision = auditlog.checkpoint_proof_check(held, offered, loads(str(res[1])))
            if decision.kind == "adopt":
                await self.store.meta_put(M_AUDIT_CHECKPOINT, json.dumps(offered.to_json()))
            elif decision.kind == "violation":
                await report_rewrite(self, held, offered, decision.reason)
                self.audit_violation = decision.reason
                await self.store.meta_put(M_AUDIT_VIOLATION, decision.reason)
                self._emit({"type": "audit-violation", "reason": decision.reason})
        except Exception:  # noqa: BLE001 - the witness never stops a sync
            return

    async def audit_log_state(self) -> dict[str, Any]:
        """The audit checkpoint this device holds (tree size) and any inconsistency it saw."""
        raw = await self.store.meta_get(M_AUDIT_CHECKPOINT)
        held = json.loads(raw) if raw else None
        return {"treeSize": held["treeSize"] if held else None, "root": held["root"] if held else None,
                "violation": await self.store.meta_get(M_AUDIT_VIOLATION)}
