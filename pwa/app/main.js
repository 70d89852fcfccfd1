// App controller: boot, sign-in / PIN, routing, idle lock, update path. Every decision is Python's.
import { bootPython } from "./py.js";
import * as net from "./net.js";
import * as webauthn from "./webauthn.js"; // trust: hardware-bound unlock (WebAuthn PRF)
import * as idb from "./idb.js";
import { SyncRunner } from "./sync-runner.js";
import { orderWithChecks, cdsPanel } from "./cds.js";
import {
  h, field, screen, renderStatus, progress, banner, confirmDialog, patientList, chartScreen, formScreen,
  input, select, conflictScreen, showErrors,
} from "./ui.js";

// HIPAA automatic logoff; a deployment (or a test) may shorten it via localStorage.
const idleMinutes = () => Number(localStorage.getItem("omnicare.idleMinutes") || 5);
const state = {
  py: null, unlocked: false, username: null, persistRefused: false, query: "", firstSync: false,
  swVersion: null, updateReady: false, lastStatus: null, route: null,
};
const channel = "BroadcastChannel" in window ? new BroadcastChannel("omnicare") : null;
state.makeIdb = idb.makeIdb;
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
  runner?.stop();
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
  renderStatus(s, { online: navigator.onLine, persistRefused: state.persistRefused });
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
    if (state.firstSync) progress(true, ev.received, runner.head && ev.seq ? Math.min(1, ev.seq / runner.head) : null);
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(() => refreshView(ev.ids), 200);
  } else if (ev.type === "changed") {
    channel?.postMessage({ type: "changed" });
  } else if (ev.type === "conflict") {
    banner(`${ev.count} change${ev.count === 1 ? "" : "s"} conflict with someone else's edit.`, {
      kind: "warn", action: { label: "Review", run: () => { banner(null); location.hash = "#/conflicts"; } },
    });
  } else if (ev.type === "rejected") {
    banner("The server refused a change: " + ev.reasons.join("; "), { kind: "error" });
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

let runner = null;

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
  try {
    state.py = await bootPython(onPyEvent);
  } catch (err) {
    screen("Error", h("section", { class: "card" }, h("h2", {}, "OmniCare could not start"), h("p", {}, String(err.message || err)),
      h("p", { class: "muted" }, navigator.onLine ? "Reload to try again." : "You are offline and this device has not cached the app yet. Connect once to install it.")));
    return;
  }
  state.bootMs = state.py.bootMs;
  if (state.updateReady) await state.py.call("set_read_only", { reason: UPDATE_REASON });
  runner = new SyncRunner({
    py: state.py, onStatus, deviceId: () => state.deviceId, appVersion: () => state.swVersion,
    onEvent: (e) => {
      if (e.type === "revoked") state.py.call("device_revoked").catch(() => revokedScreen());
      else if (e.type === "error" && !state.updateReady) banner(e.message);
    },
  });
  state.runner = runner;
  const info = await state.py.call("boot");
  state.username = info.username;
  state.deviceId = info.deviceId;
  document.getElementById("sync-now").addEventListener("click", () => runner.kick("manual"));
  document.getElementById("lock").addEventListener("click", () => lock("manual"));
  document.getElementById("signout").addEventListener("click", signOut);
  window.addEventListener("hashchange", () => route());
  startIdleTimer();
  if (info.hasKeyring) unlockScreen();
  else signInScreen();
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
  runner?.stop();
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
  pill.querySelector(".sync-text").textContent = "Device revoked";
  screen("Device revoked", h("section", { class: "card center", id: "revoked", role: "alert" },
    h("h2", {}, "This device was revoked"),
    h("p", {}, "An administrator reported this device lost or stolen. All patient data, keys and unsynced changes have been erased from it."),
    h("p", { class: "muted" }, "If this is a mistake, contact your OmniCare administrator. They can register the device again; you will then sign in and download your patients anew."),
    h("button", { class: "btn", type: "button", onclick: () => { location.hash = "#/"; location.reload(); } }, "Back to sign-in")));
}

