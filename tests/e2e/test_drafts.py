"""Issue 18 item 10: a half-typed note survives the idle lock — sealed with the device keys while locked (no
plaintext of it in IndexedDB), back in the same form after unlock, gone once saved and on sign-out. It never
reaches the server."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from pyclient import envelope as env

from .conftest import Server, shot
from .helpers import open_patient, poll, sign_in_and_sync, unlock, wait_status
from .test_offline import RAW_DUMP
from .test_rejected_changes import assert_plain

# The sealed draft as IndexedDB holds it (null when there is none, or no database at all after sign-out).
META_DRAFT = """async () => {
  const names = (await indexedDB.databases()).map((d) => d.name);
  if (!names.includes('omnicare')) return null;
  const db = await new Promise((res, rej) => { const r = indexedDB.open('omnicare'); r.onsuccess = () => res(r.result); r.onerror = () => rej(r.error); });
  if (!db.objectStoreNames.contains('meta')) { db.close(); return null; }
  const v = await new Promise((res) => { const r = db.transaction('meta').objectStore('meta').get('draft.sealed'); r.onsuccess = () => res(r.result); });
  db.close();
  return v == null ? null : String(v.v);
}"""
TITLE = "Ward round Kestrel"
TEXT = "Febrile overnight, Tmax 38.4; started on oral fluids, review cultures at noon — plan: zephyrine"


@pytest.mark.parametrize("size", [(1024, 768), (768, 1024)], ids=["landscape", "portrait"])
def test_a_half_typed_note_survives_the_idle_lock(new_context: Any, server: Server, size: tuple[int, int]) -> None:
    ctx = new_context()
    page = sign_in_and_sync(ctx)
    page.set_viewport_size({"width": size[0], "height": size[1]})
    tag = f"{size[0]}x{size[1]}"
    open_patient(page, "MRN-000002")
    pid = str(page.evaluate("() => decodeURIComponent(location.hash.split('/')[2])"))
    page.goto(f"/#/patient/{pid}/note")
    page.wait_for_selector("#form-note")
    page.fill("#form-note input[name=title]", TITLE)
    page.fill("#form-note textarea[name=text]", TEXT)

    # The idle lock fires while the note is half typed.
    page.evaluate("() => localStorage.setItem('omnicare.idleMinutes', '0.05')")
    page.wait_for_selector("#unlock", timeout=20_000)
    page.evaluate("() => localStorage.removeItem('omnicare.idleMinutes')")
    assert "inactivity" in page.inner_text("#unlock")
    sealed = page.evaluate(META_DRAFT)
    assert sealed, "no draft kept"  # the draft is there, as an envelope under the device's data key ...
    blob = base64.b64decode(sealed)
    assert env.parse(blob).key_id
    for secret in (b"Kestrel", b"zephyrine", b"Febrile"):
        assert secret not in blob
    raw = page.evaluate(RAW_DUMP)
    for secret in ("Kestrel", "zephyrine", "Febrile overnight"):
        assert secret not in raw  # sealed like every record: no plaintext of the draft at rest
    assert page.evaluate("() => window.omnicare.py.call('draft_take', {patient_id: 'x', form: 'note'})"
                         ".then(() => 'read', (e) => e.kind)") == "locked"

    unlock(page)
    page.wait_for_selector("#form-note #draft-note")
    assert page.input_value("#form-note input[name=title]") == TITLE
    assert page.input_value("#form-note textarea[name=text]") == TEXT
    assert "unsaved entry was kept" in page.inner_text("#draft-note")
    shot(page, f"drafts-restored-{tag}", full_page=False)
    assert_plain(page)

    # Saved: the draft goes (the note is an ordinary pending record now), and nothing about it is left in meta.
    page.fill("#form-note textarea[name=text]", TEXT + ", discussed with family")
    page.click("#form-note button[type=submit]")
    page.wait_for_selector("#patient-name")
    assert poll(page, "(pid) => window.omnicare.py.call('draft_take', {patient_id: pid, form: 'note'})"
                      ".then((d) => d === null)", pid)
    page.goto(f"/#/patient/{pid}/note")
    page.wait_for_selector("#form-note")
    assert page.locator("#draft-note").count() == 0
    assert page.input_value("#form-note textarea[name=text]") == ""

    # The draft never reaches the server; the saved note does once synced.
    wait_status(page, "d.pending === '0'")
    notes = server.fhir(f"DocumentReference?patient={pid}&_count=200")
    texts = [base64.b64decode(c["attachment"]["data"]).decode() for e in notes.get("entry", [])
             for c in e["resource"].get("content", []) if c.get("attachment", {}).get("data")]
    assert any(t.endswith("discussed with family") for t in texts)
    assert not any(t == TEXT for t in texts)  # the half-typed version was never sent


def test_a_draft_is_wiped_on_sign_out(new_context: Any, server: Server) -> None:
    ctx = new_context()
    page = sign_in_and_sync(ctx, "nurse.baker")
    page.set_viewport_size({"width": 1024, "height": 768})
    page.locator("#patients li a").first.click()
    page.wait_for_selector("#patient-name")
    pid = str(page.evaluate("() => decodeURIComponent(location.hash.split('/')[2])"))
    page.goto(f"/#/patient/{pid}/vitals")
    page.wait_for_selector("#form-vitals")
    page.fill("#form-vitals input[name=sbp]", "141")
    page.fill("#form-vitals input[name=temp]", "38.4")
    page.click("#lock")
    page.wait_for_selector("#unlock")
    unlock(page)
    page.wait_for_selector("#form-vitals #draft-note")
    assert page.input_value("#form-vitals input[name=sbp]") == "141"
    assert page.input_value("#form-vitals input[name=temp]") == "38.4"
    shot(page, "drafts-vitals-restored-1024x768", full_page=False)
    sealed = page.evaluate(META_DRAFT)
    assert sealed and "141" not in sealed and "38.4" not in sealed  # kept, sealed, until saved or signed out
    page.click("#signout")
    page.click("dialog button[value=ok]")
    page.wait_for_selector("#signin")
    assert page.evaluate(META_DRAFT) is None  # sign-out wiped it with everything else
