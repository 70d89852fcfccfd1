"""Issue 18, item 3: a change the server refuses never vanishes. It is listed with the reason in plain words,
can be fixed and sent again or discarded (audited), is counted in the sign-out warning; and the app offers
only the controls the role allows (the server's permission matrix, shipped at sign-in)."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from .conftest import Server, shot
from .helpers import fill_dosage, open_patient, poll, sign_in_and_sync, wait_status

VIEWPORTS = {"landscape": {"width": 1024, "height": 768}, "portrait": {"width": 768, "height": 1024}}


PLAIN_FORBIDDEN = re.compile(r"\bnull\b|\bundefined\b|\bNone\b|Traceback|Error:|Exception|[{}]|\[object ")


def assert_plain(page: Any) -> None:
    """Issue 18 item 8: no "null", JSON or stack text anywhere on screen (status, banner, main, dialogs)."""
    text = page.inner_text("body")
    bad = PLAIN_FORBIDDEN.search(text)
    assert bad is None, f"{bad.group(0)!r} on screen: ...{text[max(0, bad.start() - 80):bad.end() + 80]}..."


def _shots(page: Any, name: str) -> None:
    assert_plain(page)
    for label, size in VIEWPORTS.items():
        page.set_viewport_size(size)
        time.sleep(0.2)
        shot(page, f"{name}-{label}")
    page.set_viewport_size(VIEWPORTS["landscape"])


def _start_med(page: Any, name: str, dosage: str) -> None:
    page.click("text=Start medication")
    page.wait_for_selector("#form-medication")
    page.fill("#form-medication input[name=name]", name)
    dose, unit, frequency = dosage.split()  # "5 mg daily": the structured form (issue 18 item 4)
    fill_dosage(page, "#form-medication", dose, unit, frequency=frequency)
    page.click("#form-medication button[type=submit]")
    page.wait_for_selector(f"#medications li:has-text('{name}')")


def _meds(server: Server, pid: str) -> dict[str, dict[str, Any]]:
    bundle = server.fhir(f"MedicationRequest?patient={pid}&_count=500")
    return {e["resource"].get("medicationCodeableConcept", {}).get("text", ""): e["resource"]
            for e in bundle.get("entry", [])}


def test_a_nurse_is_not_offered_medication_orders(new_context: Any, server: Server) -> None:
    page = sign_in_and_sync(new_context(), "nurse.baker")
    open_patient(page, "MRN-000002")
    head = page.locator(".head-actions")
    assert head.locator("text=Record vitals").count() == 1 and head.locator("text=Write note").count() == 1
    assert head.locator("text=Start medication").count() == 0
    assert page.locator("#medications button:has-text('Change'), #medications button:has-text('Stop')").count() == 0
    _shots(page, "30-nurse-chart-no-orders")


def test_refused_orders_are_listed_fixed_and_resent_or_discarded(new_context: Any, server: Server) -> None:
    ctx = new_context()
    page = sign_in_and_sync(ctx)  # dr.adams: a physician, so the device offers medication orders
    page.set_viewport_size(VIEWPORTS["landscape"])
    open_patient(page, "MRN-000002")
    pid = str(page.evaluate("() => decodeURIComponent(location.hash.split('/')[2])"))
    keep, drop = "Amlodipine 5 mg tablet (e2e refused)", "Atorvastatin 20 mg tablet (e2e refused)"
    ctx.set_offline(True)
    _start_med(page, keep, "5 mg daily")
    _start_med(page, drop, "20 mg bedtime")
    wait_status(page, "d.pending === '2'")
    # Meanwhile the administrator makes dr.adams a nurse: the server refuses both orders when they arrive.
    server.manage("assign_role", "dr.adams", "physician", "--remove")
    server.manage("assign_role", "dr.adams", "nurse")
    try:
        ctx.set_offline(False)
        wait_status(page, "d.rejected === '2' && d.pending === '0'")
        page.wait_for_selector("#banner:not([hidden]) >> text=kept on this device")
        banner = page.inner_text("#banner")
        assert "MedicationRequest" not in banner and "null" not in banner
        # The chart says what was refused: nothing silently disappears.
        page.goto(f"/#/patient/{pid}")
        page.wait_for_selector("#rejected-notice")
        notice = page.inner_text("#rejected-notice")
        assert keep in notice and drop in notice and "Your role may not enter medication orders" in notice
        _shots(page, "31-chart-refused-notice")

        page.click("#rejected-notice >> text=Review refused changes")
        page.wait_for_selector("#rejected-list form.rejected")
        assert page.locator("#rejected-list form.rejected").count() == 2
        text = page.inner_text("#main")
        assert "Why it was refused: Your role may not enter medication orders." in text
        for bad in ("MedicationRequest", "null", "{", "Traceback", "create on"):
            assert bad not in text, bad
        _shots(page, "32-refused-changes")

        # Sign-out counts the refused changes honestly (then cancel).
        page.click("#signout")
        page.wait_for_selector("dialog.dialog")
        assert "2 changes the server refused" in page.inner_text("dialog.dialog")
        page.click("dialog.dialog button:has-text('Cancel')")

        # Discard one (confirmed; audited).
        card = page.locator(f"#rejected-list form.rejected:has-text('{drop}')")
        card.locator("button.discard").click()
        page.wait_for_selector("dialog.dialog >> text=audit trail")
        page.click("dialog.dialog button.danger")
        poll(page, "() => document.querySelectorAll('#rejected-list form.rejected').length === 1")
        wait_status(page, "d.rejected === '1'")

        # The role is corrected; the other order is fixed (pyclient validates the field first) and sent again.
        server.manage("assign_role", "dr.adams", "nurse", "--remove")
        server.manage("assign_role", "dr.adams", "physician")
        scope = f"#rejected-list form.rejected:has-text('{keep}')"
        card = page.locator(scope)
        card.locator("[data-dosage=dose_value]").fill("two")  # the structured dosage form (issue 18 item 4)
        card.locator("button.retry").click()
        card.locator("[data-field=dose_value] .field-error:not(:empty)").wait_for()
        fill_dosage(page, scope, "1", "tablet", frequency="morning")
        card.locator("button.retry").click()
        page.wait_for_selector("#rejected-summary >> text=No refused changes")
        wait_status(page, "d.rejected === '0' && d.pending === '0' && d.synced === 'true'")
        deadline = time.monotonic() + 45
        while keep not in (meds := _meds(server, pid)) and time.monotonic() < deadline:
            time.sleep(0.5)
        [fixed] = meds[keep]["dosageInstruction"]
        assert fixed["text"] == "1 tablet by mouth every morning" and fixed["timing"]["repeat"]["when"] == ["MORN"]
        assert drop not in meds
        page.goto(f"/#/patient/{pid}")
        page.wait_for_selector("#medications li:has-text('1 tablet by mouth every morning')")
        assert page.locator("#rejected-notice").count() == 0
        assert page.locator("#banner:not([hidden])").count() == 0  # the refusal banner left with the last one
        _shots(page, "33-refused-change-resent")
    finally:
        server.manage("assign_role", "dr.adams", "nurse", "--remove")
        server.manage("assign_role", "dr.adams", "physician")
    # The discard is in the audit trail (sent by the device with its other offline events).
    page.evaluate("() => window.omnicare.runner.kick('test')")
    out = ""
    deadline = time.monotonic() + 45
    while "discarded" not in out and time.monotonic() < deadline:
        time.sleep(1)
        out = server.manage("shell", "-c", "from omnicare.audit.models import AuditEvent; import json; "
                            "print(json.dumps([e.detail for e in AuditEvent.objects.filter(action='delete', "
                            "resource_type='MedicationRequest')], default=str))")
    assert "change refused by the server" in out, json.dumps(out)[:500]
