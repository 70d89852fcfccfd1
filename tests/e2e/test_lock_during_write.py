"""Issue 18, item 14: the lock (manual or idle) waits for a write in progress: a vitals set being saved when the
lock comes is saved whole, with no raw error, and is there after unlocking."""

from __future__ import annotations

from typing import Any

from .conftest import Server
from .helpers import open_patient, sign_in_and_sync, unlock, wait_status
from .test_rejected_changes import assert_plain


def test_lock_during_a_save_keeps_the_whole_vitals_set(new_context: Any, server: Server) -> None:
    ctx = new_context()
    page = sign_in_and_sync(ctx)
    open_patient(page, "MRN-000002")
    pid = str(page.evaluate("() => decodeURIComponent(location.hash.split('/')[2])"))
    ctx.set_offline(True)  # keep it pending, so the test can count it
    result = page.evaluate("""async (pid) => {
        const saving = window.omnicare.py.call("record_vitals", { patient_id: pid,
            values: { sbp: "141", dbp: "93", hr: "77", rr: "15", temp: "37.1", spo2: "97" } });
        document.getElementById("lock").click();  // the lock arrives while the save is in progress
        try { await saving; return "saved"; } catch (err) { return "failed: " + err.message; }
    }""", pid)
    assert result == "saved", result
    unlock(page)
    page.wait_for_selector("#patient-name")
    wait_status(page, "d.pending === '5'")  # BP panel + HR + RR + temperature + SpO2: all or nothing
    assert "141/93" in page.inner_text("#vitals")
    assert_plain(page)