// ---------------------------------------------------------------- sign in / PIN
function signInScreen(message) {
  document.getElementById("usernav").hidden = true;
  const pill = document.getElementById("sync");
  pill.dataset.state = navigator.onLine ? "idle" : "offline";
  pill.querySelector(".sync-text").textContent = `${navigator.onLine ? "Online" : "Offline"} · signed out`;
  const user = input({ name: "username", autocomplete: "username", required: true, autocapitalize: "none" });
  const pass = input({ name: "password", type: "password", autocomplete: "current-password", required: true });
  const code = input({ name: "code", inputmode: "numeric", autocomplete: "one-time-code", maxlength: 8 });
  const codeField = field("Verification code", code, { name: "code", hint: "The 6-digit code from your authenticator app." });
  codeField.hidden = true; // shown when the server asks for the second factor
  const form = formScreen("Sign in", null, [
    h("p", { class: "muted" }, navigator.onLine ? "Sign in with your OmniCare account. The first sign-in on a device sets an offline PIN." : "You are offline. The first sign-in on a device needs a connection."),
    field("Username", user, { name: "username" }), field("Password", pass, { name: "password" }), codeField,
  ], {
    cancelHref: "#/",
    submit: async ({ username, password, code: totp }) => {
      if (!username || !password) throw Object.assign(new Error("Enter your username and password."), { fields: { username: username ? "" : "Required.", password: password ? "" : "Required." } });
      if (!navigator.onLine) throw new Error("You are offline. Connect to sign in.");
      const r = await net.login(username.trim(), password, codeField.hidden ? "" : (totp || "").trim());
      if (r.mfaRequired) {
        const first = codeField.hidden;
        codeField.hidden = false;
        code.focus();
        throw Object.assign(new Error(net.outcomeText(r.json, "Enter your verification code.")), { fields: first ? {} : { code: "Check the code and try again." } });
      }
      if (r.status !== 200) throw new Error(net.loginError(r));
      state.username = r.json.username;
      state.scope = r.json.scope; // trust: wide-scope roles need a passphrase unless the key is hardware-bound
      const info = await state.py.call("boot");
      if (info.hasKeyring) {
        if (info.username && info.username !== state.username) {
          const ok = await confirmDialog("Another user's data is on this device", `Signing in as ${state.username} removes ${info.username}'s offline data from this device.`, "Remove and continue", { danger: true });
          if (!ok) return;
          await state.py.call("wipe");
          return pinSetupScreen();
        }
        return unlockScreen("Signed in. Enter your offline PIN to unlock.");
      }
      pinSetupScreen();
    },
  });
  form.querySelector(".actions a").remove();
  form.querySelector("button[type=submit]").textContent = "Sign in";
  form.id = "signin";
  screen("Sign in", h("div", { class: "narrow" }, form));
  if (message) showErrors(form, { message });
  user.focus();
}

/** Session expired while unlocked: sign in again (no PIN change, local data untouched), then sync. */
function reauthScreen() {
  const pass = input({ name: "password", type: "password", autocomplete: "current-password", required: true });
  const code = input({ name: "code", inputmode: "numeric", autocomplete: "one-time-code", maxlength: 8 });
  const codeField = field("Verification code", code, { name: "code", hint: "The 6-digit code from your authenticator app." });
  codeField.hidden = true;
  const form = formScreen("Sign in to sync", null, [
    h("p", { class: "muted" }, `Signed in on this device as ${state.username}. Enter your password to resume syncing.`),
    field("Password", pass, { name: "password" }), codeField,
  ], {
    cancelHref: "#/patients",
    submit: async ({ password, code: totp }) => {
      const r = await net.login(state.username, password, codeField.hidden ? "" : (totp || "").trim());
      if (r.mfaRequired) {
        const first = codeField.hidden;
        codeField.hidden = false;
        code.focus();
        throw Object.assign(new Error(net.outcomeText(r.json, "Enter your verification code.")), { fields: first ? {} : { code: "Check the code and try again." } });
      }
      if (r.status !== 200) throw new Error(net.loginError(r));
      state.reauthShown = false;
      location.hash = "#/patients";
      runner.kick("reauth");
    },
  });
  form.id = "reauth";
  screen("Sign in", h("div", { class: "narrow" }, form));
  pass.focus();
}

