"""Issue 18, items 9 and 8: every interactive element on every screen is at least 44×44 CSS px, at 1024×768 and
768×1024 (bounding boxes measured in Chromium); the portrait header stays compact; and no screen shows "null",
JSON or stack text."""

from __future__ import annotations

from typing import Any

from .conftest import Server, shot
from .helpers import open_patient, poll, sign_in_and_sync
from .test_rejected_changes import assert_plain

VIEWPORTS = ({"width": 1024, "height": 768}, {"width": 768, "height": 1024})

# Radios and checkboxes are measured by their label (the label is the target); hidden things are skipped.
MEASURE = """() => {
  const out = [];
  const sel = 'a[href], button, input, select, textarea, summary, [role=button], [tabindex="0"]';
  for (const el of document.querySelectorAll(sel)) {
    if (el.closest('[hidden], dialog:not([open])') || el.classList.contains('skip')) continue;
    let target = el;
    if (el.matches('input[type=radio], input[type=checkbox]')) target = el.closest('label') || el;
    const r = target.getBoundingClientRect();
    const cs = getComputedStyle(target);
    if (r.width === 0 && r.height === 0) continue;
    if (cs.visibility === 'hidden' || cs.display === 'none') continue;
    if (r.width < 44 || r.height < 44) {
      out.push(`${target.tagName.toLowerCase()}${target.id ? '#' + target.id : ''}.${[...target.classList].join('.')} `
        + `"${(target.innerText || target.value || target.getAttribute('aria-label') || '').trim().slice(0, 30)}" `
        + `${Math.round(r.width)}x${Math.round(r.height)}`);
    }
  }
  return out;
}"""


def _check(page: Any, where: str, small: dict[str, list[str]]) -> None:
    assert_plain(page)
    for size in VIEWPORTS:
        page.set_viewport_size(size)
        page.wait_for_timeout(150)
        bad = page.evaluate(MEASURE)
        if bad:
            small[f"{where} {size['width']}x{size['height']}"] = bad


def test_every_control_is_at_least_44_px_on_every_screen(new_context: Any, server: Server) -> None:
    small: dict[str, list[str]] = {}
    ctx = new_context()
    first = ctx.new_page()
    first.goto("/")
    first.wait_for_selector("#signin")
    _check(first, "sign-in", small)
    first.close()
    page = sign_in_and_sync(ctx)
    _check(page, "patients", small)
    open_patient(page, "MRN-000002")
    for summary in page.locator("#notes summary").all()[:1]:
        summary.click()
    _check(page, "chart", small)
    # One tap on an allergy dropdown asks first; cancelling leaves the allergy as it was.
    crit = page.locator("#allergies select.crit").first
    before = crit.input_value()
    crit.select_option("high" if before != "high" else "low")
    page.wait_for_selector("dialog.dialog[open]")
    assert "Change the criticality of" in page.inner_text("dialog.dialog")
    _check(page, "allergy confirmation", small)
    for size in VIEWPORTS:
        page.set_viewport_size(size)
        shot(page, f"38-allergy-change-confirm-{size['width']}x{size['height']}", full_page=False)
    page.click("dialog.dialog button[value=cancel]")
    page.wait_for_selector("dialog.dialog", state="detached")
    poll(page, "v => document.querySelector('#allergies select.crit').value === v", before)
    pid = str(page.evaluate("() => decodeURIComponent(location.hash.split('/')[2])"))
    for form in ("vitals", "allergy", "medication", "note", "demographics"):
        page.goto(f"/#/patient/{pid}/{form}")
        page.wait_for_selector(f"#form-{form}")
        _check(page, form, small)
    for where in ("conflicts", "rejected", "device"):
        page.goto(f"/#/{where}")
        page.wait_for_selector("#main .card")
        _check(page, where, small)
    page.click("#lock")
    page.wait_for_selector("#unlock")
    _check(page, "unlock", small)
    assert not small, "controls under 44×44 px:\n" + "\n".join(f"{k}: {v}" for k, v in small.items())

    # Compact portrait header: brand + account buttons on one row, status below.
    page.set_viewport_size(VIEWPORTS[1])
    page.fill("#unlock input[name=pin]", "482916")
    page.click("#unlock button[type=submit]")
    page.wait_for_selector("#main .card")
    height = page.evaluate("() => document.querySelector('.topbar').getBoundingClientRect().height")
    assert height <= 112, height
