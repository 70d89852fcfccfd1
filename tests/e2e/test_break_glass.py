"""Issue 18 item 7: break-the-glass in the app. A clinician finds a patient outside their care team (the answer
names nobody), requests emergency access with a reason, sees the banner and the chart; when the grant is ended
the chart leaves the device and the server stops serving it. Online only, and said so offline."""

from __future__ import annotations

import time
import urllib.error
from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import Server, _ensure_assets, own_server_fixture, server_start, server_stop, shot
from .helpers import poll, sign_in_and_sync
from .test_ops_dashboard import AUDITOR, _admin_login
from .test_rejected_changes import assert_plain
from .test_touch_targets import _check as measure_touch_targets

# A server of this module's own: in the whole suite, state other files leave on the shared server (grants,
# roles, a tampered device, a full disk) made these tests fail although each passes alone.
server = own_server_fixture()



def _outside_patient(server: Server) -> dict[str, Any]:
    """A patient on dr.chen's care team that is not on dr.adams's."""
    mine = {e["resource"]["id"] for e in server.fhir("Patient?_count=200", user="dr.adams").get("entry", [])}
    for other in ("dr.chen", "nurse.baker"):
        for e in server.fhir("Patient?_count=200", user=other).get("entry", []):
            if e["resource"]["id"] not in mine:
                return dict(e["resource"])
    raise AssertionError("the demo data has no patient outside dr.adams's care team")


def _served(server: Server, pid: str) -> bool:
    try:
        server.fhir(f"Patient/{pid}")
    except urllib.error.HTTPError as e:
        assert e.code in (403, 404)
        return False
    return True


@pytest.mark.parametrize("size", [(1024, 768), (768, 1024)], ids=["landscape", "portrait"])
def test_emergency_access_outside_the_care_team(new_context: Any, server: Server, size: tuple[int, int]) -> None:
    target = _outside_patient(server)
    pid, family, given = target["id"], target["name"][0]["family"], target["name"][0]["given"][0]
    mrn = target["identifier"][0]["value"]
    assert not _served(server, pid)
    ctx = new_context()
    page = sign_in_and_sync(ctx)
    page.set_viewport_size({"width": size[0], "height": size[1]})
    tag = f"{size[0]}x{size[1]}"
    assert page.evaluate("(pid) => window.omnicare.py.call('chart', {patient_id: pid}).then(() => 'on device',"
                         " (e) => e.kind)", pid) == "not_found"

    page.click("#emergency-link")
    page.wait_for_selector("#bg-lookup")
    page.fill("#bg-lookup input[name=family]", family)
    page.fill("#bg-lookup input[name=birth_date]", "1900")
    page.click("#bg-lookup button[type=submit]")
    page.wait_for_selector("#bg-lookup [data-field=birth_date] .field-error:not(:empty)")
    page.fill("#bg-lookup input[name=birth_date]", target["birthDate"])
    page.click("#bg-lookup button[type=submit]")
    poll(page, "() => (document.getElementById('bg-result')?.textContent || '').includes('1 match outside your patients')")
    screen_text = page.inner_text("#main")
    assert given not in screen_text and mrn not in screen_text  # only that a match exists
    shot(page, f"break-glass-found-{tag}", full_page=False)
    small: dict[str, list[str]] = {}
    measure_touch_targets(page, "emergency lookup", small)  # both viewports
    page.set_viewport_size({"width": size[0], "height": size[1]})

    page.fill("#bg-request textarea[name=reason]", "urgent")  # the rule is checked before anything is sent
    page.click("#bg-request button[type=submit]")
    page.wait_for_selector("#bg-request [data-field=reason] .field-error:not(:empty)")
    assert "at least 10 characters" in page.inner_text("#bg-request")
    status, grants = server.api("GET", "/api/access/break-glass")
    assert status == 200 and not [g for g in grants if g["patientId"] == pid]
    page.fill("#bg-request textarea[name=reason]", "Collapsed in the waiting room, allergies unknown")
    page.click("#bg-request button[type=submit]")

    page.wait_for_selector("#patient-name", timeout=90_000)
    page.wait_for_selector("#emergency-banner")
    banner = page.inner_text("#emergency-banner")
    assert "Your access ends at" in banner and "hours" in banner and "removed from this device" in banner
    assert family in page.inner_text("#patient-name")
    assert_plain(page)
    shot(page, f"break-glass-chart-{tag}", full_page=False)
    measure_touch_targets(page, "emergency chart", small)
    page.set_viewport_size({"width": size[0], "height": size[1]})
    assert not small, small
    assert _served(server, pid)
    # A form on that patient says so too, drawn with the form (not added after it).
    page.evaluate("""() => { window.__formBanner = null; new MutationObserver(() => {
        const f = document.querySelector('#main form[id^="form-"]');
        if (f && window.__formBanner === null) window.__formBanner = !!document.getElementById('emergency-banner');
      }).observe(document.getElementById('main'), {childList: true, subtree: true}); }""")
    page.evaluate("(pid) => { location.hash = `#/patient/${encodeURIComponent(pid)}/note`; }", pid)
    page.wait_for_selector("#form-note")
    assert page.evaluate("() => window.__formBanner") is True, "the form was drawn without its emergency banner"
    assert "Your access ends at" in page.inner_text("#emergency-banner")
    page.go_back()
    page.wait_for_selector("#patient-name")

    # The grant ends (here: ended through the service); the chart leaves the device and the server stops serving it.
    # Every banner from here on is kept, so a failure says what the clinician saw instead of the ending.
    page.evaluate("""() => { window.__banners = []; const b = document.getElementById('banner');
        new MutationObserver(() => window.__banners.push([location.hash, b.hidden ? '(hidden)' : b.textContent]))
          .observe(b, {childList: true, subtree: true, attributes: true, characterData: true}); }""")
    status, grants = server.api("GET", "/api/access/break-glass")
    grant = next(g for g in grants if g["patientId"] == pid)
    assert server.api("POST", f"/api/access/break-glass/{grant['id']}/end")[0] == 200
    assert not _served(server, pid)
    poll(page, "(pid) => window.omnicare.py.call('chart', {patient_id: pid}).then(() => false, (e) => e.kind === 'not_found')",
         pid, timeout=60)
    page.wait_for_selector("#patients")
    # Said in the banner (kept in the history above: a later banner may take its place once it was shown).
    try:
        poll(page, "() => window.__banners.some(([, text]) => text.includes('Emergency access has ended'))", timeout=60)
    except TimeoutError as exc:
        raise AssertionError(f"no ending banner; banners shown: {page.evaluate('() => window.__banners')}") from exc
    page.fill("#q", family)
    poll(page, "q => (document.getElementById('result-summary')?.textContent || '').includes(q)", family)
    assert given not in page.inner_text("#patients")
    shot(page, f"break-glass-ended-{tag}", full_page=False)


