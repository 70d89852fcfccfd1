"""Forms and sync paths the first e2e pass did not cover: medications (start, change, stop), notes, the
conflict screen's "edit" option, and closing the tab while a push is in flight."""

from __future__ import annotations

import base64
import time
from typing import Any

from .conftest import Server, shot
from .helpers import fill_dosage, open_patient, poll, sign_in_and_sync, unlock, wait_status
from .test_conflicts import _server_has, _set, _shared_allergy


def _until(fn: Any, what: str, timeout: float = 45) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"server never showed {what}")
        time.sleep(0.5)


def _current_pid(page: Any) -> str:
    return str(page.evaluate("() => decodeURIComponent(location.hash.split('/')[2])"))


def _med(server: Server, pid: str, name: str) -> dict[str, Any] | None:
    bundle = server.fhir(f"MedicationRequest?patient={pid}&_count=500")
    return next((e["resource"] for e in bundle.get("entry", [])
                 if e["resource"].get("medicationCodeableConcept", {}).get("text") == name), None)


def test_medication_start_change_stop(new_context: Any, server: Server) -> None:
    ctx = new_context()
    page = sign_in_and_sync(ctx)
    open_patient(page, "MRN-000002")
    pid = _current_pid(page)
    name = "Lisinopril 10 mg tablet (e2e)"

    page.click("text=Start medication")
    page.wait_for_selector("#form-medication")
    page.click("#form-medication button[type=submit]")  # empty: both fields explained, nothing saved
    page.wait_for_selector("#form-medication [data-field=dose_value] .field-error:not(:empty)")
    assert page.inner_text("#form-medication [data-field=name] .field-error")
    assert page.inner_text("#form-medication [data-field=route] .field-error")
    page.fill("#form-medication input[name=name]", name)
    fill_dosage(page, "#form-medication", "10", "mg", frequency="daily")  # issue 18 item 4: structured
    shot(page, "21-medication-start")
    page.click("#form-medication button[type=submit]")
    row = page.locator(f"#medications li:has-text('{name}')")
    row.wait_for()
    wait_status(page, "d.pending === '0' && d.synced === 'true'")
    med = _until(lambda: _med(server, pid, name), "the new medication")
    assert med["status"] == "active" and med["dosageInstruction"][0]["text"] == "10 mg by mouth once a day"
    assert med["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] == 10

    row.locator("button:has-text('Change')").click()
    page.wait_for_selector("#form-medication-change")
    # The change form is the same structured form, prefilled with the current dosage.
    assert page.input_value("#form-medication-change [data-dosage=dose_value]") == "10"
    assert page.input_value("#form-medication-change [data-dosage=frequency]") == "daily"
    page.fill("#form-medication-change [data-dosage=dose_value]", "20")
    page.click("#form-medication-change button[type=submit]")
    page.wait_for_selector("#medications li:has-text('20 mg by mouth once a day')")
    wait_status(page, "d.pending === '0' && d.synced === 'true'")
    _until(lambda: (_med(server, pid, name) or {}).get("dosageInstruction", [{}])[0].get("text")
           == "20 mg by mouth once a day", "the changed dosage")
    changed = _med(server, pid, name)["dosageInstruction"][0]
    assert changed["timing"]["repeat"]["frequency"] == 1 and changed["route"]["coding"][0]["code"] == "26643006"

    page.locator(f"#medications li:has-text('{name}') button:has-text('Stop')").click()
    page.wait_for_selector("#form-medication-stop")
    page.fill("#form-medication-stop input[name=reason]", "dry cough")
    page.click("#form-medication-stop button[type=submit]")
    page.wait_for_selector("#patient-name")
    wait_status(page, "d.pending === '0' && d.synced === 'true'")
    stopped = _until(lambda: (m := _med(server, pid, name)) and m["status"] == "stopped" and m, "the stop")
    assert stopped["statusReason"]["text"] == "dry cough"
    page.wait_for_selector(f"#medications li:has-text('{name}'):has-text('stopped: dry cough')")
    assert page.locator(f"#medications li:has-text('{name}') button:has-text('Stop')").count() == 0
    shot(page, "22-medication-stopped")


def test_write_a_note(new_context: Any, server: Server) -> None:
    ctx = new_context()
    page = sign_in_and_sync(ctx)
    open_patient(page, "MRN-000001")
    pid = _current_pid(page)
    title = "Follow-up visit (e2e)"
    text = "Feels better. BP controlled.\nContinue current plan; review in 3 months."
    page.click("text=Write note")
    page.wait_for_selector("#form-note")
    page.fill("#form-note input[name=title]", title)
    page.click("#form-note button[type=submit]")  # no text: refused with a message
    page.wait_for_selector("#form-note [data-field=text] .field-error:not(:empty)")
    page.fill("#form-note textarea[name=text]", text)
    shot(page, "23-note")
    page.click("#form-note button[type=submit]")
    page.wait_for_selector(f"#notes li:has-text('{title}')")
    wait_status(page, "d.pending === '0' && d.synced === 'true'")

    def server_note() -> dict[str, Any] | None:
        bundle = server.fhir(f"DocumentReference?patient={pid}&_count=500")
        return next((e["resource"] for e in bundle.get("entry", []) if e["resource"].get("description") == title),
                    None)

    note = _until(server_note, "the note")
    assert base64.b64decode(note["content"][0]["attachment"]["data"]).decode() == text
    page.locator(f"#notes li:has-text('{title}') summary").click()
    assert "review in 3 months" in page.inner_text(f"#notes li:has-text('{title}')")


def test_conflict_resolved_with_an_edited_value(new_context: Any, server: Server) -> None:
    pid, aid = _shared_allergy(server)
    a_ctx, b_ctx = new_context(), new_context()
    a = sign_in_and_sync(a_ctx, "dr.adams")
    b = sign_in_and_sync(b_ctx, "nurse.baker")
    for page in (a, b):
        page.goto(f"/#/patient/{pid}")
        page.wait_for_selector(f'#allergies li[data-id="{aid}"]', timeout=30_000)
    base = server.fhir(f"AllergyIntolerance/{aid}")["criticality"]
    theirs, mine = [v for v in ("high", "low", "unable-to-assess") if v != base]
    b_ctx.set_offline(True)
    _set(a, aid, "crit", theirs)
    _server_has(server, aid, "criticality", theirs)
    _set(b, aid, "crit", mine)
    b_ctx.set_offline(False)
    wait_status(b, "d.state === 'warn' && Number(d.pending) === 0", timeout=60_000)
    b.goto("/#/conflicts")
    b.wait_for_selector("form.conflict")
    row = b.locator("form.conflict [data-path='criticality']")
    row.locator("input[value=edit]").check()
    edit = row.locator(".edit-value")  # a choice of the field's own values (issue 18: the same choices as the form)
    assert edit.is_enabled()
    edit.select_option(base)  # neither mine nor theirs: the person's own value
    shot(b, "24-conflict-edit")
    b.click("form.conflict button[type=submit]")
    b.wait_for_selector("text=No conflicts")
    wait_status(b, "d.pending === '0' && d.synced === 'true'")
    _server_has(server, aid, "criticality", base)


def test_closing_the_tab_mid_push_loses_and_duplicates_nothing(new_context: Any, server: Server) -> None:
    ctx = new_context()
    page = sign_in_and_sync(ctx)
    open_patient(page, "MRN-000002")
    pid = _current_pid(page)
    hr, title = "137", f"Tab closed mid-sync {time.time_ns()}"

    ctx.set_offline(True)
    page.evaluate("a => window.omnicare.py.call('record_vitals', {patient_id: a[0], values: {hr: a[1], rr: '17'}})",
                  [pid, hr])
    page.evaluate("a => window.omnicare.py.call('add_note', {patient_id: a[0], title: a[1], text: 'kept'})",
                  [pid, title])
    wait_status(page, "d.pending === '3'")

    # The push reaches the server (which applies it) but its answer never reaches the tab: it is closed first.
    pushed: list[int] = []

    def hold(route: Any) -> None:
        route.fetch()
        pushed.append(1)  # never fulfilled: the tab goes away with the request in flight

    ctx.route("**/api/sync/push", hold)
    ctx.set_offline(False)
    deadline = time.monotonic() + 60
    while not pushed:
        assert time.monotonic() < deadline, "the push never started"
        page.wait_for_timeout(100)
    page.close()
    ctx.unroute("**/api/sync/push")

    # Reopened offline: every change is still there, still pending (never acknowledged), nothing half-done.
    ctx.set_offline(True)
    page = ctx.new_page()
    page.goto("/")
    unlock(page)
    page.wait_for_selector("#patients li")
    assert page.evaluate("() => window.omnicare.py.call('status')")["pending"] == 3
    page.goto(f"/#/patient/{pid}")
    page.wait_for_selector(f"#notes li:has-text('{title}')")

    # Online again: the same mutations are pushed again and acknowledged once; the server has each exactly once.
    ctx.set_offline(False)
    wait_status(page, "d.pending === '0' && d.synced === 'true'", timeout=60_000)
    obs = server.fhir(f"Observation?patient={pid}&_count=500")
    rates = [e["resource"] for e in obs.get("entry", [])
             if e["resource"].get("code", {}).get("text") == "Heart rate"
             and e["resource"].get("valueQuantity", {}).get("value") == int(hr)]
    assert len(rates) == 1, f"{len(rates)} copies of the heart rate on the server"
    notes = server.fhir(f"DocumentReference?patient={pid}&_count=500")
    assert sum(e["resource"].get("description") == title for e in notes.get("entry", [])) == 1
    poll(page, "() => !document.querySelector('#notes .badge.pending')")
