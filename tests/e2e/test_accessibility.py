"""Issue 18, item 13: WCAG 2.1 AA, checked by a third-party checker (axe-core from npm) on every screen at 1024×768
and 768×1024 with zero violations; focus moves to the new screen's heading (and it is announced) after every
screen change; "Forgot PIN" works from the keyboard; and a keyboard-only walk from sign-in to a saved note.

axe is injected without loosening the CSP: ``page.evaluate`` goes through the DevTools protocol
(``Runtime.evaluate``), which the page's CSP does not govern; a <script> tag would be refused (script-src 'self')."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .conftest import PIN, REPO, USERS, Server, shot
from .helpers import AXE_VIEWPORTS as VIEWPORTS
from .helpers import assert_axe_clean as _assert_none
from .helpers import axe_check, axe_source, open_patient, poll, sign_in_and_sync, wait_cache
from .helpers import focus_on_heading as _focus_on_heading

FOCUS = "() => { const a = document.activeElement; return a ? a.tagName + (a.id ? '#' + a.id : '') : ''; }"


def _redraw_keeps_focus(page: Any, focus: str | None = None) -> str:
    """Redraw the screen on display as a sync does (another tab's "changed" message) and return where the focus
    is after it: it must never fall to <body> (WCAG 2.4.3), even when the focused element was replaced."""
    if focus:
        page.focus(focus)
    page.evaluate("""() => { window.__drawn = document.querySelector('#main h1');
        new BroadcastChannel('omnicare').postMessage({ type: 'changed' }); }""")
    poll(page, "() => document.querySelector('#main h1') !== window.__drawn", timeout=20)
    page.wait_for_timeout(100)
    where = str(page.evaluate(FOCUS))
    assert where not in ("BODY", ""), "a redraw dropped the focus to <body>"
    return where


def test_axe_finds_nothing_on_any_screen_at_both_sizes(new_context: Any, server: Server) -> None:
    found: dict[str, list[str]] = {}
    ctx = new_context()
    page = ctx.new_page()
    csp = []
    page.on("console", lambda m: csp.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto("/")
    page.wait_for_selector("#signin")
    axe_check(page, "sign-in", found)
    page.fill("#signin input[name=username]", "dr.adams")
    page.fill("#signin input[name=password]", USERS["dr.adams"])
    page.click("#signin button[type=submit]")
    page.wait_for_selector("#pin-setup")
    axe_check(page, "PIN setup", found)
    page.fill("#pin-setup input[name=pin]", PIN)
    page.fill("#pin-setup input[name=pin2]", "000000")
    page.click("#pin-setup button[type=submit]")  # mismatch: the error state is checked too
    page.wait_for_selector("#pin-setup [data-field=pin2] .field-error:not(:empty)")
    axe_check(page, "PIN setup with an error", found)
    page.fill("#pin-setup input[name=pin2]", PIN)
    page.click("#pin-setup button[type=submit]")
    page.wait_for_selector("#patients li", timeout=120_000)
    wait_cache(page)
    assert _focus_on_heading(page) == "Patients"
    assert _redraw_keeps_focus(page) == "H1"  # a sync redrawing the list keeps the focus on the heading
    assert _redraw_keeps_focus(page, "#patients li a") == "H1"  # the focused row was replaced: its heading
    axe_check(page, "patient list", found)
    page.fill("#q", "zzzz-nobody")
    poll(page, "() => (document.getElementById('result-summary')?.textContent || '').includes('zzzz')")
    assert page.evaluate(FOCUS) == "INPUT#q"  # a search redraw never steals the focus from the box
    axe_check(page, "patient list, no match", found)

    open_patient(page, "MRN-000002")
    assert _focus_on_heading(page)
    assert _redraw_keeps_focus(page) == "H1"
    for summary in page.locator("#notes summary").all()[:1]:
        summary.click()
    axe_check(page, "chart", found)
    for size in VIEWPORTS:  # the status pill and a focus ring, to look at
        page.set_viewport_size(size)
        page.keyboard.press("Shift+Tab")
        page.focus("#main .head-actions a")
        page.keyboard.press("Tab")
        page.keyboard.press("Shift+Tab")
        shot(page, f"40-a11y-focus-ring-and-status-{size['width']}x{size['height']}", full_page=False)
        page.focus("#sync-now")  # the ring on the teal header (pale amber there)
        shot(page, f"41-a11y-focus-ring-header-{size['width']}x{size['height']}", full_page=False)

    crit = page.locator("#allergies select.crit").first
    before = crit.input_value()
    crit.select_option("high" if before != "high" else "low")
    page.wait_for_selector("dialog.dialog[open]")
    axe_check(page, "allergy confirmation dialog", found)
    page.click("dialog.dialog button[value=cancel]")
    page.wait_for_selector("dialog.dialog", state="detached")

    pid = str(page.evaluate("() => decodeURIComponent(location.hash.split('/')[2])"))
    for form in ("vitals", "allergy", "medication", "note", "demographics"):
        page.goto(f"/#/patient/{pid}/{form}")
        page.wait_for_selector(f"#form-{form}")
        axe_check(page, f"{form} form", found)
    page.goto(f"/#/patient/{pid}/note")
    page.wait_for_selector("#form-note")
    page.click("#form-note button[type=submit]")  # empty: errors shown beside the fields
    page.wait_for_selector("#form-note .field-error:not(:empty)")
    axe_check(page, "note form with errors", found)
    page.goto(f"/#/patient/{pid}")
    page.wait_for_selector("#patient-name")
    if page.locator("#medications button:has-text('Change')").count():
        page.locator("#medications button:has-text('Change')").first.click()
        page.wait_for_selector("#main form")
        axe_check(page, "change medication form", found)
    for where in ("conflicts", "rejected"):
        page.goto(f"/#/{where}")
        page.wait_for_selector("#main .card")
        assert _focus_on_heading(page)
        axe_check(page, where, found)

    page.click("#signout")
    page.wait_for_selector("dialog.dialog[open]")
    axe_check(page, "sign-out dialog", found)
    page.click("dialog.dialog button[value=cancel]")
    page.wait_for_selector("dialog.dialog", state="detached")

    page.click("#lock")
    page.wait_for_selector("#unlock")
    axe_check(page, "unlock", found)
    page.fill("#unlock input[name=pin]", "000000")
    page.click("#unlock button[type=submit]")
    page.wait_for_selector("#unlock .form-error:not(:empty)")
    axe_check(page, "unlock with a wrong PIN", found)
    assert not csp, csp  # the checker ran without the CSP being loosened or tripped
    _assert_none(found)


def _tab_to(page: Any, selector: str, *, limit: int = 60) -> None:
    """Press Tab until the focused element matches ``selector`` (keyboard only: no clicks)."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("s => !!document.activeElement?.matches(s)", selector):
            return
    raise AssertionError(f"Tab never reached {selector}; focus is on {page.evaluate(FOCUS)}")


def test_keyboard_only_sign_in_chart_form_save(new_context: Any, server: Server) -> None:
    ctx = new_context()
    page = ctx.new_page()
    page.set_viewport_size(VIEWPORTS[0])
    page.goto("/")
    page.wait_for_selector("#signin")
    poll(page, "() => document.activeElement?.name === 'username'")
    page.keyboard.type("dr.adams")
    _tab_to(page, "#signin input[name=password]")
    page.keyboard.type(USERS["dr.adams"])
    _tab_to(page, "#signin button[type=submit]")
    page.keyboard.press("Enter")
    page.wait_for_selector("#pin-setup")
    poll(page, "() => document.activeElement?.name === 'pin'")
    page.keyboard.type(PIN)
    _tab_to(page, "#pin-setup input[name=pin2]")
    page.keyboard.type(PIN)
    _tab_to(page, "#pin-setup button[type=submit]")
    page.keyboard.press("Enter")
    page.wait_for_selector("#patients li", timeout=120_000)
    wait_cache(page)
    _focus_on_heading(page)
    _tab_to(page, "#patients li a")
    page.keyboard.press("Enter")
    page.wait_for_selector("#patient-name")
    assert _focus_on_heading(page)
    _tab_to(page, "#main .head-actions a[href$='/note']")
    page.keyboard.press("Enter")
    page.wait_for_selector("#form-note")
    poll(page, "() => document.activeElement?.name === 'title'")
    page.keyboard.type("Keyboard-only note")
    _tab_to(page, "#form-note textarea[name=text]")
    page.keyboard.type("Written and saved without a pointer.")
    _tab_to(page, "#form-note button[type=submit]")
    page.keyboard.press("Enter")
    page.wait_for_selector("#notes li:has-text('Keyboard-only note')")
    assert _focus_on_heading(page)

    # "Forgot PIN" is a button: Enter and Space both open the sign-out question.
    page.keyboard.press("Control+Home")
    _tab_to(page, "#lock")
    page.keyboard.press("Enter")
    page.wait_for_selector("#unlock")
    for key in ("Enter", " "):
        _tab_to(page, "#unlock #forgot-pin")
        page.keyboard.press(key)
        page.wait_for_selector("dialog.dialog[open]")
        page.keyboard.press("Escape")
        page.wait_for_selector("dialog.dialog", state="detached")


def test_axe_finds_nothing_on_a_conflict_and_its_review_link(new_context: Any, server: Server) -> None:
    """The populated conflict screen, the chart's "conflict" badge and the status pill's "Review" link."""
    from .helpers import wait_status  # noqa: PLC0415
    from .test_conflict_screen import _birth_date  # noqa: PLC0415
    from .test_conflicts import _poll_server, _shared_allergy  # noqa: PLC0415

    found: dict[str, list[str]] = {}
    pid, _aid = _shared_allergy(server)
    a_ctx, b_ctx = new_context(), new_context()
    a = sign_in_and_sync(a_ctx, "dr.adams")
    b = sign_in_and_sync(b_ctx, "nurse.baker")
    b.goto(f"/#/patient/{pid}")
    b.wait_for_selector("#patient-name")
    b_ctx.set_offline(True)
    _birth_date(b, pid, "1972-05-09")
    wait_status(b, "d.pending === '1'")
    _birth_date(a, pid, "1972-05-10")
    _poll_server(server, f"Patient/{pid}", lambda p: p.get("birthDate") == "1972-05-10")
    b_ctx.set_offline(False)
    wait_status(b, "d.state === 'warn' && Number(d.pending) === 0", timeout=60_000)
    b.goto(f"/#/patient/{pid}")
    b.wait_for_selector("#patient-name .badge.conflict")
    b.wait_for_selector("#sync a.conflict-link")
    axe_check(b, "chart with a conflict and the Review link", found)
    for size in VIEWPORTS:
        b.set_viewport_size(size)
        shot(b, f"42-a11y-status-review-link-{size['width']}x{size['height']}", full_page=False)
    b.goto("/#/conflicts")
    b.wait_for_selector("form.conflict")
    assert _focus_on_heading(b) == "Conflicts"
    axe_check(b, "conflict screen", found)
    b.click("form.conflict button[type=submit]")  # nothing chosen: the screen says so
    axe_check(b, "conflict screen with its error", found)
    _assert_none(found)


def test_axe_finds_nothing_on_refused_changes(new_context: Any, server: Server) -> None:
    """A change the server refused: the chart's notice, the populated list and the discard question."""
    from .helpers import wait_status  # noqa: PLC0415
    from .test_rejected_changes import _start_med  # noqa: PLC0415

    found: dict[str, list[str]] = {}
    ctx = new_context()
    page = sign_in_and_sync(ctx)
    open_patient(page, "MRN-000002")
    pid = str(page.evaluate("() => decodeURIComponent(location.hash.split('/')[2])"))
    ctx.set_offline(True)
    _start_med(page, "Lisinopril 10 mg tablet (e2e a11y)", "10 mg daily")
    wait_status(page, "d.pending === '1'")
    server.manage("assign_role", "dr.adams", "physician", "--remove")
    server.manage("assign_role", "dr.adams", "nurse")
    try:
        ctx.set_offline(False)
        wait_status(page, "d.rejected === '1' && d.pending === '0'")
        page.goto(f"/#/patient/{pid}")
        page.wait_for_selector("#rejected-notice")
        axe_check(page, "chart with a refused change", found)
        page.goto("/#/rejected")
        page.wait_for_selector("#rejected-list form.rejected")
        assert _focus_on_heading(page) == "Refused changes"
        axe_check(page, "refused changes", found)
        page.locator("#rejected-list form.rejected button.discard").first.click()
        page.wait_for_selector("dialog.dialog[open]")
        axe_check(page, "discard question", found)
        page.click("dialog.dialog button.danger")
        page.wait_for_selector("#rejected-summary >> text=No refused changes")
    finally:
        server.manage("assign_role", "dr.adams", "nurse", "--remove")
        server.manage("assign_role", "dr.adams", "physician")
    _assert_none(found)


def test_axe_source_is_the_npm_package() -> None:
    """The checker is the third-party package from npm (pinned in package.json), not a copy of our own."""
    text = axe_source()
    assert text.lstrip().startswith("/*! axe v")
    assert '"axe-core"' in (Path(REPO) / "package.json").read_text()
