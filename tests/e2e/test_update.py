"""Safe update path: when the server ships a new version, an open tab is told to reload and stops writing."""

from __future__ import annotations

from typing import Any

from .conftest import REPO, Server
from .helpers import poll, sign_in_and_sync, unlock

STYLES = (REPO / "pwa" / "app" / "styles.css").read_text()


def test_new_version_is_detected_and_blocks_writes_until_reload(new_context: Any, server: Server) -> None:
    ctx = new_context()
    page = sign_in_and_sync(ctx, "dr.adams")
    old = page.evaluate("() => window.omnicare.swVersion")
    assert old

    # The server now serves a changed shell file (as after a deploy): intercept it for this device only.
    ctx.route("**/app/styles.css", lambda route: route.fulfill(
        status=200, content_type="text/css", body=STYLES + "\n/* v2 */\n"))
    page.reload()  # the page asks the service worker to check; the worker builds the new cache
    unlock(page)
    page.wait_for_selector("#patients li")  # reading stays possible ...
    page.wait_for_selector("#banner:has-text('new version')", timeout=90_000)
    refused = page.evaluate("""() => window.omnicare.py.call('add_note', {patient_id: 'x', title: 't', text: 'n'})
        .then(() => 'written', (e) => e.kind)""")
    assert refused == "read_only"  # ... writing with the old code is not
    assert page.evaluate("() => window.omnicare.runner.active") is False

    page.click("#banner button:has-text('Reload now')")
    unlock(page)
    page.wait_for_selector("#patients li")
    new = poll(page, "() => window.omnicare.swVersion")
    assert new != old
    assert page.is_hidden("#banner")
