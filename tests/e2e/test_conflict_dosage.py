"""Issue 18, items 2 and 4: a conflict on a structured dosage, resolved by Edit through the same structured form
the dosage is entered with, at 1024×768 and 768×1024. The other clinician is named (the server knows who wrote
the version that won), a bad Edit is refused on the device in words and the clinician's own value is kept."""

from __future__ import annotations

import time
from typing import Any

import pytest

from .conftest import Server, shot
from .helpers import decide_cds, fill_dosage, sign_in_and_sync, wait_status
from .test_conflicts import _poll_server
from .test_rejected_changes import VIEWPORTS, assert_plain

ORAL = {"coding": [{"system": "http://snomed.info/sct", "code": "26643006", "display": "Oral route"}]}


def _shared_medication(server: Server) -> dict[str, Any]:
    """An active medication order both dr.adams and dr.chen (two physicians) may change."""
    seen = []
    for user in ("dr.adams", "dr.chen"):
        bundle = server.fhir("MedicationRequest?status=active&_count=500", user=user)
        seen.append({e["resource"]["id"]: e["resource"] for e in bundle.get("entry", [])})
    shared = sorted(set(seen[0]) & set(seen[1]))
    if not shared:
        pytest.fail("the demo seed gives dr.adams and dr.chen no active medication in common")
    return seen[0][shared[0]]


def _no_sideways_scroll(page: Any) -> None:
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth + 1")


def test_dosage_conflict_is_resolved_by_edit_through_the_structured_form(new_context: Any, server: Server) -> None:
    med = _shared_medication(server)
    mid = med["id"]
    pid = med["subject"]["reference"].split("/")[1]
    ctx = new_context()
    page = sign_in_and_sync(ctx, "dr.adams")
    page.set_viewport_size(VIEWPORTS["landscape"])
    page.goto(f"/#/patient/{pid}")
    page.wait_for_selector(f'#medications li[data-id="{mid}"]')

    # Offline, dr.adams changes the dosage with the structured form: 2 tablets by mouth twice a day.
    ctx.set_offline(True)
    page.goto(f"/#/patient/{pid}/medication-change/{mid}")
    page.wait_for_selector("#form-medication-change [data-dosage=dose_value]")
    fill_dosage(page, "#form-medication-change", "2", "tablet", frequency="bid")
    page.click("#form-medication-change button[type=submit]")
    page.wait_for_selector("#patient-name, .cds-review")
    if page.locator(".cds-review").count():
        decide_cds(page)
        page.wait_for_selector("#patient-name")
    wait_status(page, "Number(d.pending) >= 1")

    # Meanwhile dr.chen changes it on the server (REST): 1 tablet by mouth every 8 hours.
    current = server.fhir(f"MedicationRequest/{mid}", user="dr.chen")
    theirs = {"sequence": 1, "text": "1 tablet by mouth every 8 hours", "route": ORAL,
              "timing": {"repeat": {"frequency": 1, "period": 8, "periodUnit": "h"}},
              "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "tablet", "code": "TAB",
                                                "system": "http://terminology.hl7.org/CodeSystem/v3-orderableDrugForm"}}]}
    status, _ = server.api("PUT", f"/fhir/R4/MedicationRequest/{mid}", {**current, "dosageInstruction": [theirs]},
                           user="dr.chen")
    assert status == 200, status
    ctx.set_offline(False)
    wait_status(page, "d.state === 'warn' && Number(d.pending) === 0", timeout=60_000)

    # The chart marks the order "conflict", not "pending sync".
    page.goto(f"/#/patient/{pid}")
    row = page.locator(f'#medications li[data-id="{mid}"]')
    row.locator("a.badge.conflict").wait_for()
    assert "pending sync" not in row.inner_text()

    page.goto("/#/conflicts")
    page.wait_for_selector("form.conflict [data-path='dosageInstruction']")
    block = page.locator("form.conflict [data-path='dosageInstruction']")
    assert block.locator("legend").inner_text() == "Dosage"
    assert "2 tablets by mouth twice a day" in block.locator(".side.mine").inner_text()
    assert "1 tablet by mouth every 8 hours" in block.locator(".side.theirs").inner_text()
    text = page.inner_text("form.conflict")
    assert "saved by Wei Chen on" in text and "another user" not in text
    assert page.locator("form.conflict input:checked").count() == 0  # nothing chosen for the clinician
    assert block.locator("fieldset.dosage-edit").is_hidden()

    # Edit opens the structured dosage form, prefilled with this device's value.
    block.locator("input[value=edit]").check()
    edit = block.locator("fieldset.dosage-edit")
    edit.wait_for()
    assert edit.locator("[data-dosage=dose_value]").input_value() == "2"
    assert edit.locator("[data-dosage=dose_unit]").input_value() == "tablet"
    assert edit.locator("[data-dosage=route]").input_value() == "oral"
    assert edit.locator("[data-dosage=frequency]").input_value() == "bid"
    for label, size in VIEWPORTS.items():
        page.set_viewport_size(size)
        time.sleep(0.2)
        assert_plain(page)
        _no_sideways_scroll(page)
        for side in ("base", "mine", "theirs"):
            box = block.locator(f".side.{side}").bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= size["width"], (label, side, box)
        for control in edit.locator("input[type=text], select, label.dosage-prn").all():
            box = control.bounding_box()
            assert box and box["x"] + box["width"] <= size["width"] and box["height"] >= 44, (label, box)
        shot(page, f"36-conflict-dosage-edit-{label}")

    # A dose that is not a number is refused on the device, in words; the clinician's own value is kept.
    page.set_viewport_size(VIEWPORTS["portrait"])
    edit.locator("[data-dosage=dose_value]").fill("two")
    page.click("form.conflict button[type=submit]")
    page.wait_for_selector("form.conflict [data-field='dosageInstruction:dose_value'] .field-error:has-text('number above 0')")
    assert "2 tablets by mouth twice a day" in block.locator(".side.mine").inner_text()
    assert edit.locator("[data-dosage=frequency]").input_value() == "bid"  # what they typed stays
    assert page.locator("form.conflict").count() == 1  # still open: nothing was accepted
    assert server.fhir(f"MedicationRequest/{mid}")["dosageInstruction"][0]["text"] == "1 tablet by mouth every 8 hours"
    assert_plain(page)
    shot(page, "37-conflict-dosage-edit-refused-portrait")

    # A valid structured Edit resolves it; the server gets a structured dosage whose text the form wrote.
    fill_dosage(page, "form.conflict fieldset.dosage-edit", "1", "tablet", frequency="q12h", duration="5")
    page.click("form.conflict button[type=submit]")
    page.wait_for_selector("text=No conflicts")
    wait_status(page, "d.pending === '0' && d.synced === 'true'")
    res = _poll_server(server, f"MedicationRequest/{mid}", lambda m: m["dosageInstruction"][0].get("text")
                       == "1 tablet by mouth every 12 hours for 5 days")
    [d] = res["dosageInstruction"]
    assert d["timing"]["repeat"] == {"frequency": 1, "period": 12, "periodUnit": "h",
                                     "boundsDuration": {"value": 5, "unit": "days",
                                                        "system": "http://unitsofmeasure.org", "code": "d"}}
    assert d["doseAndRate"][0]["doseQuantity"]["value"] == 1 and d["route"]["coding"][0]["code"] == "26643006"
    page.goto(f"/#/patient/{pid}")
    page.wait_for_selector("#medications li:has-text('1 tablet by mouth every 12 hours for 5 days')")
    page.set_viewport_size(VIEWPORTS["landscape"])