def test_emergency_access_says_it_needs_a_connection(new_context: Any, server: Server) -> None:
    ctx = new_context()
    page = sign_in_and_sync(ctx, "nurse.baker")
    page.set_viewport_size({"width": 1024, "height": 768})
    ctx.set_offline(True)
    page.goto("/#/emergency")
    page.wait_for_selector("#bg-offline")
    assert "needs a connection to the server: you are offline" in page.inner_text("#bg-offline")
    assert page.is_disabled("#bg-lookup button[type=submit]")  # nothing to try until the connection is back
    assert_plain(page)
    shot(page, "break-glass-offline-1024x768", full_page=False)
    ctx.set_offline(False)
    poll(page, "() => !document.getElementById('bg-offline') && !document.querySelector('#bg-lookup button').disabled")


def _break_glass(page: Any, mrn: str) -> float:
    """Look the patient up by MRN, request emergency access; returns when it was requested (monotonic s) once
    the chart is open with its banner."""
    page.goto("/#/emergency")
    try:
        page.wait_for_selector("#bg-lookup input[name=mrn]", state="visible")
        page.fill("#bg-lookup input[name=mrn]", mrn)
    except Exception as exc:
        # CI on 547e927: the lookup form was drawn, then gone for 60 s (not reproduced alone): say what was shown.
        seen = page.evaluate("() => ({ hash: location.hash, title: document.title, "
                             "main: document.getElementById('main')?.innerText.slice(0, 300) })")
        raise AssertionError(f"no emergency lookup form: {seen}") from exc
    page.click("#bg-lookup button[type=submit]")
    page.wait_for_selector("#bg-request")
    page.fill("#bg-request textarea[name=reason]", "Found unresponsive, family not reachable")
    page.click("#bg-request button[type=submit]")
    requested = time.monotonic()
    page.wait_for_selector("#emergency-banner", timeout=90_000)
    return requested


GRANT_SECONDS = 90