function pinSetupScreen() {
  const pin = input({ name: "pin", type: "password", inputmode: "numeric", autocomplete: "new-password", required: true });
  const again = input({ name: "pin2", type: "password", inputmode: "numeric", autocomplete: "new-password", required: true });
  const form = formScreen("Set your offline PIN", null, [
    h("p", { class: "muted" }, "This PIN unlocks the encrypted patient data on this device when you are offline. It never leaves the device and cannot be recovered: if you forget it, sign in again online."),
    field("New PIN", pin, { name: "pin", hint: "At least 6 digits, or a passphrase of 8+ characters." }),
    field("Repeat PIN", again, { name: "pin2" }),
  ], {
    cancelHref: "#/",
    submit: async ({ pin: p1, pin2 }) => {
      if (p1 !== pin2) throw Object.assign(new Error("The PINs do not match."), { fields: { pin2: "Does not match the PIN above." } });
      setBusy("Protecting the device key with your PIN…");
      try {
        const prf = await webauthn.enroll(state.username); // trust: second wrapping by the authenticator, if any
        state.deviceId = (await state.py.call("setup_pin", { pin: p1, username: state.username, scope: state.scope || "care-team", prf })).deviceId;
      } finally { setBusy(null); }
      await unlocked({ first: true });
    },
  });
  form.querySelector(".actions a").remove();
  form.querySelector("button[type=submit]").textContent = "Set PIN";
  form.id = "pin-setup";
  screen("Set PIN", h("div", { class: "narrow" }, form));
  pin.focus();
}

function unlockScreen(message) {
  document.getElementById("usernav").hidden = true;
  onStatus({ locked: true });
  const pin = input({ name: "pin", type: "password", inputmode: "numeric", autocomplete: "current-password", required: true });
  const form = formScreen("Unlock", null, [
    h("p", { class: "muted" }, `${state.username ? state.username + ": e" : "E"}nter your offline PIN to open the encrypted records on this device.`),
    field("PIN", pin, { name: "pin" }),
  ], {
    cancelHref: "#/",
    submit: async ({ pin: p }) => {
      setBusy("Unlocking…");
      try {
        const prf = await webauthn.unlockSecret(state.py).catch(() => null); // trust: hardware-bound key
        await state.py.call("unlock", { pin: p, prf });
      } catch (err) {
        // The message says how long to wait / how many tries are left (pyclient.pinguard).
        if (err.kind === "wrong_pin") throw Object.assign(new Error(err.message || "That PIN is not correct."), { fields: { pin: "Wrong PIN." } });
        if (err.kind === "wiped") setTimeout(() => location.reload(), 2000); // data erased: back to sign-in
        throw err;
      } finally { setBusy(null); }
      await unlocked({ first: false });
    },
  });
  const forgot = form.querySelector(".actions a");
  forgot.textContent = "Forgot PIN";
  forgot.removeAttribute("href");
  forgot.setAttribute("role", "button");
  forgot.tabIndex = 0;
  forgot.addEventListener("click", signOut);
  form.querySelector("button[type=submit]").textContent = "Unlock";
  form.id = "unlock";
  screen("Unlock", h("div", { class: "narrow" }, form));
  if (message) form.querySelector(".form-error").textContent = message;
  pin.focus();
}

function setBusy(text) {
  document.body.classList.toggle("busy", !!text);
  document.body.setAttribute("aria-busy", text ? "true" : "false");
}

async function unlocked({ first }) {
  state.unlocked = true;
  document.getElementById("usernav").hidden = false;
  if (navigator.storage && navigator.storage.persist) {
    navigator.storage.persisted().then((p) => p || navigator.storage.persist()).then((granted) => {
      state.persistRefused = !granted;
      if (state.lastStatus) onStatus(state.lastStatus);
    }).catch(() => {});
  }
  const done = await state.py.call("first_sync_done");
  if (!done) {
    state.firstSync = true;
    progress(true, 0, null);
    screen("First sync", h("section", { class: "card center", id: "first-sync" }, h("div", { class: "spinner", "aria-hidden": "true" }),
      h("h2", {}, "Downloading your patients"), h("p", { class: "muted" }, "Records are encrypted on this device as they arrive. You can keep this tab open while it finishes.")));
    runner.active = !state.updateReady;
    runner.connectWs(); // its "ready" message gives the feed head for the progress bar
    await new Promise((r) => setTimeout(r, 300));
    await runner.kick("first", { first: true });
    state.firstSync = false;
    progress(false);
    const ok = await state.py.call("first_sync_done");
    if (!ok) banner(navigator.onLine ? "The first sync did not finish. It will retry automatically." : "You are offline: the first sync will start when the connection returns.", { kind: "warn" });
  }
  if (!state.updateReady) runner.start();
  if (!location.hash || location.hash === "#/" || location.hash === "#") location.hash = "#/patients";
  else route();
}

async function lock(reason) {
  if (!state.unlocked) return;
  state.unlocked = false;
  state.query = ""; // a search may contain a patient's name
  runner.stop();
  await state.py.call("lock");
  unlockScreen(reason === "idle" ? "Locked after inactivity. Enter your PIN to continue." : null);
}

