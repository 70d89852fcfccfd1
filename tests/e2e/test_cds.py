"""Offline medication safety at order time: a penicillin allergy and then amoxicillin -> a critical card that
blocks the order until it is cancelled or overridden with a reason; the decision reaches the server as a
DetectedIssue when the network returns."""

from __future__ import annotations

import time
from typing import Any

from .conftest import Server, shot
from .helpers import fill_dosage, open_patient, poll, sign_in_and_sync, wait_status


def _until(fn: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"server never showed {what}")
        time.sleep(0.5)


def _issues(server: Server, pid: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in server.fhir(f"DetectedIssue?patient={pid}&_count=100").get("entry", [])]


def test_penicillin_allergy_then_amoxicillin_offline(new_context: Any, server: Server) -> None:
    ctx = new_context()
    page = sign_in_and_sync(ctx)
    # The signed bundles are fetched at the end of the first sync round, which may still be running.
    poll(page, "async () => (await window.omnicare.py.call('cds_status')).kb.source === 'server'", timeout=120)
    open_patient(page, "MRN-000004")
    pid = page.evaluate("() => decodeURIComponent(location.hash.split('/')[2])")
    # The signed knowledge base was fetched and verified during the first sync.
    page.wait_for_selector("#cds-version")
    assert "fetched" in page.inner_text("#cds-version")
    assert page.locator("#guidelines li").count() == 3

    ctx.set_offline(True)
    page.click("text=Add allergy")
    page.wait_for_selector("#form-allergy")
    page.fill("#form-allergy input[name=substance]", "Penicillin")
    page.fill("#form-allergy input[name=reaction]", "Anaphylaxis")
    page.select_option("#form-allergy select[name=criticality]", "high")
    page.click("#form-allergy button[type=submit]")
    page.wait_for_selector("#allergies li:has-text('Penicillin')")

    # Cancelled: nothing is ordered, the decision is still recorded.
    page.click("text=Start medication")
    page.wait_for_selector("#form-medication")
    page.fill("#form-medication input[name=name]", "Ampicillin 500 mg capsule")
    fill_dosage(page, "#form-medication", "500", "mg", frequency="qid")
    page.click("#form-medication button[type=submit]")
    page.wait_for_selector(".cds-review .cds-card.critical")
    page.click("#cds-cancel")
    page.wait_for_selector("#patient-name")
    assert page.locator("#medications li:has-text('Ampicillin')").count() == 0

    page.click("text=Start medication")
    page.wait_for_selector("#form-medication")
    page.fill("#form-medication input[name=name]", "Amoxicillin 500 mg capsule")
    fill_dosage(page, "#form-medication", "500", "mg", frequency="tid")
    page.click("#form-medication button[type=submit]")
    card = page.locator(".cds-review .cds-card.critical")
    card.wait_for()
    assert "Critical" in card.inner_text() and "Penicillin" in card.inner_text()
    assert page.locator(".cds-review .cds-advice, .cds-review .cds-reason").count() >= 1
    assert page.locator("#form-medication > .actions").is_hidden()  # the plain Save is gone
    for w, hgt in ((1024, 768), (768, 1024)):
        page.set_viewport_size({"width": w, "height": hgt})
        page.locator(".cds-review").scroll_into_view_if_needed()
        shot(page, f"40-cds-critical-{w}x{hgt}", full_page=False)
    for box in page.locator(".cds-reason-pick, #cds-override, #cds-cancel").all():
        assert box.bounding_box()["height"] >= 44
    page.set_viewport_size({"width": 1180, "height": 820})

    page.click("#cds-override")  # no reason chosen: refused, still on the form
    page.wait_for_selector(".cds-error:not(:empty)")
    assert page.locator("#form-medication").count() == 1
    page.locator(".cds-reason-pick:has-text('Allergy record is inaccurate')").click()
    page.click("#cds-override")
    row = page.locator("#medications li:has-text('Amoxicillin 500 mg capsule')")
    row.wait_for()
    # allergy + cancelled-issue + order + override-issue (+ the allergy itself) all wait in the outbox
    wait_status(page, "d.state === 'offline' && Number(d.pending) >= 4")
    # The chart lists both recorded decisions (offline, from the encrypted store).
    page.wait_for_selector("#cds-alerts li[data-decision=overridden]")
    # Newest first by the time each decision was recorded (to the second; both usually within one minute). The
    # chart draws the list with the chart in one step (CI on 547e927 once looked between a redraw and its late
    # panel). CI on 54e4797 once listed the cancelled order above the later override, not reproduced in three
    # runs here: the recorded times are part of the message, to tell a wrong order from inverted times.
    listed = page.eval_on_selector_all("#cds-alerts li", "els => els.map((e) => [e.dataset.decision, e.dataset.at])")
    decisions = [d for d, _ in listed]
    assert [at for _, at in listed] == sorted((at for _, at in listed), reverse=True), listed
    assert {"overridden", "cancelled"} <= set(decisions[:2]), listed
    assert "Allergy record is inaccurate" in page.inner_text("#cds-alerts")
    shot(page, "41-cds-overridden-offline")
    page.set_viewport_size({"width": 768, "height": 1024})
    # The chart re-renders when the status changes; scroll to whichever panel is current.
    page.wait_for_selector("#cds-panel #cds-alerts")
    page.evaluate("() => document.getElementById('cds-panel')?.scrollIntoView()")
    shot(page, "42-cds-chart-panel-768x1024", full_page=False)
    page.set_viewport_size({"width": 1180, "height": 820})

    ctx.set_offline(False)
    wait_status(page, "d.pending === '0' && d.synced === 'true'", timeout=90_000)
    issues = _until(lambda: [i for i in _issues(server, pid) if i["status"] == "final"] or None,
                    "the DetectedIssues", timeout=60)
    by_decision = {i["mitigation"][0]["action"]["coding"][0]["code"]: i for i in issues}
    assert set(by_decision) >= {"overridden", "cancelled"}
    over = by_decision["overridden"]
    assert over["severity"] == "high"
    assert [c["code"] for c in over["mitigation"][0]["action"]["coding"]] == ["overridden", "allergy-history-inaccurate"]
    meds = server.fhir(f"MedicationRequest?patient={pid}&_count=500").get("entry", [])
    amox = next(e["resource"] for e in meds
                if e["resource"].get("medicationCodeableConcept", {}).get("text") == "Amoxicillin 500 mg capsule")
    assert over["implicated"][0]["reference"] == f"MedicationRequest/{amox['id']}"
    assert {"reference": f"DetectedIssue/{over['id']}"} in amox["detectedIssue"]
    assert not any("Ampicillin" in (e["resource"].get("medicationCodeableConcept") or {}).get("text", "")
                   for e in meds)
    # The server re-checked the order and found the critical alert acknowledged: no "unacknowledged" issue.
    assert not [i for i in _issues(server, pid) if i["status"] == "preliminary"
                and i["implicated"][0]["reference"] == f"MedicationRequest/{amox['id']}"]
    def decision_audited() -> bool:
        status, audit = server.api("GET", f"/api/audit/events?action=create&patient={pid}&_count=500",
                                   user="privacy.officer")
        assert status == 200, audit
        details = [str(e["resource"]) for e in audit.get("entry", [])]
        return any("overridden" in d and "allergy-history-inaccurate" in d for d in details)

    _until(decision_audited, "the device's audit event of the override")
    poll(page, "() => !document.querySelector('#medications .badge.pending')")
