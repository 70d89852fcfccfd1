// Online only (issue 13 item 4): when this device cannot keep data, the app keeps working with nothing at rest.
// The decision is Python's (pyclient/storage_mode.py, asked through BrowserApp.storage_decision); this module
// gathers the facts, switches the store Python writes to (memory instead of IndexedDB) and says it.
// Switching back: while the reason can clear (space freed, policy lifted, persistence granted) the facts
// Python names are gathered again every `recheckS` seconds and when the tab regains focus; when Python offers,
// the offer is shown, and accepting moves this session to IndexedDB under a new PIN, in a dialog over the
// screen, which stays as it is. The offer is watched the same way (Python names the facts): a condition back
// (the policy re-imposed, the disk full again) withdraws it, and the accept re-reads the facts first.
import * as idb from "./idb.js";
import * as net from "./net.js";
import * as webauthn from "./webauthn.js";
import { makeSwitchableStore } from "./memidb.js";
import { state, hooks } from "./state.js";
import { refreshView } from "./routes.js";
import { h, field, input, banner, showErrors } from "./ui.js";

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
  watch(d);
  remindLater(d);
  if (d.mode !== "online-only") return;
  state.onlineOnlyAt ??= performance.now();
  if (d.action === "withdraw-offer") document.getElementById("keep-data")?.close(); // the offer is gone: its dialog too
  if (["start-online-only", "go-online-only", "withdraw-offer"].includes(d.action)) banner([d.note, d.text, d.detail].filter(Boolean).join(" "), { kind: "info" });
  else if (d.action === "offer-device" || (d.offer && document.getElementById("banner").hidden)) showOffer(d);
  else if (d.action === "back-at-next-start") banner(null);
  decorateStatus();
}

// ---------------------------------------------------------------- switching back (the condition cleared)
let recheckTimer = null;
let recheckEvery = 0;

/** Gather the facts Python watches, as often as it says; nothing when no condition can clear this session. */
function watch(d) {
  const every = d.mode === "online-only" ? (d.recheckS || 0) : 0;
  if (every === recheckEvery) return;
  clearInterval(recheckTimer);
  recheckEvery = every;
  recheckTimer = every ? setInterval(() => recheck("timer"), every * 1000) : null;
}

// "Not now" is for now: Python says when to offer again (remindS, with the decline); JS owns the timer. Any
// decision that is not "declined" any more (the offer is back, a condition came back) ends it.
let remindTimer = null;
function remindLater(d) {
  if (!d.backNextStart) { clearTimeout(remindTimer); remindTimer = null; return; }
  if (!d.remindS) return; // a later check while declined: the decline's own timer runs on
  clearTimeout(remindTimer);
  remindTimer = setTimeout(async () => {
    remindTimer = null;
    if (state.py) adopt(await state.py.call("storage_decision", { event: "remind" }).catch(() => state.storageMode));
  }, d.remindS * 1000);
}

// The clinician coming back to the tab (after freeing space elsewhere, or being told the policy changed).
for (const [target, ev] of [[window, "focus"], [document, "visibilitychange"], [window, "online"]]) {
  target.addEventListener(ev, () => { if (recheckEvery && document.visibilityState !== "hidden") recheck(ev); });
}

let checking = false;
let deciding = null; // a check's question to Python once asked: the accept waits for it (never for a fetch)
async function recheck(why) {
  const d = state.storageMode;
  if (checking || switchingBack || !state.py || !state.unlocked || !d?.watch?.length) return;
  checking = true;
  try {
    const facts = await gather(d.watch, why);
    if (switchingBack) return; // the accept judges the facts itself; a check landing mid-switch would undo it
    deciding = state.py.call("storage_decision", { event: "check", facts });
    adopt(await deciding);
  } catch { /* a fact could not be read: the next check tries again */ } finally { checking = false; deciding = null; }
}

