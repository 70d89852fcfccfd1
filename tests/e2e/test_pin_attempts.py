"""PIN attempts on the device (issue 10, item 16), in real Chromium with the real PWA and Pyodide.

Three wrong PINs cost nothing, the fourth makes the next try wait 30 s (refused before that, also after a
reload), and the tenth wrong PIN in a row erases the device. A correct PIN after failures reports them to the
server's audit trail as a security event.
"""

from __future__ import annotations

import json
from typing import Any

from .conftest import PIN, Server, shot
from .helpers import sign_in_and_sync

_TRY = "(pin) => window.omnicare.py.call('unlock', {pin}).then(() => 'ok', (e) => JSON.stringify([e.kind, e.message]))"
_SET_GUARD = """async (value) => {
    const db = await new Promise((ok, no) => { const r = indexedDB.open('omnicare'); r.onsuccess = () => ok(r.result);
                                              r.onerror = () => no(r.error); });
    await new Promise((ok, no) => { const tx = db.transaction('meta', 'readwrite');
        tx.objectStore('meta').put({k: 'pin.guard', v: value}); tx.oncomplete = ok; tx.onerror = () => no(tx.error); });
    db.close();
}"""


def _try(page: Any, pin: str) -> Any:
    out = page.evaluate(_TRY, pin)
    return out if out == "ok" else json.loads(out)


def test_wrong_pins_are_delayed_then_wipe_the_device(new_context: Any, server: Server) -> None:
    ctx = new_context()
    page = sign_in_and_sync(ctx, "nurse.baker")
    page.evaluate("() => window.omnicare.py.call('lock')")
    for _ in range(3):
        kind, message = _try(page, "000000")
        assert kind == "wrong_pin" and "Wait" not in message
    kind, message = _try(page, "000000")  # the 4th
    assert kind == "wrong_pin" and "Wait 30 seconds" in message and "6 left" in message
    kind, message = _try(page, PIN)  # even the right PIN is not checked before the wait is over
    assert kind == "pin_delay", message
    page.reload()
    page.wait_for_selector("#unlock", timeout=60_000)
    kind, message = _try(page, PIN)  # the count and the wait survive a reload
    assert kind == "pin_delay" and "Try again in" in message
    page.fill("#unlock input[name=pin]", PIN)
    page.click("#unlock button[type=submit]")
    page.wait_for_selector("text=Too many wrong PINs", timeout=30_000)
    for w, h in ((1024, 768), (768, 1024)):  # the PIN-delay screen at both tablet sizes
        page.set_viewport_size({"width": w, "height": h})
        shot(page, f"30-pin-delay-{w}x{h}", full_page=False)

    # Nine failures already, the waits elapsed: the tenth wrong PIN erases the device.
    page.evaluate(_SET_GUARD, json.dumps({"failures": 9, "notBefore": 0, "reported": 0}))
    kind, message = _try(page, "111111")
    assert kind == "wiped", message
    assert page.evaluate("async () => { const d = await window.omnicare.makeIdb().rawDump();"
                         " return d.records.length + d.outbox.length; }") == 0
    page.reload()  # (the unlock screen does this itself after a wipe)
    page.wait_for_selector("#signin", timeout=60_000)


def test_a_correct_pin_after_failures_reports_them(new_context: Any, server: Server) -> None:
    ctx = new_context()
    page = sign_in_and_sync(ctx, "dr.chen")
    page.evaluate("() => window.omnicare.py.call('lock')")
    assert _try(page, "999999")[0] == "wrong_pin"
    assert _try(page, "999998")[0] == "wrong_pin"
    assert _try(page, PIN) == "ok"
    status, body = server.api("GET", "/api/audit/events?action=device-pin-failures", None, user="privacy.officer")
    assert status == 200, body
    assert body["entry"] and "dr.chen" in json.dumps(body), body
