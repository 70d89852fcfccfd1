"""Issue 11 item 2: a vitals set (five measurements) is ONE IndexedDB transaction, so a full disk in the middle
of it saves none of the five (before: five transactions, the first ones stayed)."""

from __future__ import annotations

import json
from typing import Any

from .conftest import Server, own_server_fixture, shot
from .helpers import open_patient, poll, sign_in_and_sync, wait_status

# Watches IndexedDB from inside the page (DevTools evaluate, outside the CSP): every readwrite transaction, how
# many Observation rows each one puts, and, when window.__failAt = n, a QuotaExceededError at the n-th such put.
HOOK = """() => {
  if (window.__txHook) return;
  window.__txHook = true;
  window.__tx = []; window.__obsPuts = 0; window.__failAt = 0;
  const transaction = IDBDatabase.prototype.transaction;
  IDBDatabase.prototype.transaction = function (names, mode, ...rest) {
    const tx = transaction.call(this, names, mode, ...rest);
    if (mode === "readwrite") window.__tx.push({ stores: [].concat(names).map(String), obs: 0, tx });
    return tx;
  };
  const put = IDBObjectStore.prototype.put;
  IDBObjectStore.prototype.put = function (value, ...rest) {
    if (this.name === "records" && value && value.t === "Observation") {
      const seen = window.__tx.find((x) => x.tx === this.transaction);
      if (seen) seen.obs += 1;
      window.__obsPuts += 1;
      if (window.__failAt && window.__obsPuts === window.__failAt) {
        throw new DOMException("The quota has been exceeded.", "QuotaExceededError");
      }
    }
    return put.call(this, value, ...rest);
  };
}"""

RESET = "(failAt) => { window.__tx = []; window.__obsPuts = 0; window.__failAt = failAt; }"
SEEN = "() => window.__tx.map((x) => ({ stores: x.stores, obs: x.obs }))"

# What is at rest: Observation rows and queued changes (audit events are outbox rows too, kept apart).
AT_REST = """async () => {
  const d = await window.omnicare.makeIdb().rawDump();
  return { obs: d.records.filter((r) => r.t === "Observation").length,
           changes: d.outbox.filter((r) => !String(r.id).startsWith("audit:")).length };
}"""


# Its own server: the full disk simulated here must not leak into other files' tests.
server = own_server_fixture()


def _fill_vitals(page: Any) -> None:
    page.click("text=Record vitals")
    page.wait_for_selector("#form-vitals")
    for name, value in (("sbp", "128"), ("dbp", "82"), ("hr", "74"), ("rr", "16"), ("temp", "36.9"),
                        ("spo2", "98")):
        page.fill(f"#form-vitals input[name={name}]", value)


def test_five_vitals_are_one_transaction_and_a_full_disk_saves_none(new_context: Any, server: Server) -> None:
    ctx = new_context()
    page = sign_in_and_sync(ctx)
    page.set_viewport_size({"width": 1024, "height": 768})
    open_patient(page, "MRN-000002")
    pid = page.evaluate("() => decodeURIComponent(location.hash.split('/')[2])")
    ctx.set_offline(True)  # the changes stay queued, so the test can count them
    # One change already waits: a device with unsent work keeps its store after a full disk (online-only.js).
    page.evaluate("a => window.omnicare.py.call('add_note', {patient_id: a, title: 'Seen', text: 'Seen today.'})",
                  pid)
    wait_status(page, "d.pending === '1'")
    page.evaluate(HOOK)
    before = page.evaluate(AT_REST)

    # The disk fills at the third of the five Observation rows: nothing of the set is written.
    page.evaluate(RESET, 3)
    _fill_vitals(page)
    page.click("#form-vitals button[type=submit]")
    page.wait_for_selector("#form-vitals .form-error:has-text('storage space')")
    shot(page, "vitals-full-disk-1024x768", full_page=False)
    assert page.evaluate("() => window.__obsPuts") == 3, "the failure came in the middle of the set"
    assert page.evaluate(AT_REST) == before, "a full disk left part of the vitals set behind"
    wait_status(page, "d.pending === '1'")

    # Space again: the same form saves all five in one readwrite transaction.
    page.evaluate(RESET, 0)
    page.click("#form-vitals button[type=submit]")
    page.wait_for_selector("#patient-name")
    wait_status(page, "d.pending === '6'")  # the note + BP panel, heart rate, breathing, temperature, SpO2
    assert "128/82" in page.inner_text("#vitals")
    seen = page.evaluate(SEEN)
    with_obs = [t for t in seen if t["obs"]]
    assert [t["obs"] for t in with_obs] == [5], json.dumps(seen)
    writes_records = [t for t in seen if "records" in t["stores"]]
    assert len(writes_records) == 1, json.dumps(seen)  # the five rows, their queue entries and manifests
    after = page.evaluate(AT_REST)
    assert after == {"obs": before["obs"] + 5, "changes": before["changes"] + 5}
    print("vitals save: readwrite transactions", len(seen), json.dumps([t["stores"] for t in seen]))
    page.set_viewport_size({"width": 768, "height": 1024})
    poll(page, "() => !!document.getElementById('vitals')")
    shot(page, "vitals-saved-768x1024", full_page=False)