/** The facts only, as the browser and the server report them; Python judges what they mean. */
async function gather(names, why) {
  const facts = {};
  const sm = navigator.storage;
  if (names.includes("estimate") && sm?.estimate) facts.estimate = await sm.estimate().then((e) => ({ usage: e.usage, quota: e.quota }), () => null);
  if (names.includes("persisted") && sm?.persisted) {
    let p = await sm.persisted().catch(() => null);
    if (p === false && why !== "timer" && sm.persist) p = await sm.persist().catch(() => false); // asked with the user present
    facts.persisted = p;
  }
  if (names.includes("policy") && navigator.onLine) {
    // Bounded: a request the network swallows must not hold the accept (no policy read: Python says not yet).
    const late = new Promise((resolve) => setTimeout(() => resolve(null), 10000));
    const r = await Promise.race([net.me(), late]).catch(() => null);
    if (r?.status === 200 && r.json?.devicePolicy) facts.policy = r.json.devicePolicy;
  }
  return facts;
}

function showOffer(d) {
  if (document.getElementById("keep-data")) return; // the dialog is open
  banner(d.offer.text, { kind: "info", action: { label: d.offer.accept, run: () => offerDialog() }, onDismiss: decline });
}

async function decline() {
  if (!state.py) return;
  adopt(await state.py.call("storage_decision", { event: "decline" }).catch(() => state.storageMode));
}

/** The PIN set-up (the same rules as the first sign-in: Python's setup_pin), in a dialog over the screen. */
function offerDialog() {
  const offer = state.storageMode?.offer;
  if (!offer || document.getElementById("keep-data")) return;
  const pin = input({ name: "pin", type: "password", inputmode: "numeric", autocomplete: "new-password", required: true });
  const again = input({ name: "pin2", type: "password", inputmode: "numeric", autocomplete: "new-password", required: true });
  const note = h("p", { class: "muted", id: "keep-data-note", role: "status" });
  const cancel = h("button", { type: "button", class: "btn ghost" }, offer.cancel);
  const submit = h("button", { type: "submit", class: "btn" }, offer.submit);
  const form = h("form", { novalidate: true },
    h("p", {}, offer.explain),
    field("New PIN", pin, { name: "pin", hint: offer.pinHint }), // pyclient.keys.PIN_RULE
    field("Repeat PIN", again, { name: "pin2" }),
    h("p", { class: "form-error", role: "alert" }), note,
    h("div", { class: "actions" }, cancel, submit));
  const dlg = h("dialog", { class: "dialog", id: "keep-data", "aria-labelledby": "keep-data-title" },
    h("h2", { id: "keep-data-title" }, offer.title), form);
  const close = () => { if (dlg.open) dlg.close(); else dlg.remove(); };
  cancel.addEventListener("click", () => { close(); decline(); });
  dlg.addEventListener("cancel", (e) => { if (switchingBack) e.preventDefault(); }); // Esc mid-switch: no
  dlg.addEventListener("close", () => dlg.remove()); // Esc before: the offer banner stays
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (switchingBack) return;
    showErrors(form, null);
    if (pin.value !== again.value) return showErrors(form, { message: "The PINs do not match.", fields: { pin2: "Does not match the PIN above." } });
    submit.disabled = cancel.disabled = true;
    try {
      await switchBack(pin.value, (text) => { note.textContent = text; });
      close();
    } catch (err) {
      note.textContent = "";
      showErrors(form, err);
    } finally { submit.disabled = cancel.disabled = false; }
  });
  document.body.append(dlg);
  dlg.showModal();
  pin.focus();
}

let switchingBack = false;
/**
 * Move this session from memory to IndexedDB. Nothing on screen is redrawn (the dialog covers it; the app
 * counts as locked meanwhile, so no redraw and no write), and nothing is lost: the memory store goes only when
 * Python says every change, every access record and every sync round has reached the server.
 */
