"""Issue 18, item 8: the status line tells offline, server unreachable, signed out and synced apart, says
persistence once (not on every status), and no screen shows "null", JSON or stack text."""

from __future__ import annotations

from typing import Any

from .conftest import Server, shot
from .helpers import open_patient, sign_in_and_sync, status_text, wait_status
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
