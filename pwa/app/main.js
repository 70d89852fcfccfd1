// App controller: boot, status, Python events, service worker and update path. Every decision is Python's.
// Sign-in/PIN/lock: auth.js; routing and screens: routes.js; data-entry forms: forms.js.
import { bootPython } from "./py.js";
import * as net from "./net.js";
import { WORDS } from "./words.js";
import * as idb from "./idb.js";
import { SyncRunner } from "./sync-runner.js";
import { h, screen, renderStatus, progress, banner, plain } from "./ui.js";
import { state, channel, hooks } from "./state.js";
import { signInScreen, unlockScreen, lock, signOut, startIdleTimer } from "./auth.js";
import { route, refreshView } from "./routes.js";
import { installRecoveryLink } from "./screens/recovery.js";
import { store, probeIdb, decideAtStart, decorateStatus, afterSignIn, lockedOnlineOnly } from "./online-only.js";
import { unlocked } from "./auth.js";
import { runtimeFailed } from "./screens/online.js";
state.makeIdb = idb.makeIdb;
hooks.onStatus = onStatus;
hooks.revokedScreen = revokedScreen;
Object.assign(hooks, { unlocked, afterSignIn, lockedOnlineOnly }); // online only (issue 13 item 4)
window.omnicare = state; // for diagnostics and the e2e tests (no secrets: keys live inside Python)

// ---------------------------------------------------------------- service worker + updates
async function registerSw() {
  if (!("serviceWorker" in navigator)) return;
  try {
    await navigator.serviceWorker.register("/sw.js", { scope: "/" });
    navigator.serviceWorker.addEventListener("message", (e) => {
      if (e.data && e.data.type === "update-ready" && e.data.version !== state.swVersion) updateReady();
    });
    const reg = await navigator.serviceWorker.ready;
    state.swVersion = await swAsk(reg.active, { type: "version" }).then((r) => r.version, () => null);
    if (navigator.onLine) swAsk(reg.active, { type: "check" }).then((r) => {
      if (r.version && state.swVersion && r.version !== state.swVersion) updateReady();
      state.cacheReady = !r.error;
    }, () => {});
  } catch (err) {
    console.warn("service worker", err);
  }
}

function swAsk(worker, msg) {
  return new Promise((resolve, reject) => {
    if (!worker) return reject(new Error("no worker"));
    const ch = new MessageChannel();
    ch.port1.onmessage = (e) => resolve(e.data);
    worker.postMessage(msg, [ch.port2]);
    setTimeout(() => reject(new Error("service worker timeout")), 60000);
  });
}

const UPDATE_REASON = "A new version of OmniCare is ready. Your saved changes are safe. Reload to continue editing.";

async function updateReady() {
  if (state.updateReady) return;
  state.updateReady = true;
  const reason = UPDATE_REASON;
  if (state.py) await state.py.call("set_read_only", { reason }).catch(() => {}); // else: set right after boot
  state.runner?.stop();
  banner(reason, { kind: "info", action: { label: "Reload now", run: () => location.reload() } });
}

idb.onStale(() => updateReady());

// ---------------------------------------------------------------- status
function onStatus(s) {
  if (state.revoked) return; // the revoked screen owns the status pill
  const prev = state.lastStatus;
  state.lastStatus = s;
  if (prev && !s.locked && (prev.pending !== s.pending || prev.conflicted !== s.conflicted)) {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(() => refreshView(null), 100); // pending badges change when the server acks
  }
  renderStatus(s, { online: navigator.onLine });
  decorateStatus(); // "Online only: this device keeps no patient data — why" (issue 13 item 4)
  if (state.rejectedBanner && !s.locked && !s.rejected) { state.rejectedBanner = false; banner(null); } // all dealt with
  if (s.needsLogin && !state.reauthShown && state.unlocked) {
    state.reauthShown = true;
    banner("Your session has ended. Your changes are kept on this device; sign in again to sync them.", {
      kind: "warn", action: { label: "Sign in", run: () => { banner(null); location.hash = "#/signin"; } },
    });
  }
}

