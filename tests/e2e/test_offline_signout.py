"""A sign-out made offline is completed against the server when the browser is next online (issue 10, item 15).

Real Chromium, real service worker, the network really off: the device is wiped at once; before the fix the same
browser's session cookie kept reading charts once back online.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

from .conftest import Server, shot
from .helpers import poll, sign_in_and_sync


def _reads_charts(server: Server, cookie: str) -> int:
    req = urllib.request.Request(server.url + "/fhir/R4/Patient?_count=1",  # noqa: S310 (http://127.0.0.1)
                                 headers={"Cookie": f"sessionid={cookie}"})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:  # noqa: S310
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_offline_sign_out_reaches_the_server_first_thing_when_back_online(new_context: Any, server: Server) -> None:
    ctx = new_context()
    page = sign_in_and_sync(ctx, "dr.adams")
    cookie = next(c["value"] for c in ctx.cookies() if c["name"] == "sessionid")
    assert _reads_charts(server, cookie) == 200

    ctx.set_offline(True)
    page.click("#signout")
    page.wait_for_selector("dialog.dialog:has-text('All patient data is removed')")
    page.click("dialog.dialog button:has-text('Sign out')")
    page.wait_for_selector("#signin")
    assert page.evaluate("() => localStorage.getItem('omnicare.signout.pending') !== null")
    assert _reads_charts(server, cookie) == 200  # the server could not be told yet
    shot(page, "31-offline-sign-out", full_page=False)

    ctx.set_offline(False)
    page.evaluate("() => window.dispatchEvent(new Event('online'))")
    poll(page, "() => localStorage.getItem('omnicare.signout.pending') === null", timeout=60)
    assert _reads_charts(server, cookie) == 401  # the old session is gone on the server
