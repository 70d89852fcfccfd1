// Online only (issue 13 item 4): when this device cannot keep data, the app keeps working with nothing at rest.
// The decision is Python's (pyclient/storage_mode.py, asked through BrowserApp.storage_decision); this module
// gathers the facts, switches the store Python writes to (memory instead of IndexedDB) and says it.
import * as idb from "./idb.js";
import * as net from "./net.js";
import { makeSwitchableStore } from "./memidb.js";
import { state, hooks } from "./state.js";
import { banner } from "./ui.js";

/** The store handed to Python: IndexedDB, or this tab's memory once online only. */
export const store = makeSwitchableStore(idb, { onQuota: () => { quotaHit(); } });

/** Does IndexedDB open here? Private windows / disabled storage / a blocked API say no (or never answer). */
export async function probeIdb(timeoutMs = 10000) {
  const ok = await probe(timeoutMs);
  if (!ok) {
    state.idbRefusedAt = performance.now(); // bench/online_only_bench.py: the condition is hit here
    serverDecision({ idb: false }); // said at once; the runtime, still loading, confirms it from the same table
  }
  return ok;
}

/** The same table (pyclient.storage_mode) answered by the server while the local runtime loads. */
async function serverDecision(facts) {
  if (!navigator.onLine) return;
  const r = await net.apiJson("POST", "/api/device/storage-mode", facts).catch(() => null);
  if (r && r.status === 200 && r.json && !state.storageMode) adopt(r.json);
}

async function probe(timeoutMs) {
  // Opens the app's own database (the start-up reads it next anyway, so the cold path costs nothing more).
  // A database held by an older tab is there, just busy: not a reason to go online only.
  if (typeof indexedDB === "undefined" || !indexedDB) return false;
  let timer;
  const late = new Promise((resolve) => { timer = setTimeout(() => resolve(false), timeoutMs); });
  const opened = idb.open().then(() => true, (err) => /older tab/.test(String(err && err.message)));
  try { return await Promise.race([opened, late]); } finally { clearTimeout(timer); }
}

/** First question at start, before Python reads any store: the facts of this page start. */
export async function decideAtStart(py, facts) {
  const d = await py.call("storage_decision", { event: "start", facts });
  adopt(d);
  return d;
}

function adopt(d) {
  state.storageMode = d;
  if (d.mode === "online-only" && !store.memory) store.switchToMemory();
  window.dispatchEvent(new CustomEvent("omnicare-storage-mode", { detail: d })); // bench: online_only_switch_s
  if (d.mode === "online-only") {
    state.onlineOnlyAt ??= performance.now();
    banner(`${d.text} ${d.detail}`, { kind: "info" });
    decorateStatus();
  }
}

export const onlineOnly = () => state.storageMode?.mode === "online-only";

/**
 * After a password sign-in (auth.js): the server's device policy may say "no offline data"; in online-only
 * mode there is no PIN (nothing is kept to unlock): a key for this tab only, then the usual first sync, into
 * memory. True when this module took over from the PIN set-up.
 */
export async function afterSignIn(me, unlocked) {
  const policy = me?.devicePolicy || {};
  if (policy.offlineData === false) await hitNow("policy-no-offline");
  if (policy.requirePersistence && !onlineOnly() && navigator.storage?.persist) {
    const granted = await navigator.storage.persisted().then((p) => p || navigator.storage.persist()).catch(() => false);
    if (!granted) await hitNow("persist-refused");
  }
  if (!onlineOnly()) return false;
  await memorySession();
  await unlocked({ first: true });
  return true;
}

/** A condition learnt at sign-in (before any record is stored): switch to memory, dropping older local data. */
async function hitNow(condition) {
  if ((state.storageMode?.conditions || []).includes(condition)) return;
  if (!store.memory && (await idb.outboxCount().catch(() => 0))) { // never drop unsent changes: unlock and sync first
    banner("Your administrator turned off offline data for this account, but this device still holds changes not yet sent. Unlock and sync; the device then stops keeping data.", { kind: "warn" });
    return;
  }
  const d = await state.py.call("storage_decision", { event: "hit", condition });
  if (d.mode === "online-only" && !store.memory) await state.py.call("wipe"); // policy: none kept, not even old data
  adopt(d);
}

async function memorySession(deviceId = null) {
  const secret = new Uint8Array(32);
  crypto.getRandomValues(secret); // never shown, never stored: the keyring lives as long as this tab's memory
  const pin = btoa(String.fromCharCode(...secret));
  state.deviceId = (await state.py.call("setup_pin", { pin, username: state.username, scope: state.scope || "care-team", device_id: deviceId })).deviceId;
}

/** A write hit the storage quota: push what waits, forget the local store, continue in memory (no new sign-in). */
let switching = false;
async function quotaHit() {
  if (switching || onlineOnly() || !state.py) return;
  switching = true;
  try {
    state.quotaAt = performance.now();
    const d = await state.py.call("storage_decision", { event: "hit", condition: "quota-exhausted" });
    if (d.action !== "go-online-only") return adopt(d);
    // A first sync that met the quota finishes its round first (it stops on the error), then the switch.
    while (state.firstSync) await new Promise((r) => setTimeout(r, 100));
    await state.py.settled?.();
    await new Promise((r) => setTimeout(r, 300));
    // Nothing may still be writing with the old keys when the store changes under Python.
    state.runner?.stop();
    await state.runner?.running?.catch(() => {});
    await state.py.settled?.();
    let waiting = 0;
    try { waiting = (await state.py.call("status")).pending || 0; } catch { /* locked */ }
    if (waiting) { // never drop a change: stay on the device, say it, send when the server answers
      if (!state.updateReady) state.runner?.start();
      banner("This device's storage is full and some changes have not reached the server yet. They are kept and sent when the server answers; free up space on this device.", { kind: "warn" });
      return;
    }
    const wasUnlocked = state.unlocked;
    const deviceId = state.deviceId; // its server session is bound to it: the memory session keeps it
    state.unlocked = false;
    await state.py.call("wipe");
    adopt(d);
    if ((wasUnlocked || document.getElementById("pin-setup")) && state.username) { // signed in: carry on
      state.firstSync = false;
      await memorySession(deviceId);
      await hooks.unlocked({ first: true });
      state.onlineOnlyReadyAt = performance.now(); // bench: the patient list is back, read into memory
    }
  } finally { switching = false; }
}

/** Online only keeps nothing past a lock: the memory store goes, and the next user signs in with a password. */
export async function lockedOnlineOnly(signInScreen) {
  if (!onlineOnly()) return false;
  await state.py.call("wipe");
  state.deviceId = null;
  signInScreen("Locked. This device keeps no patient data, so sign in again to continue.");
  decorateStatus();
  return true;
}

/** The status pill says "Online only" first, in plain words; the rest of the status follows. */
export function decorateStatus() {
  if (!onlineOnly()) return;
  const box = document.getElementById("sync");
  const text = box.querySelector(".sync-text");
  box.dataset.mode = "online-only";
  const { label, text: why } = state.storageMode; // short words on the pill, the sentence on hover / to readers
  if (!text.textContent.startsWith(label)) text.textContent = `${label} · ${text.textContent}`;
  box.title = why;
  box.setAttribute("aria-description", why);
}