let refreshTimer = null;
function onPyEvent(json) {
  const ev = JSON.parse(json);
  if (ev.type === "pulled") {
    // Determinate when the server says how far the feed goes (WebSocket "ready" carries the feed head).
    if (state.firstSync) progress(true, ev.received, state.runner.head && ev.seq ? Math.min(1, ev.seq / state.runner.head) : null);
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(() => refreshView(ev.ids), 200);
  } else if (ev.type === "changed") {
    channel?.postMessage({ type: "changed" });
  } else if (ev.type === "conflict") {
    banner(`${ev.count === 1 ? "A change of yours conflicts" : `${ev.count} changes of yours conflict`} with someone else's edit. Nothing is lost: choose what to keep.`, {
      kind: "warn", action: { label: "Review", run: () => { banner(null); location.hash = "#/conflicts"; } },
    });
  } else if (ev.type === "rejected") {
    state.rejectedBanner = true;
    banner(ev.message, { kind: "error", action: { label: "Review", run: () => { banner(null); location.hash = "#/rejected"; } } });
  } else if (ev.type === "device-set" && ev.phase === "pinned-ready" && state.firstSync) {
    // Issue 13: the pinned patients are on the device and usable; the rest (the prefetch tail) keeps arriving.
    state.firstSync = false;
    progress(false);
    if (!location.hash || location.hash === "#/" || location.hash === "#") location.hash = "#/patients"; else route();
  } else if (ev.type === "revoked") {
    revokedScreen();
  } else if (ev.type === "audit-parked") {
    banner(ev.message, { kind: "warn" }); // trust: a refused access record is kept and said, never dropped
  } else if (ev.type === "integrity") {
    // After the call that found it: the status (never "Synced" now) and one banner saying everything.
    setTimeout(() => state.py?.call("status").then((s) => { onStatus(s); banner(integrityMessage(s, ev), { kind: "warn" }); })
      .catch(() => {}), 0);
  }
}

/** Store integrity (issue 17): plain words for what could not be verified on this device. */
function integrityMessage(s, ev) {
  const parts = [];
  const n = s.unreadableChanges || 0;
  if (n) parts.push(n === 1
    ? "One change saved on this device could not be read, so it will not be sent. Your other changes are safe."
    : `${n} changes saved on this device could not be read, so they will not be sent. Your other changes are safe.`);
  if (s.unverified) parts.push("Some records on this device could not be verified. They are not shown and are being downloaded again from the server.");
  if (ev.corrected) parts.push(`${ev.corrected} out-of-date record${ev.corrected === 1 ? " was" : "s were"} found on this device and replaced with the current version from the server.`);
  if (!parts.length) parts.push("Records that could not be verified were downloaded again from the server.");
  return parts.join(" ") + " This was reported to your administrator.";
}

channel?.addEventListener("message", (e) => {
  if (e.data?.type === "revoked" && state.py && !state.revoked) {
    state.py.call("device_revoked").catch(() => revokedScreen()); // drop this tab's keys too
    return;
  }
  if (e.data?.type === "changed" && state.py && state.unlocked) {
    state.py.call("mark_dirty").then(() => refreshView(null)).catch(() => {});
  }
});


