"""The operations and security dashboard, end to end: scripted activity, then the admin page in real Chromium.

The script: a clinician's tablet (the real PWA) signs in, syncs and reports telemetry, then gets a wrong PIN;
two API devices push (one applied, one conflict), one reports changes stuck for 26 h, one is revoked and
tries again; a break-the-glass grant; a failed sign-in; an audit verification. An administrator and a privacy
officer then open the dashboard from the admin index and every panel must show those numbers. The page holds
no demo patient's name or MRN. ``/metrics`` is scraped with and without the token and parsed by
prometheus_client.

This module runs its own server (fresh database) so the figures are exactly the script's, whatever other e2e
tests did on the shared one.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from http.cookiejar import CookieJar
from typing import Any

import pytest

from .conftest import PATIENTS, PIN, Server, _ensure_assets, server_start, server_stop, shot
from .helpers import poll, sign_in_and_sync, unlock

METRICS_TOKEN = "e2e-metrics-" + uuid.uuid4().hex
ADMIN = ("ward.admin", "ward-admin-pw-7731")  # an administrator (the demo "admin" is a superuser: sees all)
AUDITOR = ("privacy.officer", "audit-trail-ledger-161")


@pytest.fixture(scope="module")
def ops_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    _ensure_assets()
    srv = server_start(tmp_path_factory.mktemp("ops-server"), {
        "OMNICARE_METRICS_TOKEN": METRICS_TOKEN, "OMNICARE_OPS_REFRESH_SECONDS": "5",
        "OMNICARE_OPS_FLUSH_SECONDS": "0"})
    yield srv
    server_stop(srv)


def _db(server: Server, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(server.db_path, timeout=20)
    try:
        return list(con.execute(sql, args))
    finally:
        con.close()


def _phi(server: Server) -> list[str]:
    """Every demo patient's given and family names and MRN (what must never appear on the dashboard)."""
    out: set[str] = set()
    for (body,) in _db(server, "SELECT body FROM fhir_resource WHERE resource_type = 'Patient'"):
        p = json.loads(body)
        for n in p.get("name", []):
            out.update(x for x in [n.get("family", ""), *n.get("given", [])] if len(x) >= 3)
        out.update(i["value"] for i in p.get("identifier", []) if i.get("value"))
    assert len(out) >= PATIENTS * 2
    return sorted(out)


def _api(server: Server, method: str, path: str, data: Any = None, *, user: str = "dr.adams",
         device: str = "") -> tuple[int, Any]:
    return server.api(method, path, data, user=user, device=device)


def _mutation(resource: dict[str, Any], base: int) -> dict[str, Any]:
    return {"mutationId": str(uuid.uuid4()), "op": "put", "resourceType": resource["resourceType"],
            "id": resource["id"], "baseVersion": base, "resource": resource}


def _assert_no_phi(html: str, phi: list[str], who: str) -> None:
    leaked = [w for w in phi if re.search(rf"\b{re.escape(w)}\b", html)]
    assert not leaked, f"patient data on the {who}'s dashboard: {leaked[:5]}"


def _figure(page: Any, testid: str) -> str:
    return str(page.locator(f'[data-testid="{testid}"]').first.inner_text()).strip()


def _admin_login(ctx: Any, who: tuple[str, str]) -> Any:
    page = ctx.new_page()
    page.goto("/admin/login/?next=/admin/")
    page.fill("#id_username", who[0])
    page.fill("#id_password", who[1])
    page.click("input[type=submit]")
    page.wait_for_selector("#content")
    return page


def _failed_sign_in(server: Server) -> None:
    jar = CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(server.url + "/api/auth/csrf", timeout=20) as r:
        token = json.loads(r.read())["csrfToken"]
    req = urllib.request.Request(server.url + "/api/auth/login", method="POST",
                                 data=json.dumps({"username": "nurse.baker", "password": "wrong-guess"}).encode(),
                                 headers={"Content-Type": "application/json", "X-CSRFToken": token,
                                          "Referer": server.url + "/"})
    with pytest.raises(urllib.error.HTTPError) as err:
        opener.open(req, timeout=20)
    assert err.value.code == 401


