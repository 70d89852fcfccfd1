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


def _reads_charts(server: Server, cookie: str, device: str | None = None) -> int:
    headers = {"Cookie": f"sessionid={cookie}"}
    if device:
        headers["OmniCare-Device-Id"] = device  # what the PWA sends on every request
    req = urllib.request.Request(server.url + "/fhir/R4/Patient?_count=1",  # noqa: S310 (http://127.0.0.1)
                                 headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=20) as r:  # noqa: S310
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_offline_sign_out_reaches_the_server_first_thing_when_back_online(new_context: Any, server: Server) -> None:
    ctx = new_context()
    page = sign_in_and_sync(ctx, "dr.adams")
    cookie = next(c["value"] for c in ctx.cookies() if c["name"] == "sessionid")
    device = page.evaluate("() => window.omnicare.deviceId || null")
    assert device, "the page knows its device id"
    assert _reads_charts(server, cookie, device) == 200  # the tablet itself, naming its device
    assert _reads_charts(server, cookie) == 401  # the cookie alone (copied, stale) reads nothing: bound to the device

    ctx.set_offline(True)
    page.click("#signout")
    page.wait_for_selector("dialog.dialog:has-text('All patient data is removed')")
    page.click("dialog.dialog button:has-text('Sign out')")
    page.wait_for_selector("#signin")
    assert page.evaluate("() => localStorage.getItem('omnicare.signout.pending') !== null")
    # The server could not be told yet, but the wiped device forgot its id: the cookie reads nothing already.
    assert _reads_charts(server, cookie) == 401
    assert page.evaluate("() => window.omnicare.deviceId || null") in (None, False)
    for w, h in ((1024, 768), (768, 1024)):  # the sign-in screen after an offline sign-out, both tablet sizes
        page.set_viewport_size({"width": w, "height": h})
        shot(page, f"31-offline-sign-out-{w}x{h}", full_page=False)

    ctx.set_offline(False)
    page.evaluate("() => window.dispatchEvent(new Event('online'))")
    poll(page, "() => localStorage.getItem('omnicare.signout.pending') === null", timeout=60)
    assert _reads_charts(server, cookie) == 401  # the old session is gone on the server
    assert _reads_charts(server, cookie, device) == 401  # even for someone who noted the device id