// ---------------------------------------------------------------- boot
async function boot() {
  registerSw();
  net.deviceIdFrom(() => state.deviceId); // trust: every request names its device (session bound to it)
  await net.finishPendingSignOut(); // an offline sign-out is completed before anything else
  window.addEventListener("online", async () => {
    await net.finishPendingSignOut();
    if (state.lastStatus) onStatus(state.lastStatus);
  });
  window.addEventListener("offline", () => state.lastStatus && onStatus(state.lastStatus));
  setSplash("Starting the secure runtime…");
  // Issue 18 item 12: the Python runtime loads in parallel; a device with no keyring (the cold case) gets the
  // sign-in form at once, read straight from IndexedDB, and its submit waits for the runtime (auth.js).
  const idbOk = probeIdb(); // online only when IndexedDB will not open (issue 13 item 4)
  let readyDone;
  state.ready = new Promise((resolve, reject) => { readyDone = { resolve, reject }; });
  state.ready.catch(() => {}); // the failure is shown below; a waiting submit sees it too
  const early = (await idbOk) ? await earlySignIn() : (signInScreen(), true); // no storage: nothing to unlock
  // The runtime's start-up holds the main thread for long stretches (unpacking the standard library, starting
  // the interpreter): started before the form, it delayed the form by ~2 s. Let the form paint first.
  if (early) await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
  const booting = bootPython(onPyEvent, { store });
  try {
    state.py = await booting;
  } catch (err) {
    if (await runtimeFailed(err, { idb: await idbOk })) return readyDone.reject(err); // online only, server decides
    readyDone.reject(err);
    screen("Error", h("section", { class: "card" }, h("h2", {}, "OmniCare could not start"), h("p", {}, plain(err.message || err)),
      h("p", { class: "muted" }, navigator.onLine ? "Reload to try again." : "You are offline and this device has not cached the app yet. Connect once to install it.")));
    return;
  }
  state.bootMs = state.py.bootMs;
  state.runtimeReadyAt = performance.now(); // startup_bench.py reads it (app_runtime_ready_s)
  if (state.updateReady) await state.py.call("set_read_only", { reason: UPDATE_REASON });
  const runner = new SyncRunner({
    py: state.py, onStatus, deviceId: () => state.deviceId, appVersion: () => state.swVersion,
    onEvent: (e) => {
      if (e.type === "revoked") state.py.call("device_revoked").catch(() => revokedScreen());
      // "locked": the idle lock stopped a sync under way (it goes on after the PIN); nothing to say over the lock screen.
      else if (e.type === "error" && !state.updateReady && e.kind !== "locked") banner(e.message);
    },
  });
  state.runner = runner;
  await decideAtStart(state.py, { idb: await idbOk, runtime: true }); // before Python reads any store
  const info = await state.py.call("boot");
  if (!state.username) state.username = info.username; // a sign-in that finished first has set it already
  state.deviceId = info.deviceId;
  document.getElementById("sync-now").addEventListener("click", () => runner.kick("manual"));
  document.getElementById("lock").addEventListener("click", () => lock("manual"));
  document.getElementById("signout").addEventListener("click", signOut);
  installRecoveryLink();
  window.addEventListener("hashchange", () => route());
  startIdleTimer();
  readyDone.resolve(state.py);
  if (early && !info.hasKeyring) { // the sign-in form is already up (and may be half filled in): its pill words
    if (!state.unlocked) state.py.call("status", { signed_out: true }).then(onStatus).catch(() => {});
    return;
  }
  if (info.hasKeyring) unlockScreen();
  else signInScreen();
  decorateStatus();
}

/** Show the sign-in form before the runtime is up when this device holds no keyring (nothing to unlock). */
async function earlySignIn() {
  let meta;
  try { meta = await idb.metaGetMany(["keyring", "device.id", "schema"]); } catch { return false; }
  const [keyring, deviceId, schema] = meta;
  if (keyring != null || schema != null) return false; // unlock, or a stored schema Python must check first
  state.deviceId = deviceId;
  signInScreen();
  return true;
}

function setSplash(text) {
  const t = document.getElementById("splash-text");
  if (t) t.textContent = text;
}

// ---------------------------------------------------------------- revoked device
/**
 * The server revoked this device (reported lost). Python has already forgotten the keys and deleted the
 * IndexedDB database; here: stop syncing, drop every non-shell cache and web storage, end the session and
 * say so plainly. The app-shell cache holds no patient data (/api and /fhir are network-only in sw.js).
 */
async function revokedScreen() {
  if (state.revoked) return;
  state.revoked = true;
  state.unlocked = false;
  state.query = "";
  state.runner?.stop();
  banner(null);
  channel?.postMessage({ type: "revoked" });
  try {
    for (const n of await caches.keys()) if (!n.startsWith("omnicare-")) await caches.delete(n);
  } catch { /* no cache storage */ }
  try { localStorage.clear(); sessionStorage.clear(); } catch { /* storage disabled */ }
  if (navigator.onLine) net.logout().catch(() => {});
  document.getElementById("usernav").hidden = true;
  const pill = document.getElementById("sync");
  pill.dataset.state = "warn";
  // Python has just erased itself with the keys: the words come from pyclient.outcome through words.js.
  pill.querySelector(".sync-text").textContent = WORDS.revokedPill;
  screen(WORDS.revokedPill, h("section", { class: "card center", id: "revoked", role: "alert" },
    h("h2", {}, WORDS.revokedTitle),
    h("p", {}, WORDS.revokedBody),
    h("p", { class: "muted" }, WORDS.revokedHelp),
    h("button", { class: "btn", type: "button", onclick: () => { location.hash = "#/"; location.reload(); } }, WORDS.revokedBack)));
}

boot();