def _scrape(server: Server, token: str | None) -> tuple[int, str]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    try:
        with urllib.request.urlopen(urllib.request.Request(server.url + "/metrics", headers=headers),
                                    timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""


def test_dashboard_shows_what_the_script_did_without_phi(browser: Any, ops_server: Server) -> None:
    server = ops_server
    # 1. The clinician's tablet: real PWA, first sync, telemetry after the sync round.
    tablet = browser.new_context(base_url=server.url, viewport={"width": 1180, "height": 820},
                                 service_workers="allow")
    tablet.set_default_timeout(60_000)
    page = sign_in_and_sync(tablet, "dr.adams")
    pwa_device = page.evaluate("() => window.omnicare.deviceId")
    deadline = time.monotonic() + 90
    while not _db(server, "SELECT 1 FROM ops_devicereport WHERE device_id = ?", pwa_device):
        assert time.monotonic() < deadline, "the PWA never reported telemetry"
        time.sleep(0.5)
    # ... then a wrong PIN on the unlock screen, then the right one: the next report carries the failure.
    page.reload()
    unlock(page, "000000")
    page.wait_for_selector("#unlock input[name=pin][aria-invalid=true]", timeout=60_000)
    page.fill("#unlock input[name=pin]", PIN)
    page.click("#unlock button[type=submit]")
    page.wait_for_selector("#patients li", timeout=120_000)
    page.evaluate("() => window.omnicare.runner.report('timer')")
    deadline = time.monotonic() + 60
    while not _db(server, "SELECT 1 FROM ops_devicereport WHERE device_id = ? AND failed_unlocks = 1", pwa_device):
        assert time.monotonic() < deadline, "the failed unlock never reached the server"
        time.sleep(0.5)
    row = _db(server, "SELECT storage_used, records, kb_versions, storage_idb FROM ops_devicereport "
                      "WHERE device_id = ? ORDER BY id DESC LIMIT 1", pwa_device)[0]
    assert row[0] and row[0] > 0 and row[1] and row[1] > 0 and "pyclient" in json.loads(row[2])
    assert row[3] and 0 < row[3] <= row[0]  # the IndexedDB share of what the browser stores

    # 2. Two API devices of the same clinician: one push applied, one conflict on the same base.
    for dev in ("api-dev-a", "api-dev-b"):
        assert _api(server, "POST", "/api/sync/devices", {"deviceId": dev}, device=dev)[0] == 200
    status, page1 = _api(server, "POST", "/api/sync/pull?deviceId=api-dev-a", {"cursor": None, "limit": 1000},
                         device="api-dev-a")
    assert status == 200
    obs = next(c for c in page1["changes"] if c["resourceType"] == "Observation" and c["resource"]
               and "valueQuantity" in c["resource"])
    base = obs["versionId"]
    mine = json.loads(json.dumps(obs["resource"]))
    mine["valueQuantity"]["value"] = float(mine["valueQuantity"]["value"]) + 1
    theirs = json.loads(json.dumps(obs["resource"]))
    theirs["valueQuantity"]["value"] = float(theirs["valueQuantity"]["value"]) + 2
    s, r = _api(server, "POST", "/api/sync/push", {"deviceId": "api-dev-a", "mutations": [_mutation(mine, base)]},
                device="api-dev-a")
    assert s == 200 and r["results"][0]["status"] == "applied"
    s, r = _api(server, "POST", "/api/sync/push", {"deviceId": "api-dev-b", "mutations": [_mutation(theirs, base)]},
                device="api-dev-b")
    assert s == 200 and r["results"][0]["status"] == "conflict"
    # Device A says a change has been waiting 26 h (a tablet that could not sync).
    s, _ = _api(server, "POST", "/api/ops/telemetry", {
        "deviceId": "api-dev-a", "reportId": str(uuid.uuid4()), "reason": "timer", "appVersion": "api-client-1",
        "outbox": {"pending": 1, "conflicted": 0, "rejected": 0, "oldestPendingAge": 26 * 3600.0},
        "lastSyncAge": 26 * 3600.0, "storage": {"used": 80 * 2**20, "quota": 2**32, "persisted": False,
                                                 "records": 900},
        "intervalSeconds": 300.0, "offlineSeconds": 0.0, "offlineReadySeconds": 300.0}, device="api-dev-a")
    assert s == 200

    # 3. Device B is revoked by the administrator, then tries to push again and is told to wipe.
    s, _ = _api(server, "POST", "/api/access/devices/revoke",
                {"username": "dr.adams", "deviceId": "api-dev-b", "reason": "reported stolen"}, user="admin")
    # (the demo superuser revokes; the ward administrator below only watches)
    assert s == 200
    s, _ = _api(server, "POST", "/api/sync/push", {"deviceId": "api-dev-b", "mutations": [_mutation(theirs, base)]},
                device="api-dev-b")
    assert s == 403

    # 4. Break-the-glass by dr.chen for a patient outside his care team; 5. a failed sign-in; 6. verification.
    patient_ids = [pid for (pid,) in _db(server, "SELECT resource_id FROM fhir_resource WHERE resource_type = "
                                                 "'Patient' ORDER BY resource_id")]
    granted = None
    for pid in patient_ids:
        s, body = _api(server, "POST", "/api/access/break-glass",
                       {"patientId": pid, "reason": "Collapsed in the waiting room, history needed"}, user="dr.chen")
        if s == 201:
            granted = pid
            break
    assert granted is not None
    _failed_sign_in(server)
    assert "OK" in server.manage("ops_verify")

    server.manage("shell", "-c", "from django.contrib.auth import get_user_model as g; "
                  "from omnicare.access.roles import role_assign; "
                  f"u = g().objects.create_user(username={ADMIN[0]!r}, password={ADMIN[1]!r}); "
                  "role_assign(user=u, role='administrator')")
    phi = _phi(server)
    pushes_expected = 3  # applied + conflict + the revoked device's refused push (the PWA made no edits)

    # 7. The administrator: admin index -> dashboard link; operations panels only.
    admin_ctx = browser.new_context(base_url=server.url, viewport={"width": 1024, "height": 768})
    admin_ctx.set_default_timeout(60_000)
    a = _admin_login(admin_ctx, ADMIN)
    a.click('a[href="/admin/ops/dashboard/"]')
    a.wait_for_selector("#ops-panels #sync")
    assert a.locator("#security").count() == 0
    assert _figure(a, "push-count") == str(pushes_expected)
    pulls = int(_figure(a, "pull-count"))
    assert pulls >= 2  # the API pull and the tablet's
    assert _figure(a, "sync-success-rate") == f"{round(100.0 * (pulls + 2) / (pulls + 3), 2):g} %"
    assert _figure(a, "state-synced") == "1"  # the tablet
    assert _figure(a, "state-pending_over_24h") == "1"  # api-dev-a
    assert _figure(a, "state-revoked") == "1"  # api-dev-b
    assert _figure(a, "state-silent") == "0"
    assert "api-dev-a" in a.locator('[data-testid="oldest-table"]').inner_text()
    assert _figure(a, "conflicts-open") == "1"
    assert _figure(a, "outcome-still-open") == "1"
    assert _figure(a, "conflict-accuracy") == "0 %"  # 0 clean merges out of 1 stale edit
    reports = _db(server, "SELECT count(*), sum(interval_seconds), sum(offline_ready_seconds) FROM ops_devicereport")[0]
    assert _figure(a, "reports-24h") == str(reports[0])
    assert _figure(a, "offline-rate") == f"{round(100.0 * reports[2] / reports[1], 1):g} %"
    assert _figure(a, "db-size").endswith("MB") or _figure(a, "db-size").endswith("KB")
    assert re.fullmatch(r"[\d.]+ %", _figure(a, "device-efficiency"))
    routes = a.locator('[data-testid="routes-table"]').inner_text()
    assert re.search(r"POST /api/sync/push\s+3\b", routes), routes
    assert _figure(a, "queue-depth") == "—"  # embedded default: no broker, tasks run inline
    # HL7 and Bulk-data queues, straight from their tables' states.
    hl7_waiting = _db(server, "SELECT count(*) FROM hl7_inboundmessage WHERE state IN ('received', 'failed')")[0][0]
    assert _figure(a, "hl7-in-waiting") == str(hl7_waiting)
    assert _figure(a, "bulk-running") == str(_db(
        server, "SELECT count(*) FROM bulk_bulkjob WHERE status IN ('accepted', 'in-progress')")[0][0])
    assert "later change" in _figure(a, "accuracy-note")  # accuracy counts corrections, and says so
    alerts = a.locator("#alerts").inner_text()
    assert "Device api-dev-a (dr.adams) has changes unsynced for 26 h" in alerts
    assert "Break-the-glass" not in alerts  # a security alert: the auditor's
    _assert_no_phi(a.content(), phi, "administrator")
    shot(a, "ops-dashboard-admin-1024x768")
    a.set_viewport_size({"width": 768, "height": 1024})
    shot(a, "ops-dashboard-admin-768x1024")

    # Live refresh: one more applied push shows up without reloading the page.
    refreshed = a.locator("#ops-dash").get_attribute("data-refreshes")
    newer = json.loads(json.dumps(mine))
    newer["valueQuantity"]["value"] = float(newer["valueQuantity"]["value"]) + 1
    s, r = _api(server, "POST", "/api/sync/push",
                {"deviceId": "api-dev-a", "mutations": [_mutation(newer, base + 1)]}, device="api-dev-a")
    assert s == 200 and r["results"][0]["status"] == "applied"
    poll(a, "() => document.querySelector('[data-testid=\"push-count\"]').textContent.trim() === '4'",
         timeout=60)
    assert a.locator("#ops-dash").get_attribute("data-refreshes") != refreshed

    # 8. The privacy officer: security panels only, with the script's security events.
    aud_ctx = browser.new_context(base_url=server.url, viewport={"width": 1024, "height": 768})
    aud_ctx.set_default_timeout(60_000)
    p = _admin_login(aud_ctx, AUDITOR)
    p.click('a[href="/admin/ops/dashboard/"]')
    p.wait_for_selector("#ops-panels #security")
    assert p.locator("#sync").count() == 0 and p.locator("#storage").count() == 0
    assert _figure(p, "failed-signins") == "1"
    assert _figure(p, "failed-unlocks") == "1"
    assert _figure(p, "grants-active") == "1"
    grants = p.locator('[data-testid="grants-table"]').inner_text()
    assert f"Patient/{granted}" in grants and "dr.chen" in grants and "active" in grants
    assert _figure(p, "revocations") == "1"
    revs = p.locator('[data-testid="revocations-table"]').inner_text()
    assert "api-dev-b" in revs and "reported stolen" in revs and "not yet" not in revs  # told to wipe
    assert "Audit chain verified" in p.locator('[data-testid="verify"]').inner_text()
    assert "Last signed checkpoint" in _figure(p, "checkpoint") or "No signed checkpoint" in _figure(p, "checkpoint")
    rejects = p.locator('[data-testid="rejects-table"]').inner_text()
    assert re.search(r"Forbidden or revoked device\s+403\s+[1-9]", rejects), rejects
    assert re.search(r"Not signed in\s+401\s+[1-9]", rejects), rejects
    assert f"Break-the-glass: dr.chen on record Patient/{granted}" in p.locator("#alerts").inner_text()
    _assert_no_phi(p.content(), phi, "privacy officer")
    shot(p, "ops-dashboard-auditor-1024x768")
    p.set_viewport_size({"width": 768, "height": 1024})
    shot(p, "ops-dashboard-auditor-768x1024")

    # Every dashboard view was audited, with the viewer and no patient.
    views = _db(server, "SELECT username, patient_ids FROM audit_auditevent WHERE action = 'dashboard-view'")
    assert {u for u, _ in views} == {ADMIN[0], AUDITOR[0]} and all(pids == "[]" for _, pids in views)

    # 9. /metrics: refused without the token, parsed by prometheus_client with it.
    from prometheus_client.parser import text_string_to_metric_families

    assert _scrape(server, None)[0] == 401
    assert _scrape(server, "not-the-token")[0] == 401
    status, text = _scrape(server, METRICS_TOKEN)
    assert status == 200
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(text) for s in fam.samples}
    assert samples[("omnicare_sync_mutations_total", (("status", "conflict"),))] == 1
    assert samples[("omnicare_sync_mutations_total", (("status", "applied"),))] == 2
    assert samples[("omnicare_devices", (("state", "revoked"),))] == 1
    assert samples[("omnicare_conflicts_open", ())] == 1
    assert samples[("omnicare_break_glass_active", ())] == 1
    assert samples[("omnicare_signins_total", (("outcome", "failure"),))] == 1
    assert samples[("omnicare_http_requests_total", (("method", "POST"), ("route", "api/sync/push"),
                                                     ("status", "200")))] == 3
    for ctx in (tablet, admin_ctx, aud_ctx):
        ctx.close()
