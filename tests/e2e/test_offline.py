"""A clinician signs in, syncs, loses the network and keeps working."""

from __future__ import annotations

from typing import Any

from .conftest import Server, shot
from .helpers import open_patient, poll, sign_in_and_sync, status_text, unlock, wait_status


def test_first_sync_then_offline_reload_keeps_app_and_data(new_context: Any, server: Server) -> None:
    ctx = new_context()
    page = sign_in_and_sync(ctx, shots=True)
    count = page.locator("#patients li").count()
    assert count >= 5
    shot(page, "01-patient-list")
    wait_status(page, "d.state === 'ok' && d.synced === 'true'")

    ctx.set_offline(True)
    page.reload()
    unlock(page)
    page.wait_for_selector("#patients li")
    assert page.locator("#patients li").count() == count
    assert status_text(page).startswith("Offline")
    # Search over the encrypted store, offline: name prefix (accents folded), MRN, birth date.
    for query, expected in (("celi", "Çelik"), ("MRN-000001", "MRN-000001"), ("1939-06-22", "1939-06-22")):
        page.fill("#q", query)
        poll(page, "q => (document.getElementById('result-summary')?.textContent || '').includes(q)", query)
        rows = page.locator("#patients li")
        assert rows.count() >= 1, query
        assert all(expected in rows.nth(i).inner_text() for i in range(rows.count())), query
    page.fill("#q", "zzzqx")
    poll(page, "() => !!document.querySelector('p#patients.empty')")
    page.fill("#q", "")
    open_patient(page, "MRN-000001")
    assert "MRN-000001" in page.inner_text(".patient-head")
    assert page.locator("#vitals tbody tr").count() > 0
    assert page.locator("svg.trend").count() > 0
    shot(page, "02-chart-offline")
    page.set_viewport_size({"width": 768, "height": 1024})  # tablet, portrait
    shot(page, "02b-chart-tablet-portrait", full_page=False)


RAW_DUMP = """async () => {
  const db = await new Promise((res, rej) => { const r = indexedDB.open('omnicare'); r.onsuccess = () => res(r.result); r.onerror = () => rej(r.error); });
  const tx = db.transaction(['records', 'outbox', 'meta']);
  const all = (s) => new Promise((res) => { const r = tx.objectStore(s).getAll(); r.onsuccess = () => res(r.result); });
  const dec = new TextDecoder('latin1');
  const text = (v) => v instanceof Uint8Array ? dec.decode(v) : Array.isArray(v) ? v.map(text).join(' ') :
      v && typeof v === 'object' ? Object.values(v).map(text).join(' ') : String(v);
  const parts = [];
  for (const s of ['records', 'outbox', 'meta']) for (const row of await all(s)) parts.push(text(row));
  db.close();
  return parts.join('\\n');
}"""


def test_wrong_pin_reads_nothing_and_disk_holds_no_plaintext(new_context: Any, server: Server) -> None:
    ctx = new_context()
    page = sign_in_and_sync(ctx, "nurse.baker")
    shown = page.locator("#patients li").count()
    assert shown > 0
    patients = server.fhir("Patient?_count=200", user="nurse.baker")["entry"]
    secrets = set()
    for e in patients:
        p = e["resource"]
        secrets.add(p["name"][0]["family"])
        secrets.update(p["name"][0]["given"])
        secrets.add(p["identifier"][0]["value"])
        secrets.add(p["birthDate"])
    raw = page.evaluate(RAW_DUMP)
    assert len(raw) > 10_000  # the data really is on disk ...
    leaked = sorted(s for s in secrets if len(s) >= 4 and s in raw)
    assert not leaked, leaked  # ... but no name, MRN or birth date in the clear

    page.click("#lock")
    page.wait_for_selector("#unlock")
    page.fill("#unlock input[name=pin]", "000000")
    page.click("#unlock button[type=submit]")
    page.wait_for_selector("#unlock [data-field=pin] .field-error:not(:empty)")
    shot(page, "08-wrong-pin")
    assert page.locator("#patients li").count() == 0
    assert page.evaluate("() => window.omnicare.unlocked") is False
    err = page.evaluate("() => window.omnicare.py.call('patients').then(() => 'read', (e) => e.kind)")
    assert err == "locked"
    unlock(page)
    page.wait_for_selector("#patients li")
    assert page.locator("#patients li").count() == shown

    # Automatic logoff: after the idle time the app locks and the keys leave memory.
    page.evaluate("() => localStorage.setItem('omnicare.idleMinutes', '0.05')")
    page.wait_for_selector("#unlock", timeout=20_000)
    assert "inactivity" in page.inner_text("#unlock")
    page.evaluate("() => localStorage.removeItem('omnicare.idleMinutes')")
    unlock(page)
    page.wait_for_selector("#patients li")

    # Safe update path: another tab of a newer version upgrades the local schema -> this tab is told to
    # reload and refuses to write with the old schema.
    newer = ctx.new_page()
    newer.goto("/manifest.webmanifest")
    newer.evaluate("""() => new Promise((res, rej) => { const r = indexedDB.open('omnicare', 2);
        r.onupgradeneeded = () => {}; r.onsuccess = () => { r.result.close(); res(true); }; r.onerror = () => rej(r.error); })""")
    page.wait_for_selector("#banner:has-text('new version')")
    refused = page.evaluate("""() => window.omnicare.py.call('add_note', {patient_id: 'x', title: 't', text: 'n'})
        .then(() => 'written', (e) => e.kind)""")
    assert refused == "read_only"
    shot(page, "09-update-ready", full_page=False)