async function signOut() {
  let pending = 0;
  try { pending = (await state.py.call("status")).pending || 0; } catch { /* locked */ }
  let outbox = 0;
  try { outbox = await idb.outboxCount(); } catch { /* no db */ }
  const unsynced = Math.max(pending, outbox);
  const ok = await confirmDialog("Sign out and remove local data?",
    unsynced ? `${unsynced} change${unsynced === 1 ? " has" : "s have"} not reached the server yet and will be LOST. Sync first if you can.` : "All patient data is removed from this device. You need a connection to sign in again.",
    unsynced ? "Discard changes and sign out" : "Sign out", { danger: !!unsynced });
  if (!ok) return;
  runner?.stop();
  state.unlocked = false;
  const told = navigator.onLine && (await net.serverSignOut());
  await state.py.call("wipe");
  state.deviceId = null; // trust: the wiped device's id is gone, so its session cookie reads nothing
  if (!told) net.markSignOutPending(); // completed against the server first thing when next online
  channel?.postMessage({ type: "signed-out" });
  location.hash = "#/";
  signInScreen();
}

// ---------------------------------------------------------------- idle lock (automatic logoff)
function startIdleTimer() {
  let last = Date.now();
  for (const ev of ["pointerdown", "keydown", "touchstart", "wheel"]) window.addEventListener(ev, () => { last = Date.now(); }, { passive: true });
  setInterval(() => {
    if (state.unlocked && Date.now() - last > idleMinutes() * 60000) lock("idle");
  }, 2000);
}

// ---------------------------------------------------------------- routing
function route() {
  if (!state.unlocked) return;
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  state.route = parts;
  if (parts[0] === "patient" && parts[1]) {
    if (parts[2]) return formRoute(parts[1], parts[2]);
    return showChart(parts[1]);
  }
  if (parts[0] === "conflicts") return showConflicts();
  if (parts[0] === "signin") return reauthScreen();
  return showPatients();
}

function refreshView(ids) {
  if (!state.unlocked || state.firstSync) return;
  const parts = state.route || [];
  if (parts[0] === "patient" && parts[2]) return; // never redraw a form being filled in
  if (document.activeElement && document.activeElement.matches("select")) return;
  if (parts[0] === "patient") showChart(parts[1], { keepScroll: true });
  else if (parts[0] === "conflicts") showConflicts();
  else showPatients({ keepFocus: true });
}

async function showPatients({ keepFocus = false } = {}) {
  const run = async (q) => {
    state.query = q;
    let r;
    try { r = await state.py.call("search", { text: q }); } catch (err) { banner(err.message); return; }
    const hadFocus = document.activeElement?.id === "q";
    const pos = document.activeElement?.selectionStart;
    screen("Patients", ...patientList({ ...r, query: q, onSearch: run }));
    if (hadFocus) { // keep typing; never autofocus on open (a tablet would pop up its keyboard)
      const i = document.getElementById("q");
      i.focus();
      if (pos != null) i.setSelectionRange(pos, pos);
    }
  };
  await run(state.query);
}

async function showChart(id, { keepScroll = false } = {}) {
  let c;
  try { c = await state.py.call("chart", { patient_id: id }); } catch (err) {
    screen("Not found", h("section", { class: "card" }, h("h2", {}, "Patient not available"), h("p", {}, err.message), h("a", { class: "btn", href: "#/patients" }, "Back to patients")));
    return;
  }
  const y = window.scrollY;
  screen(c.patient.display, h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "#/patients" }, "← Patients")),
    ...chartScreen(c, {
      onAllergy: async (aid, change) => {
        try { await state.py.call("update_allergy", { allergy_id: aid, ...change }); afterWrite(); showChart(id, { keepScroll: true }); } catch (err) { banner(err.message); }
      },
      onMed: (m, action) => { location.hash = `#/patient/${encodeURIComponent(id)}/medication-${action}/${encodeURIComponent(m.id)}`; },
    }));
  cdsPanel(state.py, id).then((panel) => { // decision support: KB version in force + guideline library
    const col = document.querySelector("#main .grid .col:last-child");
    if (panel && col && !document.getElementById("cds-panel")) col.append(panel);
  });
  if (keepScroll) window.scrollTo(0, y);
}

function afterWrite() {
  if (state.lastStatus) state.py.call("status").then(onStatus);
  if (navigator.onLine) setTimeout(() => runner.kick("write"), 300);
}