@pytest.fixture(scope="module")
def short_grants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose emergency grants last 90 s, to see the device end one by the clock."""
    _ensure_assets()
    srv = server_start(tmp_path_factory.mktemp("bg-server"), {"OMNICARE_BREAK_GLASS_SECONDS": str(GRANT_SECONDS)})
    yield srv
    server_stop(srv)


def test_the_device_removes_the_chart_when_the_clock_passes_the_expiry(browser: Any, short_grants: Server) -> None:
    server = short_grants
    target = _outside_patient(server)
    pid, mrn, given = target["id"], target["identifier"][0]["value"], target["name"][0]["given"][0]
    ctx = browser.new_context(base_url=server.url, viewport={"width": 1024, "height": 768}, device_scale_factor=1,
                              service_workers="allow")
    ctx.set_default_timeout(60_000)
    try:
        page = sign_in_and_sync(ctx)
        started = _break_glass(page, mrn)
        assert "minute" in page.inner_text("#emergency-banner")
        # Offline now: nobody tells the device the grant ended; its own clock must.
        ctx.set_offline(True)
        poll(page, "(pid) => window.omnicare.py.call('chart', {patient_id: pid}).then(() => false, "
                   "(e) => e.kind === 'not_found')", pid, timeout=GRANT_SECONDS + 30)
        assert time.monotonic() - started < GRANT_SECONDS + 30
        page.wait_for_selector("#banner:has-text('Emergency access has ended')")
        page.fill("#q", mrn)
        poll(page, "q => (document.getElementById('result-summary')?.textContent || '').includes(q)", mrn)
        assert given not in page.inner_text("#main")
        assert_plain(page)
        shot(page, "break-glass-expired-offline-1024x768", full_page=False)
        ctx.set_offline(False)
        assert not _served(server, pid)  # and the server stops serving it too
    finally:
        ctx.close()




def _revoke_in_admin(admin: Any, server: Server, pid: str) -> None:
    """The officer ticks the patient's running grant and runs "Revoke" (returns once the server has done it)."""
    status, grants = server.api("GET", "/api/access/break-glass")
    grant = next(g for g in grants if g["patientId"] == pid)
    admin.goto("/admin/access/emergencyaccessgrant/")
    admin.check(f"input[name=_selected_action][value='{grant['id']}']")
    admin.select_option("select[name=action]", "revoke")
    admin.click("button[name=index]")
    admin.wait_for_selector("text=1 emergency access grant(s) revoked.")


def test_a_revocation_closes_the_chart_within_seconds_and_polling_still_backs_it_up(
        new_context: Any, server: Server) -> None:
    """A privacy officer revokes the grant: the server says so over the sync socket and the chart is gone in
    seconds — with the 15 s poll of the running grants refused here, so only the push can have told it. Then,
    with the socket down, the poll alone still ends the next grant."""
    target = _outside_patient(server)
    pid, mrn = target["id"], target["identifier"][0]["value"]
    ctx = new_context()
    page = sign_in_and_sync(ctx)
    admin = _admin_login(new_context(), AUDITOR)  # the demo privacy officer, in a browser of their own
    page.set_viewport_size({"width": 1024, "height": 768})
    _break_glass(page, mrn)
    shot(page, "break-glass-before-revoke-1024x768", full_page=False)
    ctx.route("**/api/access/break-glass", lambda route: route.abort() if route.request.method == "GET"
              else route.continue_())
    _revoke_in_admin(admin, server, pid)
    revoked = time.monotonic()
    poll(page, "(pid) => window.omnicare.py.call('chart', {patient_id: pid}).then(() => false, (e) => e.kind === "
               "'not_found') && !document.getElementById('patient-name')", pid, timeout=20, interval=0.1)
    took = time.monotonic() - revoked
    assert took < 3.0, f"the chart stayed {took:.1f} s after the revocation"
    page.wait_for_selector("#banner:has-text('Emergency access has ended')")
    assert_plain(page)
    page.set_viewport_size({"width": 768, "height": 1024})
    shot(page, "break-glass-revoked-768x1024", full_page=False)
    ctx.unroute("**/api/access/break-glass")
    assert not _served(server, pid)

    # The socket down (a proxy that drops WebSockets): the poll of the running grants is the fallback.
    ctx.route_web_socket("**/ws/sync", lambda ws: ws.close())
    page.evaluate("() => window.omnicare.runner?.closeWs?.()")
    page.set_viewport_size({"width": 1024, "height": 768})
    _break_glass(page, mrn)
    _revoke_in_admin(admin, server, pid)
    revoked = time.monotonic()
    poll(page, "(pid) => window.omnicare.py.call('chart', {patient_id: pid}).then(() => false, (e) => e.kind === "
               "'not_found') && !document.getElementById('patient-name')", pid, timeout=40, interval=0.25)
    assert time.monotonic() - revoked < 25
    page.wait_for_selector("#banner:has-text('Emergency access has ended')")
