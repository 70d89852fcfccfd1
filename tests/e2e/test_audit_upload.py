"""A refused device-event batch is neither retried forever nor dropped (issue 10), in real Chromium.

The server really refuses the tablet's audit events (its registration is moved into the future, so every event
time is "outside the device's lifetime"): the tablet sends the refused event a bounded number of times, parks it
with the server's reason, says so on screen, and once the server accepts events again the queue drains past it
while the server flags the parked sequence number as a gap.
"""

from __future__ import annotations

from typing import Any

from .conftest import Server, shot
from .helpers import poll, sign_in_and_sync

STATE = "() => window.omnicare.py.call('audit_upload_state')"


def _shell(server: Server, code: str) -> str:
    """The last line the code printed (Django's shell prints its auto-imports first)."""
    return server.manage("shell", "-c", code).strip().splitlines()[-1]


def _registered(server: Server, device: str, when: str) -> None:
    _shell(server, "from datetime import timedelta; from django.utils import timezone; "
                   "from omnicare.sync.models import Device; "
                   f"print(Device.objects.filter(device_id={device!r}).update(created=timezone.now() + {when}))")


def _refusals(server: Server, device: str) -> int:
    return int(_shell(server, "from omnicare.audit.models import AuditEvent; print(AuditEvent.objects.filter("
                              f"action='device-events-refused', device_id={device!r}).count())"))


def _read_a_chart(page: Any) -> None:
    page.goto("/#/patients")
    page.wait_for_selector("#patients li")
    page.locator("#patients li a").first.click()
    page.wait_for_selector("#patient-name")  # reading a chart is an audit event of the device
    page.evaluate("() => window.omnicare.py.call('audit_flush')")
    page.goto("/#/patients")
    page.wait_for_selector("#patients li")


def test_a_refused_audit_batch_is_retried_a_bounded_number_of_times_then_parked_and_said(
    new_context: Any, server: Server
) -> None:
    page = sign_in_and_sync(new_context(), "dr.adams")
    device = page.evaluate("() => window.omnicare.deviceId")
    page.evaluate("() => window.omnicare.runner.kick('manual')")
    poll(page, f"async () => (await {STATE[6:]}).queued === 0", timeout=60)

    _registered(server, device, "timedelta(days=1)")  # every event the tablet holds is now implausible
    _read_a_chart(page)
    queued = int(page.evaluate(f"async () => (await {STATE[6:]}).queued"))
    assert queued >= 1
    for _ in range(40):  # each press of "Sync now" is one more try: bounded, then parked
        page.evaluate("() => window.omnicare.runner.kick('manual')")
        st = page.evaluate(STATE)
        if st["queued"] == 0:
            break
    st = page.evaluate(STATE)
    assert st["queued"] == 0 and st["parked"] == queued, st  # every refused event parked, none dropped
    assert "outside the device's lifetime" in st["message"] and "refused by the server" in st["message"]
    refusals = _refusals(server, device)
    assert refusals <= 3 * queued + 8, refusals  # halvings + three tries per event, not one per sync forever
    page.evaluate("() => window.omnicare.runner.kick('manual')")
    assert _refusals(server, device) == refusals  # nothing left to send: no more refusals
    banner = page.locator("#banner")
    assert "access record" in banner.inner_text() and "kept on this device" in banner.inner_text()
    for w, h in ((1024, 768), (768, 1024)):
        page.set_viewport_size({"width": w, "height": h})
        shot(page, f"audit-parked-{w}x{h}", full_page=False)

    # The server believes the tablet again: later events go through past the parked ones, which the server
    # sees as a gap in the device's sequence (a security event of its own).
    _registered(server, device, "timedelta(days=-1)")
    _read_a_chart(page)
    page.evaluate("() => window.omnicare.runner.kick('manual')")
    poll(page, f"async () => (await {STATE[6:]}).queued === 0", timeout=60)
    gaps = _shell(server, "from omnicare.audit.models import AuditEvent; print(AuditEvent.objects.filter("
                          f"action='device-gap', device_id={device!r}, category='security').count())")
    assert int(gaps) >= 1
    assert page.evaluate(STATE)["parked"] == queued  # still kept, for the administrator