async function switchBack(pin, say) {
  if (!state.py || switchingBack) return;
  switchingBack = true;
  const wasUnlocked = state.unlocked;
  let handedOver = false;
  try {
    await deciding?.catch(() => {}); // a check already put to Python lands first
    await state.runner?.kick("switch"); // send what waits now
    state.runner?.stop();
    await state.runner?.running?.catch(() => {});
    await state.py.settled?.();
    const s = await state.py.call("status").catch(() => ({}));
    const audit = await state.py.call("audit_flush").catch(() => 0);
    // The facts again, now: the policy may be back since the last check, and Python refuses the accept then.
    const watched = await gather(state.storageMode?.watch || ["policy"], "accept");
    const d = await state.py.call("storage_decision", { event: "accept", facts: { ...watched,
      unsent: s.pending || 0, unresolved: (s.conflicted || 0) + (s.rejected || 0), audit, sending: !!s.syncing, online: navigator.onLine } });
    adopt(d);
    if (d.action === "withdraw-offer") return; // said in the banner, the dialog closed: nothing was stored
    if (d.action !== "switch-to-device") throw new Error(d.note || d.text);
    say(d.note);
    state.unlocked = false;
    const memory = store.switchToDevice();
    try {
      const prf = await webauthn.enroll(state.username);
      await state.py.call("setup_pin", { pin, username: state.username, scope: state.scope || "care-team", prf, device_id: state.deviceId });
    } catch (err) { // a PIN the rules refuse, or storage failing again: still online only, nothing left at rest
      store.restore(memory);
      await idb.wipe().catch(() => {});
      throw err;
    }
    await memory.wipe();
    const done = await state.py.call("storage_decision", { event: "switched" });
    adopt(done);
    decorateStatus();
    navigator.storage?.persist?.().catch(() => {});
    // The first download, into IndexedDB; a quota hit here goes online only again (quotaHit), as anywhere.
    state.runner.active = !state.updateReady;
    state.runner.connectWs();
    await state.runner.kick("first", { first: true });
    if (switching || onlineOnly()) { handedOver = true; return; } // storage full again: quotaHit carries on in memory
    const ok = await state.py.call("first_sync_done");
    const told = await state.py.call("storage_decision", { event: "downloaded", facts: { done: ok } });
    banner(told.note, { kind: ok ? "info" : "warn" });
  } finally {
    switchingBack = false;
    if (!handedOver) {
      state.unlocked = state.unlocked || wasUnlocked;
      if (!state.updateReady && state.unlocked) state.runner?.start();
      if (state.unlocked) refreshView(null); // the same screen, now read from this device (a form being filled in is left alone)
    }
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
  const signedIn = state.unlocked || switchingBack; // a switch back's first download counts as signed in
  try {
    state.quotaAt = performance.now();
    const estimate = await navigator.storage?.estimate?.().then((e) => ({ usage: e.usage, quota: e.quota }), () => null);
    // The estimate now: freed space is measured from it before this device is offered to keep data again.
    const d = await state.py.call("storage_decision", { event: "hit", condition: "quota-exhausted", facts: { estimate } });
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
    const wasUnlocked = signedIn;
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
  const box = document.getElementById("sync");
  const text = box.querySelector(".sync-text");
  // The words of the previous decision go first (they change when the reason clears or an offer stands).
  const base = text.textContent.startsWith("Online only") ? text.textContent.split(" · ").slice(1).join(" · ") : text.textContent;
  if (!onlineOnly()) {
    if (box.dataset.mode) { // switched back
      delete box.dataset.mode; text.textContent = base; box.removeAttribute("title"); box.removeAttribute("aria-description");
    }
    return;
  }
  box.dataset.mode = "online-only";
  const { label, text: why } = state.storageMode; // short words on the pill, the sentence on hover / to readers
  text.textContent = base ? `${label} · ${base}` : label;
  box.title = why;
  box.setAttribute("aria-description", why);
}
