"""Issue 18, item 8: the status line tells offline, server unreachable, signed out and synced apart, says
persistence once (not on every status), and no screen shows "null", JSON or stack text."""

from __future__ import annotations

from typing import Any

from .conftest import Server, shot
from .helpers import open_patient, poll, sign_in_and_sync, status_text, wait_status
from .test_rejected_changes import assert_plain


def test_status_words_for_each_connection_state(new_context: Any, server: Server) -> None:
    ctx = new_context()
    page = sign_in_and_sync(ctx)
    page.set_viewport_size({"width": 1024, "height": 768})
    wait_status(page, "d.synced === 'true' && d.state === 'ok'")
    text = status_text(page)
    assert text.startswith("Online · synced ") and "persistent" not in text, text
    assert_plain(page)
    open_patient(page, "MRN-000002")
    assert_plain(page)

    # Network up, server not answering: never "Online".
    page.route("**/api/sync/**", lambda route: route.abort())
    page.evaluate("() => window.omnicare.runner.kick('test')")
    wait_status(page, "d.state === 'warn'")
    text = status_text(page)
    assert text.startswith("Server unreachable") and "synced" not in text.replace("last sync", ""), text
    assert_plain(page)
    shot(page, "36-status-server-unreachable", full_page=False)
    page.unroute("**/api/sync/**")

    ctx.set_offline(True)
    wait_status(page, "d.state === 'offline'")
    assert status_text(page).startswith("Offline · last sync "), status_text(page)
    ctx.set_offline(False)
    page.evaluate("() => window.omnicare.runner.kick('test')")
    wait_status(page, "d.synced === 'true' && d.state === 'ok'")

    # The server session ends: "signed out of the server", never also "synced".
    ctx.clear_cookies()
    page.evaluate("() => window.omnicare.runner.kick('test')")
    wait_status(page, "d.state === 'warn'")
    text = status_text(page)
    assert text.startswith("Signed out of the server: sign in to sync") and " synced " not in text, text
    assert_plain(page)
    shot(page, "37-status-signed-out", full_page=False)


def _pill_is_pythons_words(page: Any, *, online: bool) -> str:
    """The pill says exactly pyclient.views.status's text for the status it was given, plus only the time."""
    from pyclient.views.status import status_view

    s = page.evaluate("() => window.omnicare.lastStatus")
    want = status_view(s, online=online)
    text = status_text(page)
    assert text == want["text"] or (want["timeLabel"] and text.startswith(f"{want['text']} · {want['timeLabel']} ")), (
        text, want)
    assert page.evaluate("() => document.getElementById('sync').dataset.state") == want["state"]
    return text


def _chart_lists_are_pythons(page: Any) -> None:
    """The chart's allergy selects offer pyclient.choices' codes and words (none spelled in ui.js)."""
    from pyclient import choices as ch

    open_patient(page, "MRN-000002")
    for cls, choices in (("crit", ch.ALLERGY_CRITICALITY), ("astatus", ch.ALLERGY_STATUS)):
        options = page.eval_on_selector(f"#allergies select.{cls}", "(s) => [...s.options].map((o) => [o.value, o.text])")
        assert options == [list(c) for c in choices], options
    for w, h in ((1024, 768), (768, 1024)):
        page.set_viewport_size({"width": w, "height": h})
        page.locator("#allergies").scroll_into_view_if_needed()
        shot(page, f"42-chart-allergy-choices-{w}x{h}", full_page=False)
    page.evaluate("() => { location.hash = '#/patients'; }")


def test_the_pill_shows_pythons_words_in_every_state(new_context: Any, server: Server) -> None:
    # Issue 11 item 6: no status words in JS. Signed out, synced, offline and locked: each is Python's text.
    ctx = new_context()
    first = ctx.new_page()
    first.set_viewport_size({"width": 768, "height": 1024})
    first.goto("/")
    first.wait_for_selector("#signin")
    poll(first, "() => window.omnicare.lastStatus && window.omnicare.lastStatus.signedOut === true", timeout=120)
    assert _pill_is_pythons_words(first, online=True) == "Online · signed out"
    shot(first, "38-status-signed-out-pill", full_page=False)
    first.close()

    page = sign_in_and_sync(ctx)
    wait_status(page, "d.synced === 'true' && d.state === 'ok'")
    assert _pill_is_pythons_words(page, online=True).startswith("Online · synced ")
    _chart_lists_are_pythons(page)
    ctx.set_offline(True)
    wait_status(page, "d.state === 'offline'")
    assert _pill_is_pythons_words(page, online=False).startswith("Offline · last sync ")
    page.click("#lock")
    page.wait_for_selector("#unlock")
    poll(page, "() => window.omnicare.lastStatus && window.omnicare.lastStatus.locked === true", timeout=30)
    assert _pill_is_pythons_words(page, online=False) == "Offline · locked"
    page.set_viewport_size({"width": 1024, "height": 768})
    shot(page, "39-status-locked-pill", full_page=False)
    ctx.set_offline(False)
