"""Issue 18 items 11 and 12 in Chromium: the patient search reads MRN digits and local dates; the sign-in form
appears before the Python runtime has loaded, and a sign-in sent early waits for it ("Starting…").
"""

from __future__ import annotations

import re
from typing import Any

from .conftest import USERS, Server, shot
from .helpers import PIN, focus_on_heading, poll, sign_in_and_sync, watch_junk


def _search(page: Any, text: str) -> tuple[str, list[str]]:
    """Type ``text`` into the patient search; the summary line and the ids listed once the search answered."""
    page.fill("#q", text)
    page.press("#q", "Enter")
    poll(page, "q => { const s = document.getElementById('result-summary')?.textContent || '';"
               " return s.includes(q) || s.includes('not a date'); }", text)
    summary = page.inner_text("#result-summary")
    ids = page.eval_on_selector_all("#patients li a", "els => els.map((a) => a.dataset.id)")
    return summary, ids


def test_search_finds_mrn_digits_and_day_month_year_dates(browser: Any, server: Server) -> None:
    # A British tablet: Intl writes 18/04/2002, so "03/07/1950" is the 3rd of July.
    ctx = browser.new_context(base_url=server.url, viewport={"width": 1024, "height": 768}, locale="en-GB",
                              device_scale_factor=1, service_workers="allow")
    ctx.set_default_timeout(60_000)
    junk: list[str] = []
    watch_junk(ctx, junk)  # issue 18 item 8: no "null", JSON or stack text on any screen
    try:
        page = sign_in_and_sync(ctx)
        assert page.evaluate("() => import('/app/routes.js').then((m) => m.localDateOrder())") == "dmy"
        rows = page.eval_on_selector_all("#patients li a", """els => els.map((a) => ({id: a.dataset.id,
            mrn: a.querySelector('.mrn').textContent, born: a.querySelector('small').textContent}))""")
        target = next(r for r in rows if re.fullmatch(r"MRN-\d{6}", r["mrn"])
                      and re.search(r"born \d{4}-\d{2}-(1[3-9]|2\d|3[01])", r["born"]))  # day > 12: unambiguous
        digits = target["mrn"].removeprefix("MRN-")
        short = digits.lstrip("0")
        for typed in (digits, short):
            summary, ids = _search(page, typed)
            assert target["id"] in ids, (typed, summary, ids)
        y, m, d = re.search(r"born (\d{4})-(\d{2})-(\d{2})", target["born"]).groups()  # type: ignore[union-attr]
        summary, ids = _search(page, f"{d}/{m}/{y}")
        assert target["id"] in ids and "birthdate" in summary, (summary, ids)
        summary, ids = _search(page, f"{int(d)}.{int(m)}.{y}")  # dotted, no leading zeros
        assert target["id"] in ids, (summary, ids)
        # An ambiguous date (both parts <= 12) is read in the locale's order: day first on this tablet.
        for r in rows:
            yy, mm, dd = re.search(r"born (\d{4})-(\d{2})-(\d{2})", r["born"]).groups()  # type: ignore[union-attr]
            if int(dd) <= 12 and dd != mm:
                summary, ids = _search(page, f"{dd}/{mm}/{yy}")
                assert r["id"] in ids, (summary, ids)
                break
        shot(page, "18-11-search-local-date-1024x768", full_page=False)
        summary, ids = _search(page, "2002-18-04")
        assert summary.startswith("“2002-18-04” is not a date this app can read: a month is 1 to 12."), summary
        assert not ids and page.locator("#banner[data-kind=error]:not([hidden])").count() == 0
        body = page.inner_text("body")
        assert "null" not in body and "out of range" not in body and "{" not in body
        shot(page, "18-11-search-bad-date-1024x768", full_page=False)
        page.set_viewport_size({"width": 768, "height": 1024})
        shot(page, "18-11-search-bad-date-768x1024", full_page=False)
        assert not junk, junk
    finally:
        ctx.close()


# A redraw of the patient list, as a sync or another tab's change starts one (main.js: a "changed" message on the
# app's BroadcastChannel marks the list dirty and redraws it); resolves once #q is a new element.
REDRAW = """async () => {
  const old = document.getElementById('q');
  new BroadcastChannel('omnicare').postMessage({ type: 'changed' });
  for (let i = 0; i < 200 && document.getElementById('q') === old; i++) await new Promise((r) => setTimeout(r, 25));
  const q = document.getElementById('q');
  return { redrawn: q !== old, value: q.value, start: q.selectionStart, end: q.selectionEnd,
           focused: document.activeElement === q };
}"""