async function formRoute(pid, kind) {
  let c;
  try { c = await state.py.call("chart", { patient_id: pid }); } catch (err) { banner(err.message); return; }
  const p = c.patient;
  const back = `#/patient/${encodeURIComponent(pid)}`;
  const save = async (call, args) => {
    await state.py.call(call, args);
    afterWrite();
    location.hash = back;
  };
  const saved = () => { afterWrite(); location.hash = back; }; // orders: checked and saved by cds.js
  const num = (name, label, unit, attrs = {}) => field(`${label} (${unit})`, input({ name, type: "text", inputmode: "decimal", ...attrs }), { name });
  let form;
  const medId = state.route[3];
  if (kind === "vitals") {
    form = formScreen("Record vitals", p, [
      h("div", { class: "row2" }, num("sbp", "Systolic", "mmHg"), num("dbp", "Diastolic", "mmHg")),
      h("div", { class: "row2" }, num("hr", "Heart rate", "/min"), num("rr", "Respiratory rate", "/min")),
      h("div", { class: "row2" }, num("temp", "Temperature", "°C"), num("spo2", "SpO₂", "%")),
      num("weight", "Weight", "kg"),
    ], { cancelHref: back, submit: (v) => save("record_vitals", { patient_id: pid, values: v }) });
  } else if (kind === "allergy") {
    form = formScreen("Add allergy", p, [
      field("Substance", input({ name: "substance", placeholder: "e.g. Penicillin" }), { name: "substance" }),
      field("Reaction", input({ name: "reaction", placeholder: "e.g. Hives" }), { name: "reaction" }),
      field("Criticality", select("criticality", [["low", "Low"], ["high", "High"], ["unable-to-assess", "Unable to assess"]], "unable-to-assess"), { name: "criticality" }),
    ], { cancelHref: back, submit: (v) => save("add_allergy", { patient_id: pid, ...v }) });
  } else if (kind === "medication") {
    form = formScreen("Start medication", p, [
      field("Medication", input({ name: "name", placeholder: "e.g. Metformin 500 mg tablet" }), { name: "name" }),
      field("Dosage", input({ name: "dosage", placeholder: "e.g. 500 mg twice daily with meals" }), { name: "dosage" }),
    ], { cancelHref: back, submit: (v, f) => orderWithChecks(state.py, f, { patient_id: pid, ...v }, saved) });
  } else if (kind === "medication-stop" || kind === "medication-change") {
    const med = c.medications.find((m) => m.id === medId);
    if (!med) { location.hash = back; return; }
    form = kind === "medication-stop"
      ? formScreen(`Stop ${med.name}`, p, [field("Reason", input({ name: "reason", placeholder: "e.g. side effects" }), { name: "reason" })],
        { cancelHref: back, submit: (v) => save("stop_medication", { medication_id: medId, reason: v.reason }) })
      : formScreen(`Change ${med.name}`, p, [field("New dosage", input({ name: "dosage", value: med.dosage }), { name: "dosage" })],
        { cancelHref: back, submit: (v, f) => orderWithChecks(state.py, f, { patient_id: pid, medication_id: medId, dosage: v.dosage }, saved) });
  } else if (kind === "note") {
    form = formScreen("Write note", p, [
      field("Title", input({ name: "title", placeholder: "Progress note" }), { name: "title" }),
      field("Note", h("textarea", { name: "text", rows: 8 }), { name: "text" }),
    ], { cancelHref: back, submit: (v) => save("add_note", { patient_id: pid, ...v }) });
  } else if (kind === "demographics") {
    form = formScreen("Edit details", p, [
      field("Phone", input({ name: "phone", type: "tel", value: p.phone }), { name: "phone" }),
      field("Birth date", input({ name: "birth_date", type: "text", value: p.birthDate, placeholder: "YYYY-MM-DD" }), { name: "birth_date" }),
      field("Gender", select("gender", [["female", "Female"], ["male", "Male"], ["other", "Other"], ["unknown", "Unknown"]], p.gender), { name: "gender" }),
    ], { cancelHref: back, submit: (v) => save("update_contact", { patient_id: pid, ...v }) });
  } else {
    location.hash = back;
    return;
  }
  form.id = "form-" + kind;
  screen(form.querySelector("h2").textContent, h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: back }, "← " + p.display)), h("div", { class: "narrow wide" }, form));
  form.querySelector("input,select,textarea")?.focus();
}

async function showConflicts() {
  const list = await state.py.call("conflicts");
  screen("Conflicts", h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "#/patients" }, "← Patients")),
    ...conflictScreen(list, {
      onResolve: async (entryId, choices) => {
        await state.py.call("resolve_conflict", { entry_id: entryId, choices });
        afterWrite();
        showConflicts();
      },
    }));
}

boot();
