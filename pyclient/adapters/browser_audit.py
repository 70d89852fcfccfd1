"""Device audit upload (I/O side of :mod:`pyclient.audit_upload`) and the audit witness's report.

Kept out of ``browser_app.py`` (which is being split): the app's ``_push_audit`` calls
:func:`push_audit`, and its audit witness calls :func:`report_rewrite`. The rules (batch halving, bounded
retries, backoff, parking) are pure and live in :mod:`pyclient.audit_upload`.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from pyclient import audit_upload as au
from pyclient import auditlog, outcome
from pyclient.store import DeleteOutbox, PutMeta

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