def test_a_redraw_keeps_what_is_being_typed_in_the_search_box(browser: Any, server: Server) -> None:
    """CI on 1fdff25: a sync's redraw came while the old query was selected to be typed over; the caret went to
    the start and the new words landed in front of the old ones ("21.3.196521/03/1965"). Words typed but not yet
    searched were also put back to the last query."""
    ctx = browser.new_context(base_url=server.url, viewport={"width": 1024, "height": 768}, service_workers="allow")
    ctx.set_default_timeout(60_000)
    try:
        page = sign_in_and_sync(ctx, cache=False)
        summary, _ = _search(page, "MRN-0000")
        assert "MRN-0000" in summary
        # The old query selected, as a clinician does to type over it (and as Playwright's fill does).
        page.evaluate("() => { const q = document.getElementById('q'); q.focus(); q.select(); }")
        r = page.evaluate(REDRAW)
        assert r["redrawn"] and r["focused"], r
        assert (r["value"], r["start"], r["end"]) == ("MRN-0000", 0, len("MRN-0000")), r
        page.keyboard.type("Sm")
        assert page.input_value("#q") == "Sm"
        # Words typed a moment ago, before the search has run on them: the redraw keeps them and the caret.
        page.evaluate("() => { const q = document.getElementById('q'); q.value = 'Smi'; q.setSelectionRange(3, 3); }")
        r = page.evaluate(REDRAW)
        assert r["redrawn"] and (r["value"], r["start"], r["end"]) == ("Smi", 3, 3), r
    finally:
        ctx.close()


def test_a_redraw_begun_before_a_navigation_is_handled_never_draws_the_old_screen(browser: Any,
                                                                                   server: Server) -> None:
    """Between a navigation (the hash moves) and its hashchange, a sync's redraw of the patient list began: it
    drew the list under the new address and, finishing after the new screen, over it. Here the hash moves without
    its event (pushState), the redraw is asked for, and only then does the hashchange run."""
    ctx = browser.new_context(base_url=server.url, viewport={"width": 1024, "height": 768}, service_workers="allow")
    ctx.set_default_timeout(60_000)
    try:
        page = sign_in_and_sync(ctx, cache=False)
        page.wait_for_selector("#emergency-link")
        drawn = page.evaluate("""async () => {
          const old = document.getElementById('q');
          history.pushState(null, '', '#/emergency');  // the hash moved; its hashchange has not run yet
          new BroadcastChannel('omnicare').postMessage({ type: 'changed' });
          for (let i = 0; i < 120 && document.getElementById('q') === old; i++) await new Promise((r) => setTimeout(r, 25));
          return document.getElementById('q') !== old ? document.title : null;
        }""")
        assert drawn is None, f"the old screen was drawn again under #/emergency ({drawn})"
        page.evaluate("() => window.dispatchEvent(new HashChangeEvent('hashchange'))")
        page.wait_for_selector("#bg-lookup input[name=mrn]")
        # The patient list's redraw, asked for again now, leaves the screen the clinician opened alone.
        lookup = page.locator("#bg-lookup input[name=mrn]").element_handle()
        page.evaluate("""async () => { new BroadcastChannel('omnicare').postMessage({ type: 'changed' });
                                       await new Promise((r) => setTimeout(r, 1500)); }""")
        assert lookup.evaluate("(e) => e.isConnected"), "the emergency lookup was replaced"
    finally:
        ctx.close()


def test_sign_in_form_appears_before_the_runtime_and_waits_for_it(browser: Any, server: Server) -> None:
    ctx = browser.new_context(base_url=server.url, viewport={"width": 1024, "height": 768},
                              device_scale_factor=1, service_workers="allow")
    ctx.set_default_timeout(60_000)
    junk: list[str] = []
    watch_junk(ctx, junk)  # issue 18 item 8: no "null", JSON or stack text on any screen
    held: list[Any] = []
    # Hold the pyclient wheel list: the runtime cannot finish loading until the test lets it.
    ctx.route(re.compile(r".*/wheels/wheels\.json$"), lambda route: held.append(route))
    try:
        page = ctx.new_page()
        page.goto("/")
        page.wait_for_selector("#signin input[name=username]")
        poll(page, "() => document.activeElement?.name === 'username'")
        assert page.evaluate("() => window.omnicare.py") is None, "the sign-in form waited for the runtime"
        assert held, "the runtime did not start loading in parallel"
        shot(page, "18-12-signin-runtime-loading-1024x768", full_page=False)
        page.set_viewport_size({"width": 768, "height": 1024})
        shot(page, "18-12-signin-runtime-loading-768x1024", full_page=False)
        page.fill("#signin input[name=username]", "dr.adams")
        page.fill("#signin input[name=password]", USERS["dr.adams"])
        page.click("#signin button[type=submit]")
        poll(page, "() => document.querySelector('#signin button[type=submit]')?.textContent === 'Starting…'")
        assert page.is_disabled("#signin button[type=submit]")
        shot(page, "18-12-signin-starting-768x1024", full_page=False)
        for route in held:
            route.continue_()
        ctx.unroute_all(behavior="ignoreErrors")
        page.wait_for_selector("#pin-setup", timeout=120_000)
        page.fill("#pin-setup input[name=pin]", PIN)
        page.fill("#pin-setup input[name=pin2]", PIN)
        page.click("#pin-setup button[type=submit]")
        page.wait_for_selector("#patients li", timeout=120_000)
        times = page.evaluate("() => ({signin: window.omnicare.signinAt, ready: window.omnicare.runtimeReadyAt})")
        assert times["signin"] < times["ready"], times
        # Issue 18 item 13 with this boot order: the list's heading has the focus (announced), not <body>.
        assert focus_on_heading(page) == "Patients"
        assert not junk, junk
    finally:
        ctx.close()
