"""Issue 18, item 2: the conflict screen is readable at 1024×768 and 768×1024 (no JSON, nothing off-screen),
nothing is chosen for the clinician, it says who made the other change and when, and an edited value is checked
by pyclient before it is accepted (a bad date is explained and the clinician's own value is kept)."""

from __future__ import annotations

import time
from typing import Any

from .conftest import Server, shot
from .helpers import sign_in_and_sync, wait_status
from .test_conflicts import _poll_server, _shared_allergy
from .test_rejected_changes import VIEWPORTS, assert_plain


def _birth_date(page: Any, pid: str, value: str) -> None:
    page.goto(f"/#/patient/{pid}/demographics")
    page.wait_for_selector("#form-demographics")
    page.fill("#form-demographics input[name=birth_date]", value)
    page.click("#form-demographics button[type=submit]")
    page.wait_for_selector("#patient-name")


def test_birth_date_conflict_is_readable_unchosen_and_validated(new_context: Any, server: Server) -> None:
    pid, _aid = _shared_allergy(server)
    a_ctx, b_ctx = new_context(), new_context()
    a = sign_in_and_sync(a_ctx, "dr.adams")
    b = sign_in_and_sync(b_ctx, "nurse.baker")
    b.set_viewport_size(VIEWPORTS["landscape"])
    b.goto(f"/#/patient/{pid}")
    b.wait_for_selector("#patient-name")
    b_ctx.set_offline(True)
    _birth_date(b, pid, "1971-03-09")
    wait_status(b, "d.pending === '1'")
    _birth_date(a, pid, "1971-03-10")
    _poll_server(server, f"Patient/{pid}", lambda p: p.get("birthDate") == "1971-03-10")
    b_ctx.set_offline(False)
    wait_status(b, "d.state === 'warn' && Number(d.pending) === 0", timeout=60_000)

    # The chart says "conflict" on the patient, not "pending sync".
    b.goto(f"/#/patient/{pid}")
    b.wait_for_selector("#patient-name .badge.conflict")
    assert "pending sync" not in b.inner_text("#patient-name")

    b.goto("/#/conflicts")
    b.wait_for_selector("form.conflict")
    block = b.locator("form.conflict [data-path='birthDate']")
    assert block.locator("legend").inner_text() == "Birth date"
    assert "1971-03-09" in block.locator(".side.mine").inner_text()
    assert "1971-03-10" in block.locator(".side.theirs").inner_text()
    # The server named who made the change that won (dr.adams is Alice Adams), never "another user".
    assert "The other change was saved by Alice Adams on" in b.inner_text("form.conflict")
    assert "another user" not in b.inner_text("form.conflict")
    assert b.locator("form.conflict input:checked").count() == 0  # nothing chosen for the clinician
    for label, size in VIEWPORTS.items():
        b.set_viewport_size(size)
        time.sleep(0.2)
        assert_plain(b)
        # Everything within the viewport: no horizontal scrolling, every side fully visible.
        assert b.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth + 1")
        for side in ("base", "mine", "theirs"):
            box = block.locator(f".side.{side}").bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= size["width"], (label, side, box)
        shot(b, f"34-conflict-birth-date-{label}")
    b.set_viewport_size(VIEWPORTS["landscape"])

    # Saving with no choice is refused in words.
    b.click("form.conflict button[type=submit]")
    b.wait_for_selector("form.conflict [data-path='birthDate'] .field-error:has-text('Choose one.')")

    # An edit the server would refuse is explained before anything is accepted; mine is still there.
    block.locator("input[value=edit]").check()
    block.locator(".edit-value").fill("not-a-date")
    b.click("form.conflict button[type=submit]")
    b.wait_for_selector("form.conflict [data-path='birthDate'] .field-error:has-text('year-month-day')")
    assert "1971-03-09" in block.locator(".side.mine").inner_text()
    assert server.fhir(f"Patient/{pid}")["birthDate"] == "1971-03-10"
    assert_plain(b)
    shot(b, "35-conflict-edit-refused-landscape")

    block.locator(".edit-value").fill("1971-03-11")
    b.click("form.conflict button[type=submit]")
    b.wait_for_selector("text=No conflicts")
    wait_status(b, "d.pending === '0' && d.synced === 'true'")
    _poll_server(server, f"Patient/{pid}", lambda p: p.get("birthDate") == "1971-03-11")
